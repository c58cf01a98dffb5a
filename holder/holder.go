// Package holder is sockhold's long-lived parent process. It opens the
// listening sockets once and keeps them open until sockhold stops, becomes
// child subreaper, and runs the worker (a re-execution of its own binary)
// that accepts and spawns. When a worker dies the holder reaps the handlers
// it leaves behind and starts a new worker; clients meanwhile wait in the
// listen backlog, and nobody is refused.
package holder

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/throttle"
)

// Holder is the state of the long-lived parent. All of it is owned by the
// goroutine running loop; other goroutines only send events.
type Holder struct {
	cfg     *config.Config
	log     *slog.Logger
	exe     string
	sockets []*listen.Socket

	gen            int
	worker         *workerProc
	orphans        map[int]*orphan
	restartBackoff *throttle.Backoff
	restartPending bool

	events   chan event
	stopping bool
	phase    stopPhase
	done     bool
}

// orphan is a handler whose worker has gone; the holder is now its parent.
type orphan struct {
	pid   int
	pidfd int
	start time.Time
}

type eventKind int

const (
	evWorkerMsg eventKind = iota + 1
	evRestart
	evStopTimer
	evKillWorker
)

type event struct {
	kind  eventKind
	gen   int
	msg   string
	phase stopPhase
}

// New prepares a holder for already opened sockets; exe is the absolute
// path of sockhold's binary, re-executed for every worker.
func New(cfg *config.Config, log *slog.Logger, exe string, sockets []*listen.Socket) *Holder {
	return &Holder{
		cfg:            cfg,
		log:            log,
		exe:            exe,
		sockets:        sockets,
		orphans:        map[int]*orphan{},
		restartBackoff: throttle.NewBackoff(50*time.Millisecond, 30*time.Second),
		events:         make(chan event, 16),
	}
}

// Run serves until stopped and returns the exit status.
func (h *Holder) Run() int {
	if err := becomeSubreaper(); err != nil {
		h.log.Error("cannot become child subreaper", "error", err)
		return 1
	}
	sigc := make(chan os.Signal, 32)
	signal.Notify(sigc, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigc)
	h.log.Info("holder started", "pid", os.Getpid(), "binary", h.exe)
	h.spawnWorker()
	for !h.done {
		select {
		case s := <-sigc:
			h.onSignal(s.(syscall.Signal))
		case ev := <-h.events:
			h.onEvent(ev)
		}
	}
	return 0
}

func (h *Holder) onSignal(s syscall.Signal) {
	switch s {
	case syscall.SIGCHLD:
		for _, r := range reapAll() {
			h.childExited(r)
		}
		if h.stopping && h.worker == nil {
			h.finishIfEmpty()
		}
	case syscall.SIGTERM, syscall.SIGINT:
		h.stop(s)
	case syscall.SIGHUP:
		h.log.Warn("SIGHUP ignored: this version cannot upgrade in place", "pid", os.Getpid())
	}
}

func (h *Holder) onEvent(ev event) {
	switch ev.kind {
	case evWorkerMsg:
		if h.worker != nil && ev.gen == h.worker.gen && ev.msg == "ready" {
			h.log.Info("serving", "gen", ev.gen, "worker", h.worker.pid)
		}
	case evRestart:
		h.restartPending = false
		if !h.stopping && h.worker == nil {
			h.spawnWorker()
		}
	case evKillWorker:
		if h.worker != nil && h.worker.gen == ev.gen {
			h.log.Warn("worker did not stop in time; killing it", "pid", h.worker.pid)
			syscall.Kill(h.worker.pid, syscall.SIGKILL)
		}
	case evStopTimer:
		if h.stopping && h.phase < ev.phase {
			h.enterPhase(ev.phase)
		}
	}
}

// spawnWorker starts a worker or, if that fails, schedules another try.
func (h *Holder) spawnWorker() {
	w, err := h.startWorker()
	if err != nil {
		h.log.Error("cannot start worker", "binary", h.exe, "error", err)
		h.scheduleRestart()
		return
	}
	h.worker = w
	h.log.Info("worker started", "gen", w.gen, "pid", w.pid, "inherited_handlers", len(h.orphans))
}

func (h *Holder) scheduleRestart() {
	if h.restartPending || h.stopping {
		return
	}
	d := h.restartBackoff.Fail()
	h.restartPending = true
	time.AfterFunc(d, func() { h.events <- event{kind: evRestart} })
	h.log.Info("worker restart scheduled", "in", d.String())
}

// childExited handles one reaped child: the worker, or a handler it left.
func (h *Holder) childExited(r reaped) {
	if h.worker != nil && r.pid == h.worker.pid {
		w := h.worker
		h.worker = nil
		w.control.Close()
		h.adoptOrphans()
		if h.stopping {
			h.log.Info("worker stopped", "pid", r.pid, "handlers_left", len(h.orphans))
			h.drain()
			return
		}
		lived := time.Since(w.started)
		if lived > 10*time.Second {
			h.restartBackoff.Reset()
		}
		h.log.Warn("worker exited unexpectedly; starting another",
			append([]any{"pid", r.pid, "lived", lived.Round(time.Millisecond).String(), "handlers_left", len(h.orphans)}, waitAttrs(r.status)...)...)
		h.scheduleRestart()
		return
	}
	attrs := append([]any{"pid", r.pid}, waitAttrs(r.status)...)
	if o, ok := h.orphans[r.pid]; ok {
		delete(h.orphans, r.pid)
		unix.Close(o.pidfd)
		if !o.start.IsZero() {
			attrs = append(attrs, "duration", time.Since(o.start).Round(time.Millisecond).String())
		}
	}
	h.log.Info("EXIT", append(attrs, "reaped_by", "holder")...)
}

// adoptOrphans records every child of the holder other than a worker: the
// handlers a dead worker left behind. A pidfd taken while the child is still
// unreaped cannot refer to a reused PID.
func (h *Holder) adoptOrphans() {
	for _, pid := range childPIDs() {
		if _, known := h.orphans[pid]; known || (h.worker != nil && pid == h.worker.pid) {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // already gone: the next reap collects it
		}
		start, _ := processStart(pid)
		h.orphans[pid] = &orphan{pid: pid, pidfd: fd, start: start}
	}
}

func waitAttrs(ws syscall.WaitStatus) []any {
	switch {
	case ws.Exited():
		return []any{"status", ws.ExitStatus()}
	case ws.Signaled():
		return []any{"signal", unix.SignalName(ws.Signal())}
	}
	return []any{"wait_status", int(ws)}
}

// closeSockets closes every listener (removing unix socket files sockhold
// created). Called once, when sockhold stops.
func (h *Holder) closeSockets() {
	for _, s := range h.sockets {
		s.Close()
	}
	h.sockets = nil
}
