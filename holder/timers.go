package holder

import (
	"time"

	"github.com/sockhold/sockhold/holder/core"
)

// Timers: the core's, and the shell's own deadlines (control clients, the
// check process, a paused rendezvous), share one timerfd set to the
// earliest.

func (h *Holder) arm(k core.Timer, after time.Duration) {
	h.timers[k] = time.Now().Add(after)
}

// next is when something is due next (zero: nothing).
func (h *Holder) next() time.Time {
	var due time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (due.IsZero() || t.Before(due)) {
			due = t
		}
	}
	for _, t := range h.timers {
		earliest(t)
	}
	if h.control != nil {
		for _, c := range h.control.conns {
			earliest(c.deadline)
		}
	}
	if h.check != nil {
		earliest(h.check.deadline)
	}
	earliest(h.rendezvousOff)
	earliest(h.reportsDue)
	earliest(h.watchRetryAt)
	earliest(h.refusals.due())
	for _, w := range h.workers {
		earliest(w.linkDownAt)
	}
	if h.control != nil {
		earliest(h.control.off)
	}
	return due
}

// armTimer sets the timerfd to the earliest deadline, only when that has
// changed: most loop turns change none.
func (h *Holder) armTimer() {
	due := h.next()
	if due.Equal(h.timerAt) {
		return
	}
	h.timerAt = due
	if due.IsZero() {
		h.timer.Disarm()
		return
	}
	h.timer.Set(time.Until(due))
}

// timersDue runs everything due now, the core's timers in the order they
// were due.
func (h *Holder) timersDue() {
	h.timerAt = time.Time{}
	now := time.Now()
	for {
		var key core.Timer
		var at time.Time
		found := false
		for k, t := range h.timers {
			if !t.After(now) && (!found || t.Before(at) || (t.Equal(at) && k.Seq < key.Seq)) {
				key, at, found = k, t, true
			}
		}
		if !found {
			break
		}
		delete(h.timers, key)
		h.feed(core.TimerFired{Key: key})
	}
	if h.control != nil {
		h.controlDeadlines(now)
	}
	if h.check != nil && !h.check.deadline.IsZero() && !h.check.deadline.After(now) {
		h.checkTimedOut()
	}
	h.linkDeadlines(now)
	if !h.reportsDue.IsZero() && !h.reportsDue.After(now) {
		h.reportsDeadline()
	}
	if !h.rendezvousOff.IsZero() && !h.rendezvousOff.After(now) {
		h.resumeRendezvous()
	}
	h.refusals.deadline(h.log, now)
}
