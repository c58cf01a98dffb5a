// Package worker is the accept-and-spawn process: a re-execution of sockhold's
// own binary, started by the holder or, on an upgrade, by the previous worker
// through tableflip. It takes connections only while the throttle admits them
// and hands each to a new handler process.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/evloop"
	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/holder/logs"
	"github.com/sockhold/sockhold/throttle"
)

// Worker is one generation's accept loop and its table of live handlers.
type Worker struct {
	cfg       *config.Config
	version   string
	log       *slog.Logger
	cmd       handoff.Command
	listeners []config.ListenerFD
	adm       throttle.Admission
	upg       *tableflip.Upgrader
	successor bool // started for an upgrade: by the old worker (tableflip) or by the holder

	gen            int  // assigned by the holder in the adopt message
	adopted        bool // no accepting before the older generations are counted
	inheritedCount int
	holder         *link.Conn // link to the holder; nil once it has gone
	holderOut      bool       // the link is watched for room to send
	reports        *link.Conn // reports to the holder, on a socket of their own
	reportsOut     bool
	held           []heldMsg // main-link messages waiting for the reports before them
	holderGoneDone bool      // serve: the copies were stopped for a dead holder
	report         report    // what the holder hears at the end of this loop turn

	poll     *evloop.Poller
	timer    *evloop.Timer
	wake     *evloop.Waker
	kinds    map[int]fdKind
	handlers handlers
	armed    bool
	// lastVerdict is the admission answer last logged: the queue is
	// logged (debug) each time the gate closes.
	lastVerdict throttle.Verdict

	rejectMessage     []byte
	spawnBackoff      *throttle.Backoff
	spawnHoldUntil    time.Time
	acceptBackoff     *throttle.Backoff
	acceptPausedUntil time.Time
	heldConn          *heldConn // accepted, its handler not yet started for lack of resources

	logConns   bool         // info level on: one line per connection
	stopSignal atomic.Value // os.Signal, set by the signal goroutine
	hupPending atomic.Bool  // a SIGHUP to pass on to the holder
	upgrade    upgradeState
	serve      *serveState // serve mode only
	stopping   bool
	exitCode   int
	counters   struct{ accepted, rejected, spawnFailures int }
}

type fdKind int

const (
	kindListener fdKind = iota + 1
	kindHandler
	kindTimer
	kindWake
	kindHolder
	kindReports
	kindNotify      // serve mode: sd_notify messages from the app
	kindApp         // serve mode: the app's pidfd
	kindServeTimer  // serve mode: readiness timer, ready deadline, restart
	kindEinhorn     // serve mode: EINHORN_SOCK_PATH listener
	kindEinhornConn // serve mode: one einhorn client
	kindDemand      // serve --on-demand: a listener watched for a first connection
)

// Main runs a worker process and returns its exit status.
func Main(version string) int {
	defer logs.Flush(time.Second) // every line logged reaches stderr before exit
	// Inherited descriptors arrive without close-on-exec; mark them all at
	// once so that no handler ever receives a listener, a pidfd or a link.
	handoff.CloseOnExecFrom(3)
	handoff.SetProcessName(os.Args[0])
	cfg, fds, err := config.WorkerFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sockhold worker:", err)
		return 2
	}
	log := logs.New(os.Stderr, cfg.LogFormat, cfg.LogLevel).With("role", "worker", "worker_pid", os.Getpid())
	// The worker's live heap is a few hundred KiB; collecting it at every
	// doubling costs CPU on the spawn path for no memory worth having.
	debug.SetGCPercent(400)
	w, err := newWorker(cfg, fds, log, version)
	if err != nil {
		log.Error("worker cannot start", "error", err)
		return 1
	}
	return w.run()
}

