// Package holder is sockhold's long-lived parent process. It opens the
// listening sockets once and keeps them open until sockhold stops, becomes
// child subreaper, and runs the worker (a re-execution of its own binary)
// that accepts and spawns. It replaces the worker on request (upgrade) or
// when it dies, reaps the handlers a worker leaves behind and hands their
// pidfds to the next worker, which counts them against --processes. Clients
// meanwhile wait in the listen backlog; nobody is refused.
package holder

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/throttle"
)

// Holder is the state of the long-lived parent. All of it is owned by the
// goroutine running Run; other goroutines only send events.
type Holder struct {
	cfg     *config.Config
	log     *slog.Logger
	exe     string
	version string
	sockets []*listen.Socket
	started time.Time

	rendezvous     int    // workers dial this
	rendezvousName string // abstract socket name given to workers
	control        *controlServer
	notify         *notifier

	gen     int
	current *workerProc         // the serving (or starting) worker
	workers map[int]*workerProc // every worker process alive, by PID
	orphans map[int]*orphan     // handlers whose worker has gone

	restartBackoff *throttle.Backoff
	restartPending bool

	upgrade       *upgradeRun // nil when none is in progress
	upgradeQueued bool        // a SIGHUP arrived during an upgrade
	upgradeSeq    int         // numbers upgrades, so a stale timeout is ignored
	statusWaiters []*controlRequest
	statusSeq     int // numbers status asks, likewise
	totals        totals

	events     chan event
	stopping   bool
	phase      stopPhase
	done       bool
	exitStatus int // serve mode: reflects how the app ended on stop
}

// orphan is a handler whose worker has gone; the holder is now its parent.
type orphan struct {
	pid   int
	pidfd int
	gen   int
	start time.Time
}

// totals are counters of workers that have ended.
type totals struct {
	accepted, rejected, spawnFailures int
	upgradesOK, upgradesFailed        int
}

type eventKind int

const (
	evLinkUp eventKind = iota + 1
	evLinkMsg
	evLinkDown
	evRestart
	evStopTimer
	evKillWorker
	evUpgradeTimeout
	evControl
	evStatusTimeout
	evServeDeadline
	evDrainKill
)

type event struct {
	kind  eventKind
	pid   int
	fd    int
	uid   int
	msg   linkMsg
	phase stopPhase
	ctl   *controlRequest
	seq   int
}

// New prepares a holder for already opened sockets; exe is the absolute
// path of sockhold's binary, re-executed for every worker.
func New(cfg *config.Config, log *slog.Logger, exe, version string, sockets []*listen.Socket) *Holder {
	return &Holder{
		cfg:            cfg,
		log:            log,
		exe:            exe,
		version:        version,
		sockets:        sockets,
		started:        time.Now(),
		workers:        map[int]*workerProc{},
		orphans:        map[int]*orphan{},
		restartBackoff: throttle.NewBackoff(50*time.Millisecond, 30*time.Second),
		events:         make(chan event, 64),
		rendezvous:     -1,
	}
}

// Run serves until stopped and returns the exit status.
func (h *Holder) Run() int {
	if err := becomeSubreaper(); err != nil {
		h.log.Error("cannot become child subreaper", "error", err)
		return 1
	}
	if err := h.openRendezvous(); err != nil {
		h.log.Error("cannot open the worker rendezvous", "error", err)
		return 1
	}
	sigc := make(chan os.Signal, 32)
	signal.Notify(sigc, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if h.cfg.Serve != nil {
		for _, s := range h.cfg.Serve.Forward {
			signal.Notify(sigc, syscall.Signal(s))
		}
	}
	defer signal.Stop(sigc)
	h.notify = newNotifier(h.log)
	h.log.Info("holder started", "pid", os.Getpid(), "binary", h.exe, "version", h.version, "control", h.control.path)
	h.spawnWorker()
	for !h.done {
		select {
		case s := <-sigc:
			h.onSignal(s.(syscall.Signal))
		case ev := <-h.events:
			h.onEvent(ev)
		}
	}
	return h.exitStatus
}

func (h *Holder) onSignal(s syscall.Signal) {
	switch s {
	case syscall.SIGCHLD:
		for _, r := range reapAll() {
			h.childExited(r)
		}
		h.drainIfNoWorkers()
		h.finishIfEmpty()
	case syscall.SIGTERM, syscall.SIGINT:
		h.stop(s)
	case syscall.SIGHUP:
		h.requestUpgrade(nil)
	default:
		// --forward-signals: to the current copy, through its worker.
		if c := h.current; c != nil && c.link >= 0 {
			link.Send(c.link, link.Msg{Type: link.Signal, Signo: int(s)})
		}
	}
}

func (h *Holder) onEvent(ev event) {
	switch ev.kind {
	case evLinkUp:
		h.linkUp(ev.pid, ev.uid, ev.fd)
	case evLinkMsg:
		h.linkMessage(ev.pid, ev.msg)
	case evLinkDown:
		h.linkDown(ev.pid, ev.fd)
	case evRestart:
		h.restartPending = false
		if !h.stopping && h.current == nil {
			h.spawnWorker()
		}
	case evKillWorker:
		// Only a worker that is still the holder's own child: a PID the
		// holder has not reaped cannot have been reused.
		if w := h.workers[ev.pid]; w != nil && parentOf(ev.pid) == os.Getpid() {
			h.log.Warn("worker did not exit in time; killing it", "pid", ev.pid)
			syscall.Kill(ev.pid, syscall.SIGKILL)
		}
	case evUpgradeTimeout:
		if h.upgrade != nil && h.upgrade.seq == ev.seq {
			h.finishUpgrade(false, "no answer from the worker within --upgrade-timeout")
		}
	case evControl:
		h.onControl(ev.ctl)
	case evStatusTimeout:
		if ev.seq == h.statusSeq {
			h.answerStatus(nil)
		}
	case evServeDeadline:
		// A worker that never dialled in is killed; its exit starts
		// another. (One that did is trusted with its own app's timing.)
		if w := h.workers[ev.pid]; w != nil && w == h.current && !w.helloed {
			h.log.Warn("worker did not report in time; killing it", "pid", ev.pid)
			syscall.Kill(ev.pid, syscall.SIGKILL)
		}
	case evDrainKill:
		h.drainDeadline(ev.fd, ev.pid)
	case evStopTimer:
		if h.stopping && h.phase < ev.phase {
			h.enterPhase(ev.phase)
		}
	}
}

// after delivers ev to the loop once d has passed.
func (h *Holder) after(d time.Duration, ev event) {
	time.AfterFunc(d, func() { h.events <- ev })
}

// closeSockets closes every listener (removing unix socket files sockhold
// created). Called once, when sockhold stops.
func (h *Holder) closeSockets() {
	for _, s := range h.sockets {
		s.Close()
	}
	h.sockets = nil
}
