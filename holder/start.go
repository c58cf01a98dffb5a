package holder

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/core"
	"github.com/sockhold/sockhold/holder/evloop"
	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/holder/logs"
)

// holderGCPercent keeps the holder's heap, and so its resident memory,
// close to what is live.
const holderGCPercent = 20

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailure = 1 // the machine said no: port in use, permission denied
	ExitUsage   = 2 // the command line is wrong: bad flag, bad URI, no such command
)

// Spawn runs sockhold in spawn mode (the burst dampener) until it is stopped
// and returns the process exit status.
func Spawn(o config.Spawn, version string) int {
	return run(version, func(inherited []listen.Spec) (*config.Config, error) {
		return config.FromSpawn(o, inherited)
	})
}

// Serve runs sockhold in serve mode (a long-running app given the
// listening sockets) until it is stopped and returns the exit status.
func Serve(o config.Serve, version string) int {
	return run(version, func(inherited []listen.Spec) (*config.Config, error) {
		return config.FromServe(o, inherited)
	})
}

func run(version string, configure func([]listen.Spec) (*config.Config, error)) int {
	defer logs.Flush(time.Second) // every line logged reaches stderr before exit
	handoff.CloseOnExecFrom(3)
	inh, err := listen.InheritFromEnv()
	if err != nil {
		return fail(ExitUsage, err)
	}
	cfg, err := configure(inh.Specs())
	if err != nil {
		return fail(ExitUsage, err)
	}
	log := logs.New(os.Stderr, cfg.LogFormat, cfg.LogLevel).With("role", "holder")
	exe, err := selfPath()
	if err != nil {
		return fail(ExitFailure, fmt.Errorf("cannot find sockhold's own binary: %v", err))
	}
	if err := checkKernel(realKernel); err != nil {
		return fail(ExitFailure, err)
	}
	socks, warnings, err := listen.OpenAll(cfg.Listen, listen.Options{Backlog: cfg.Backlog}, inh)
	if err != nil {
		return fail(ExitFailure, err)
	}
	if cfg.Serve != nil {
		// The app's sockets get their mode here, once, before anything
		// runs: O_NONBLOCK belongs to the open file description every
		// generation shares, so changing it later would change it under
		// a copy that is still serving (nginx, which expects non-blocking
		// sockets, would block in accept4).
		for _, s := range socks {
			if err := unix.SetNonblock(s.FD, cfg.Serve.NonBlocking); err != nil {
				for _, s := range socks {
					s.Close()
				}
				return fail(ExitFailure, fmt.Errorf("listen %s: %v", s.Spec.URI, err))
			}
		}
	}
	h, err := newHolder(cfg, log, exe, version, core.NewState())
	if err == nil {
		h.sockets = socks
		err = h.openControl()
	}
	if err == nil {
		h.rendezvous, h.rendezvousName, err = link.Listen()
	}
	if err == nil {
		err = becomeSubreaper()
	}
	if err != nil {
		for _, s := range socks {
			s.Close()
		}
		if h != nil {
			h.closeControl()
		}
		return fail(ExitFailure, err)
	}
	for _, fd := range inh.CloseUnused() {
		log.Warn("closed an inherited socket no --listen asked for", "fd", fd)
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	for _, s := range socks {
		log.Info("listening", "addr", s.Addr, "name", s.Spec.Name, "inherited", s.Inherited)
	}
	h.started = time.Now()
	h.notify = newNotifier("", log)
	h.sigs = newSignalQueue(nil, holderSignals(cfg.ServeForward()), h.wake)
	if err := h.watchAll(); err != nil {
		return fail(ExitFailure, err)
	}
	log.Info("holder started", "pid", os.Getpid(), "binary", exe, "version", version, "control", h.control.path)
	h.shedStartup()
	return h.run(core.Started{}, nil)
}

// newHolder makes the loop's pieces, for a holder starting or resuming.
func newHolder(cfg *config.Config, log *slog.Logger, exe, version string, st core.State) (*Holder, error) {
	// The holder's live heap is a few hundred KiB; the default GC target
	// (and its 4 MiB floor) would let it grow ten times that between
	// collections, and resident memory with it.
	debug.SetGCPercent(holderGCPercent)
	// One goroutine does all the holder's work: one processor is enough,
	// and each one costs memory of its own (caches, GC workers).
	runtime.GOMAXPROCS(1)
	h := &Holder{
		cfg: cfg, log: log, exe: exe, version: version,
		roles: map[int]fdRole{}, workers: map[int]*workerHandle{}, pending: map[int]link.Peer{},
		procs: map[int]*procHandle{}, byPID: map[int][]int{}, relays: map[int]*relay{},
		timers: map[core.Timer]time.Time{}, rendezvous: -1, lastGood: -1, recvBuf: link.NewRecvBuffer(),
	}
	h.core = core.New(settingsOf(cfg), st, log)
	var err error
	if h.poll, err = evloop.NewPoller(); err != nil {
		return nil, err
	}
	if h.timer, err = evloop.NewTimer(); err != nil {
		return nil, err
	}
	if h.wake, err = evloop.NewWaker(); err != nil {
		return nil, err
	}
	// The binary this holder runs is the one crashed workers restart from
	// until a worker serves from another.
	if h.lastGood, err = unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("cannot open sockhold's own binary: %v", err)
	}
	if h.selfExe, err = fileIDOf(h.lastGood); err != nil {
		return nil, err
	}
	return h, nil
}

func settingsOf(cfg *config.Config) core.Settings {
	s := core.Settings{
		OnStop: cfg.OnStop, StopTimeout: cfg.StopTimeout, KillGrace: cfg.KillGrace,
		UpgradeTimeout: cfg.UpgradeTimeout, RestartMin: 50 * time.Millisecond, RestartMax: 30 * time.Second,
	}
	if sv := cfg.Serve; sv != nil {
		s.Serve, s.DrainTimeout, s.StopSignal = true, sv.DrainTimeout, syscall.Signal(sv.StopSignal)
		s.SuccessCodes, s.SuccessSigs = sv.SuccessCodes, sv.SuccessSigs
	}
	s.HolderSpawnsSuccessors = !peerPidfdWorks()
	return s
}

// watchAll puts the holder's own descriptors in the loop. Every one is
// tried; one the kernel refuses is offered again later (watch), and the
// first refusal is returned: a starting holder gives up, a resuming one,
// which holds every socket, goes on.
func (h *Holder) watchAll() error {
	var first error
	for _, w := range []struct {
		fd   int
		kind fdKind
	}{{h.rendezvous, fdRendezvous}, {h.control.sock.FD, fdControl}, {h.timer.FD, fdTimer}, {h.wake.FD, fdWake}} {
		if err := h.watch(w.fd, w.kind, 0); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// fail prints err as the one line a user sees and returns status.
func fail(status int, err error) int {
	msg := strings.TrimPrefix(err.Error(), config.ErrUsage.Error()+": ")
	fmt.Fprintln(os.Stderr, "sockhold: "+msg)
	if errors.Is(err, config.ErrUsage) {
		return ExitUsage
	}
	return status
}

// selfPath is the absolute path sockhold was started as. Symbolic links are
// kept, not resolved: a deploy that points the link at a new build is what
// the next upgrade runs.
func selfPath() (string, error) {
	arg0 := os.Args[0]
	if !strings.Contains(arg0, "/") {
		if p, err := exec.LookPath(arg0); err == nil {
			arg0 = p
		} else {
			return os.Executable()
		}
	}
	return filepath.Abs(arg0)
}
