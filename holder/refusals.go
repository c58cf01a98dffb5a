package holder

import (
	"log/slog"
	"time"
)

// refusalLog keeps refused rendezvous callers from flooding the log: any
// local user can connect to the abstract socket in a loop. The first
// refusal is logged; the rest are counted and summed up once per interval
// while they last.
type refusalLog struct {
	last    time.Time
	count   int
	lastPID int
	lastWhy string
}

const refusalInterval = 10 * time.Second

func (r *refusalLog) note(log *slog.Logger, pid int, why string) {
	now := time.Now()
	r.count++
	r.lastPID, r.lastWhy = pid, why
	if now.Sub(r.last) < refusalInterval {
		return
	}
	r.flush(log)
	r.last = now
}

// due is when the refusals counted since the last line are summed up
// (zero: none are).
func (r *refusalLog) due() time.Time {
	if r.count == 0 {
		return time.Time{}
	}
	return r.last.Add(refusalInterval)
}

// deadline sums up, when due, the refusals a burst left uncounted in the
// log: the line comes even if no refusal follows.
func (r *refusalLog) deadline(log *slog.Logger, now time.Time) {
	if d := r.due(); !d.IsZero() && !d.After(now) {
		r.flush(log)
		r.last = now
	}
}

func (r *refusalLog) flush(log *slog.Logger) {
	if r.count == 0 {
		return
	}
	log.Warn("refused connections to the worker rendezvous", "count", r.count, "last_pid", r.lastPID, "reason", r.lastWhy,
		"interval", refusalInterval.String())
	r.count = 0
}