func newWorker(cfg *config.Config, fds *config.WorkerFDs, log *slog.Logger, version string) (*Worker, error) {
	w := &Worker{
		cfg:     cfg,
		version: version,
		log:     log,
		adm: throttle.Admission{
			Slots: throttle.NewSlots(cfg.Processes),
			Load:  throttle.LoadGate{Limit: cfg.LoadAverage, Path: cfg.LoadavgPath},
		},
		kinds:         map[int]fdKind{},
		handlers:      handlers{},
		logConns:      log.Enabled(context.Background(), slog.LevelInfo),
		spawnBackoff:  throttle.NewBackoff(10*time.Millisecond, time.Second),
		acceptBackoff: throttle.NewBackoff(10*time.Millisecond, time.Second),
		cmd:           handoff.Command{Path: cfg.CommandPath, Argv: cfg.Command, RunAs: cfg.RunAs},
	}
	if cfg.RejectMessage != "" {
		w.rejectMessage = []byte(cfg.RejectMessage)
	}
	var err error
	if w.upg, err = tableflip.New(tableflip.Options{UpgradeTimeout: cfg.UpgradeTimeout}); err != nil {
		return nil, fmt.Errorf("tableflip: %v", err)
	}
	if w.listeners, err = inheritListeners(w.upg, fds.Listeners); err != nil {
		return nil, err
	}
	w.successor = w.upg.HasParent() || os.Getenv(config.SuccessorEnv) == "1"
	if cfg.Mode != config.ModeServe {
		// Spawn mode accepts from its epoll loop: the sockets are the
		// worker's alone to accept from, and non-blocking from the start
		// (this only makes sure). Serve mode never touches their mode.
		for _, l := range w.listeners {
			if err := unix.SetNonblock(l.FD, true); err != nil {
				return nil, fmt.Errorf("listener %s: %v", l.Addr, err)
			}
		}
	}
	if fds.Proto < link.Proto {
		return nil, fmt.Errorf("this worker (link protocol %d) needs a holder that speaks it; the running holder speaks %d and cannot replace itself: restart sockhold once", link.Proto, fds.Proto)
	}
	if w.poll, err = evloop.NewPoller(); err != nil {
		return nil, err
	}
	if w.timer, err = evloop.NewTimer(); err != nil {
		return nil, err
	}
	if w.wake, err = evloop.NewWaker(); err != nil {
		return nil, err
	}
	lfd, err := link.Dial(fds.Rendezvous)
	if err != nil {
		return nil, err
	}
	if w.holder, err = link.NewConn(lfd, nil); err != nil {
		return nil, err
	}
	for fd, k := range map[int]fdKind{w.timer.FD: kindTimer, w.wake.FD: kindWake, w.holder.FD: kindHolder} {
		if err := w.watch(fd, k); err != nil {
			return nil, err
		}
	}
	if cfg.Mode == config.ModeServe {
		if err := w.setupServe(); err != nil {
			return nil, err
		}
		return w, nil
	}
	for _, l := range w.listeners {
		w.kinds[l.FD] = kindListener
	}
	return w, nil
}

func (w *Worker) watch(fd int, k fdKind) error {
	if err := w.poll.Add(fd); err != nil {
		return err
	}
	w.kinds[fd] = k
	return nil
}

// track counts a live handler and watches its pidfd for its exit; the
// holder hears of an own handler at the end of this loop turn.
func (w *Worker) track(h *handler) {
	w.handlers[h.pidfd] = h
	w.adm.Slots.Take()
	if err := w.watch(h.pidfd, kindHandler); err != nil {
		w.log.Error("cannot watch handler", "pid", h.pid, "error", err)
	}
}

func (w *Worker) handlerDone(pidfd int) {
	h := w.handlers[pidfd]
	delete(w.handlers, pidfd)
	delete(w.kinds, pidfd)
	w.poll.Del(pidfd)
	if h.reap(w.log, w.logConns) {
		w.reapedProc(h.pid)
	}
	unix.Close(pidfd)
	w.adm.Slots.Release()
}

func (w *Worker) run() int {
	sigc := make(chan os.Signal, 4)
	// SIGPIPE is caught, never ignored (that would reach every handler):
	// a log write to a stderr whose reader has gone must not end the worker.
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	go func() {
		for s := range sigc {
			if s == syscall.SIGPIPE {
				continue
			}
			if s == syscall.SIGHUP {
				// Upgrades are the holder's to start: it is told.
				w.hupPending.Store(true)
				w.wake.Wake()
				continue
			}
			w.stopSignal.Store(s)
			w.wake.Wake()
		}
	}()
	// Hello first: the holder takes this process for a worker only now,
	// by what the kernel says about it, and only then hands it any work.
	// Spawn mode: tableflip hears that this worker is ready only once the
	// holder has handed it the count of every live handler (adopt).
	rfd, err := w.openReports()
	if err != nil {
		w.log.Error("reports socket", "error", err)
		if w.serve != nil {
			w.serve.sockets.Close() // the holder never heard of them
		}
		return 1
	}
	hello := link.Msg{Type: link.Hello, Version: w.version, Proto: link.Proto}
	if w.serve != nil {
		hello.AppDir = w.serve.sockets.Dir
	}
	w.send(hello, rfd)
	unix.Close(rfd)
	if w.serve != nil {
		// Serve mode tells tableflip it is ready only once the app is.
		if w.onDemand() {
			w.startOnDemand()
		} else {
			w.startCopies()
		}
	}
	w.endTurn()
	for !w.stopping || w.copiesLeft() {
		ready, err := w.poll.Wait()
		if err != nil {
			w.log.Error("epoll", "error", err)
			return 1
		}
		for _, r := range ready {
			w.dispatch(r)
		}
		w.endTurn()
	}
	w.refuseHeld()
	w.flushReport()
	w.drainHolderQueue()
	if w.serve != nil {
		w.serve.sockets.Close()
	}
	w.log.Info("worker stopped accepting; handlers are left to the holder",
		"live", len(w.handlers), "accepted", w.counters.accepted,
		"rejected", w.counters.rejected, "spawn_failures", w.counters.spawnFailures)
	return w.exitCode
}

// endTurn decides what to watch next and tells the holder what happened.
func (w *Worker) endTurn() {
	w.rearm()
	if w.serve != nil {
		w.serveRearm()
	}
	w.flushReport()
}

