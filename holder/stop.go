package holder

import (
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/holder/config"
)

// stopPhase is how far a stop has gone; a second stop signal, or a timer,
// moves it on.
type stopPhase int

const (
	phaseNone  stopPhase = iota
	phaseWait            // handlers finish on their own, up to --stop-timeout
	phaseTerm            // handlers got SIGTERM; SIGKILL after --kill-grace
	phaseKill            // handlers got SIGKILL
	phaseLeave           // handlers are left running
)

// stop begins (or, on a repeated signal, hurries) an orderly stop: the
// workers stop accepting and exit, then the handlers are treated as
// --on-stop says.
func (h *Holder) stop(sig syscall.Signal) {
	if h.stopping {
		if len(h.workers) == 0 && h.phase < phaseKill {
			h.log.Warn("repeated stop signal: hurrying", "signal", sig.String())
			h.enterPhase(h.phase + 1)
		}
		return
	}
	h.stopping = true
	h.notify.stopping()
	h.log.Info("stopping", "signal", sig.String(), "on_stop", h.cfg.OnStop)
	if h.upgrade != nil {
		h.finishUpgrade(false, "sockhold is stopping")
	}
	for pid := range h.workers {
		syscall.Kill(pid, syscall.SIGTERM)
		// A worker that does not stop within the grace is killed; its
		// handlers are then orphaned to the holder like any others.
		h.after(h.cfg.KillGrace, event{kind: evKillWorker, pid: pid})
	}
	h.drainIfNoWorkers()
}

// drainIfNoWorkers applies --on-stop once every worker has gone.
func (h *Holder) drainIfNoWorkers() {
	if !h.stopping || len(h.workers) > 0 || h.phase != phaseNone {
		return
	}
	h.adoptOrphans(h.gen)
	switch h.cfg.OnStop {
	case config.OnStopLeave:
		h.enterPhase(phaseLeave)
	case config.OnStopTerm:
		h.enterPhase(phaseTerm)
	default:
		h.enterPhase(phaseWait)
	}
}

func (h *Holder) enterPhase(p stopPhase) {
	h.phase = p
	switch p {
	case phaseWait:
		if h.cfg.StopTimeout > 0 {
			h.after(h.cfg.StopTimeout, event{kind: evStopTimer, phase: h.afterWait()})
		}
		h.log.Info("waiting for handlers to finish", "live", len(childPIDs()), "timeout", h.cfg.StopTimeout.String())
	case phaseTerm:
		if n := h.signalChildren(syscall.SIGTERM); n > 0 {
			h.log.Warn("sent SIGTERM to handlers", "count", n)
		}
		h.after(h.cfg.KillGrace, event{kind: evStopTimer, phase: phaseKill})
	case phaseKill:
		if n := h.signalChildren(syscall.SIGKILL); n > 0 {
			h.log.Warn("sent SIGKILL to handlers", "count", n)
		}
	case phaseLeave:
		if n := len(childPIDs()); n > 0 {
			h.log.Warn("leaving handlers running", "count", n)
		}
		h.finish()
		return
	}
	h.finishIfEmpty()
}

// signalChildren signals every remaining child of the holder, handlers and
// anything they left behind alike.
func (h *Holder) signalChildren(sig syscall.Signal) int {
	n := 0
	for _, pid := range childPIDs() {
		if syscall.Kill(pid, sig) == nil {
			n++
		}
	}
	return n
}

// finishIfEmpty ends the stop once the holder has no children left.
func (h *Holder) finishIfEmpty() {
	if h.phase == phaseNone || len(h.workers) > 0 {
		return
	}
	if len(childPIDs()) == 0 {
		h.finish()
	}
}

func (h *Holder) finish() {
	if h.done {
		return
	}
	h.closeSockets()
	h.closeControl()
	if h.rendezvous >= 0 {
		unix.Shutdown(h.rendezvous, unix.SHUT_RDWR)
		unix.Close(h.rendezvous)
		h.rendezvous = -1
	}
	for _, o := range h.orphans {
		unix.Close(o.pidfd)
	}
	h.log.Info("stopped")
	h.done = true
}
