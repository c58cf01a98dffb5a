package holder

import (
	"syscall"
	"time"

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
// worker stops accepting and exits, then the handlers are treated as
// --on-stop says.
func (h *Holder) stop(sig syscall.Signal) {
	if h.stopping {
		if h.worker == nil && h.phase < phaseKill {
			h.log.Warn("repeated stop signal: hurrying", "signal", sig.String())
			h.enterPhase(h.phase + 1)
		}
		return
	}
	h.stopping = true
	h.log.Info("stopping", "signal", sig.String(), "on_stop", h.cfg.OnStop)
	if h.worker == nil {
		h.drain()
		return
	}
	syscall.Kill(h.worker.pid, syscall.SIGTERM)
	// A worker that does not stop within the grace is killed; its handlers
	// are then orphaned to the holder like any others.
	gen := h.worker.gen
	time.AfterFunc(h.cfg.KillGrace, func() { h.events <- event{kind: evKillWorker, gen: gen} })
}

// drain applies --on-stop once no worker is left.
func (h *Holder) drain() {
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
			h.after(h.cfg.StopTimeout, phaseTerm)
		}
		h.log.Info("waiting for handlers to finish", "live", len(childPIDs()), "timeout", h.cfg.StopTimeout.String())
	case phaseTerm:
		n := h.signalChildren(syscall.SIGTERM)
		if n > 0 {
			h.log.Warn("sent SIGTERM to handlers", "count", n)
		}
		h.after(h.cfg.KillGrace, phaseKill)
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

func (h *Holder) after(d time.Duration, p stopPhase) {
	time.AfterFunc(d, func() { h.events <- event{kind: evStopTimer, phase: p} })
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
	if h.phase == phaseNone || h.worker != nil {
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
	h.log.Info("stopped")
	h.done = true
}