// drainHolderQueue gives the holder a moment to take what is still queued
// before this worker exits (the link's end would lose it).
func (w *Worker) drainHolderQueue() {
	for deadline := time.Now().Add(time.Second); w.backlogged() && time.Now().Before(deadline); {
		w.flushLink(w.reports, &w.reportsOut, false)
		if w.holder != nil {
			w.flushLink(w.holder, &w.holderOut, true)
		}
		if w.backlogged() {
			time.Sleep(time.Millisecond)
		}
	}
}

func (w *Worker) dispatch(r evloop.Ready) {
	fd := r.FD
	switch w.kinds[fd] {
	case kindListener:
		for _, l := range w.listeners {
			if l.FD == fd {
				w.acceptFrom(l)
			}
		}
	case kindHandler:
		w.handlerDone(fd)
	case kindTimer:
		w.timer.Fired()
		w.spawnHeld()
	case kindWake:
		w.wake.Drain()
		if w.hupPending.Swap(false) && !w.stopping {
			// einhorn's restart signal: apps send it to EINHORN_MASTER_PID.
			w.log.Info("SIGHUP received; passing it on to the holder, which restarts")
			w.send(link.Msg{Type: link.Restart})
		}
		if s, ok := w.stopSignal.Load().(os.Signal); ok && !w.stopping {
			w.log.Info("worker stopping", "signal", s.String())
			if w.serve != nil {
				// The holder enforces --drain-timeout on them. This worker
				// stays until they have gone: the holder is told, so that
				// (unless it is stopping itself) another takes over now.
				w.send(link.Msg{Type: link.Drain, Drain: w.stopAll(), DrainMS: w.serve.cfg.DrainTimeout.Milliseconds()})
				w.send(link.Msg{Type: link.Leaving})
			}
			w.stopping = true
		}
		w.upgradeFinished()
	case kindReports:
		if w.holder == nil || r.HangUp {
			w.poll.Del(fd)
			delete(w.kinds, fd)
		} else if r.Writable {
			w.flushLink(w.reports, &w.reportsOut, false)
		}
	case kindHolder:
		if r.Writable && w.holder != nil {
			w.flushLink(w.holder, &w.holderOut, true)
		}
		if r.Readable {
			w.fromHolder()
		}
	case kindNotify:
		w.fromNotify()
	case kindApp:
		w.appExited(fd)
	case kindServeTimer:
		w.serveTimer()
	case kindEinhorn:
		w.fromEinhorn()
	case kindEinhornConn:
		w.einhornInput(fd)
	case kindDemand:
		w.demandArrived(fd)
	}
}

// rearm decides, after every batch of events, whether the listeners are
// watched and whether the timer must wake the loop later. A listener that is
// not watched is not accepted from: its connections wait in the kernel queue.
func (w *Worker) rearm() {
	now := time.Now()
	verdict, load := w.adm.Check()
	paused := now.Before(w.acceptPausedUntil)
	want := w.serve == nil && w.adopted && !w.stopping && !paused && w.upgrade.takesWork() && !w.backlogged() &&
		(w.cfg.WhenFull == config.WhenFullReject || verdict == throttle.Admit)
	if want != w.armed {
		for _, l := range w.listeners {
			if want {
				if err := w.poll.Add(l.FD); err != nil {
					w.log.Error("watch listener", "listener", l.Addr, "error", err)
				}
			} else {
				w.poll.Del(l.FD)
			}
		}
		w.armed = want
	}
	if w.adopted && !w.stopping && verdict != w.lastVerdict {
		w.lastVerdict = verdict
		if verdict != throttle.Admit {
			w.logQueue(verdict.String())
		}
	}
	switch {
	case w.stopping:
		w.timer.Disarm()
	case paused:
		w.timer.Arm(w.acceptPausedUntil.Sub(now))
	case verdict == throttle.Overloaded && w.cfg.WhenFull == config.WhenFullQueue:
		// The load average changes without any event here: look again
		// on a timer so the queue never stalls while load is low.
		w.log.Debug("load gate closed", "load", load, "limit", w.cfg.LoadAverage, "live", w.adm.Slots.Used())
		w.timer.Arm(w.cfg.LoadRecheck)
	default:
		w.timer.Disarm()
	}
}

// handlerEnv is the environment every handler of this generation starts
// from: sockhold's own, without its internal variables, plus
// SOCKHOLD_VERSION and SOCKHOLD_GENERATION.
func (w *Worker) handlerEnv() []string {
	drop := append(append([]string{"SOCKHOLD_VERSION", "SOCKHOLD_GENERATION"}, handoff.ConnVars...), config.InternalEnv...)
	if w.cfg.RunAs != nil {
		drop = append(drop, handoff.IdentityVars...)
	}
	env := handoff.FilterEnv(os.Environ(), drop, config.InternalEnvPrefixes)
	if w.cfg.RunAs != nil {
		env = append(env, w.cfg.RunAs.Env...)
	}
	env = w.cfg.ChildEnv.Apply(env)
	return append(env, "SOCKHOLD_VERSION="+w.version, "SOCKHOLD_GENERATION="+strconv.Itoa(w.gen))
}
