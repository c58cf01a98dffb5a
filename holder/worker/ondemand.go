package worker

import (
	"github.com/sockhold/sockhold/holder/link"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
)

// On-demand serving (serve --on-demand): no copy runs until a connection
// waits on a listener; that connection stays in the backlog and is served
// by the app. The app is stopped once nothing has happened for --idle-stop:
// no connection open on the listeners' addresses (long-lived ones count,
// accepted ones too) and nothing queued.

// onDemand holds the on-demand part of a serve-mode worker.
type onDemand struct {
	watching      bool      // listeners watched for a first connection
	lastActive    time.Time // last time activity was seen
	nextCheck     time.Time
	startFailures int           // consecutive failed starts
	notBefore     time.Time     // after repeated failures, no new attempt before this
	arrivals      *arrivalWatch // connections arriving while the app runs
	confirming    bool          // idle long enough once; stop if the next look agrees
}

// idleConfirm is how long after the idle deadline the worker looks once
// more before stopping the app: an arrival signalled just before the
// deadline has then surely been delivered.
const idleConfirm = 100 * time.Millisecond

// maxStartFailures is how many failed starts make sockhold answer the
// waiting connections (reject message, close) instead of letting them hang.
const maxStartFailures = 3

func (w *Worker) onDemand() bool { return w.serve != nil && w.serve.cfg.OnDemand }

// startOnDemand is how an on-demand worker begins: with the app running if
// the generation it replaces had it running (a restart), idle otherwise.
func (w *Worker) startOnDemand() {
	fds := make([]int, len(w.listeners))
	for i, l := range w.listeners {
		fds[i] = l.FD
	}
	w.serve.demand.arrivals = newArrivalWatch(fds)
	if w.upgrading() && os.Getenv(config.RunningEnv) == "1" {
		// Idle time starts again with the new generation.
		w.startArrivalWatch()
		w.startCopies()
		return
	}
	w.serve.readySignalled = true
	if err := w.upg.Ready(); err != nil {
		w.log.Warn("tableflip could not tell the previous worker", "error", err)
	}
	w.watchForDemand()
}

// watchForDemand watches the listeners (without accepting) for the first
// connection.
func (w *Worker) watchForDemand() {
	d := &w.serve.demand
	if d.watching || w.stopping {
		return
	}
	d.arrivals.stop()
	for _, l := range w.listeners {
		w.poll.Add(l.FD)
		w.kinds[l.FD] = kindDemand
	}
	d.watching = true
	w.log.Info("idle: waiting for a connection")
	w.sayServing()
}

func (w *Worker) stopWatchingForDemand() {
	if !w.unwatchDemand() {
		return
	}
	// While the app runs it accepts; the worker only learns of arrivals,
	// so a connection too short to be seen open by an idle check counts.
	w.startArrivalWatch()
}

// unwatchDemand stops watching the listeners for a first connection; it
// reports whether they were watched.
func (w *Worker) unwatchDemand() bool {
	d := &w.serve.demand
	if !d.watching {
		return false
	}
	for _, l := range w.listeners {
		w.poll.Del(l.FD)
		delete(w.kinds, l.FD)
	}
	d.watching = false
	return true
}

// startArrivalWatch begins an app's run: idle time counts from now, and
// every arrival from now on is seen.
func (w *Worker) startArrivalWatch() {
	d := &w.serve.demand
	now := time.Now()
	d.lastActive, d.nextCheck, d.confirming = now, now, false
	if err := d.arrivals.start(); err != nil {
		// Open connections and the queue are still counted.
		w.log.Warn("cannot watch arrivals; short connections may go unseen", "error", err)
	}
}

// demandArrived: a connection waits. Start the app, unless it has just
// failed to start repeatedly, in which case the connection is answered.
func (w *Worker) demandArrived(fd int) {
	d := &w.serve.demand
	if time.Now().Before(d.notBefore) {
		w.rejectPending(fd)
		return
	}
	w.stopWatchingForDemand()
	w.log.Info("connection waiting: starting the app")
	w.startCopies()
}

// rejectPending answers the connections waiting on one listener (the
// reject message, if any) and closes them. The listener may be blocking
// (serve mode's default, which sockhold never changes), so each accept is
// preceded by a zero-timeout poll; another process can still win the
// connection in between, and the accept then waits for the next one.
func (w *Worker) rejectPending(fd int) {
	for range 1024 { // bounded: what is left is answered after the next start fails
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(pfd, 0); n < 1 {
			return
		}
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		handoff.Refuse(c, []byte(w.serve.cfg.RejectMessage))
		w.log.Info("FAIL", "reason", "the app cannot be started; answered and closed")
	}
}

// startFailed counts a failed start. After a few, the waiting connections
// are answered rather than left hanging, and the next connection tries
// again once the backoff has passed.
func (w *Worker) startFailed() bool {
	d := &w.serve.demand
	d.startFailures++
	if d.startFailures < maxStartFailures {
		return false
	}
	d.startFailures = 0
	d.notBefore = time.Now().Add(w.serve.backoff.Fail())
	w.serve.restartAt = time.Time{}
	for _, l := range w.listeners {
		w.rejectPending(l.FD)
	}
	w.log.Warn("the app keeps failing to start; waiting connections answered", "next_try_after", time.Until(d.notBefore).Round(time.Millisecond).String())
	w.watchForDemand()
	return true
}

// checkIdle looks at the listeners' activity (connections open on their
// addresses, queued ones included, and any that arrived since the last
// look) and stops the app once there has been none for --idle-stop.
func (w *Worker) checkIdle(now time.Time) {
	s := w.serve
	d := &s.demand
	if now.Before(d.nextCheck) || !s.allReady() {
		return
	}
	d.nextCheck = now.Add(idleCheckInterval(s.cfg.IdleStop))
	arrived := d.arrivals.take()
	open := 0
	for _, l := range w.listeners {
		if n, err := listen.Activity(l.FD); err == nil {
			open += n
		}
	}
	idle := now.Sub(d.lastActive)
	w.log.Debug("idle check", "arrived", arrived, "open", open, "idle_for", idle.Round(time.Millisecond).String())
	if arrived || open > 0 {
		d.lastActive, d.confirming = now, false
		return
	}
	if idle < s.cfg.IdleStop {
		return
	}
	if !d.confirming {
		d.confirming = true
		d.nextCheck = now.Add(idleConfirm)
		return
	}
	d.confirming = false
	w.log.Info("idle: stopping the app", "idle_for", idle.Round(time.Millisecond).String())
	var stopped []int
	for _, a := range s.apps {
		if a != nil && !a.stopping {
			stopped = append(stopped, w.stopApp(a))
			a.stopAt = now
		}
	}
	// The holder enforces --drain-timeout on them too, should this worker
	// stop or be replaced meanwhile (its own timer then no longer runs),
	// and knows they are stopping (no app runs for the next generation).
	w.send(link.Msg{Type: link.Drain, Drain: stopped, DrainMS: s.cfg.DrainTimeout.Milliseconds()})
}

// idleCheckInterval: often enough to stop within a second of the deadline,
// rarely enough to cost nothing measurable.
func idleCheckInterval(idle time.Duration) time.Duration {
	return min(max(idle/4, 50*time.Millisecond), time.Second)
}

// demandDue is when the on-demand timer next has something to do.
func (w *Worker) demandDue() time.Time {
	s := w.serve
	var due time.Time
	if s.allReady() {
		due = s.demand.nextCheck
	}
	for _, a := range s.apps {
		if a != nil && a.stopping && !a.stopAt.IsZero() {
			if t := a.stopAt.Add(s.cfg.DrainTimeout); due.IsZero() || t.Before(due) {
				due = t
			}
		}
	}
	return due
}

// drainIdleStops kills copies the worker stopped for idleness that outlive
// --drain-timeout (the worker is their parent: the holder is not involved).
func (w *Worker) drainIdleStops(now time.Time) {
	for _, a := range w.serve.apps {
		if a != nil && a.stopping && !a.stopAt.IsZero() && !now.Before(a.stopAt.Add(w.serve.cfg.DrainTimeout)) {
			unix.PidfdSendSignal(a.pidfd, unix.SIGKILL, nil, 0)
			a.stopAt = time.Time{}
			w.log.Warn("app did not stop within --drain-timeout; killed", "app_pid", a.pid)
		}
	}
}

// anyRunning reports whether a copy runs (for the next generation).
func (s *serveState) anyRunning() bool {
	for _, a := range s.apps {
		if a != nil && !a.stopping {
			return true
		}
	}
	return false
}

func (s *serveState) allEmpty() bool {
	for _, a := range s.apps {
		if a != nil {
			return false
		}
	}
	return true
}
