package worker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/throttle"
)

// acceptBatch bounds the connections taken per wake-up: under any load the
// loop returns to epoll, which reaps exited handlers, hears the holder and
// signals, and reports the listener (level-triggered) again at once.
const acceptBatch = 64

// acceptFrom takes pending connections from one listener for as long as the
// admission allows (queue policy) or until the queue is empty (reject
// policy), at most acceptBatch of them. Connections left behind stay in the
// kernel's queue, in order.
func (w *Worker) acceptFrom(l config.ListenerFD) {
	if !w.spawnHeld() {
		return
	}
	for range acceptBatch {
		if w.stopping || time.Now().Before(w.acceptPausedUntil) {
			return
		}
		verdict, load := w.adm.Check()
		if w.cfg.WhenFull == config.WhenFullQueue && verdict != throttle.Admit {
			return
		}
		fd, remote, err := unix.Accept4(l.FD, unix.SOCK_CLOEXEC)
		if err != nil {
			w.acceptFailed(l, err)
			return
		}
		w.acceptBackoff.Reset()
		switch {
		case verdict == throttle.Full:
			w.reject(fd, handoff.DescribeConn(fd, remote).Text, "full", "processes", w.adm.Slots.Used())
		case verdict == throttle.Overloaded:
			w.reject(fd, handoff.DescribeConn(fd, remote).Text, "overloaded", "load", load)
		case time.Now().Before(w.spawnHoldUntil):
			w.reject(fd, handoff.DescribeConn(fd, remote).Text, "spawn failing, backing off", "retry_in", time.Until(w.spawnHoldUntil).Round(time.Millisecond).String())
		default:
			w.spawn(fd, remote)
		}
	}
}

// acceptFailed handles an accept error. Running out of descriptors or memory
// pauses accepting with backoff instead of spinning on a ready listener.
func (w *Worker) acceptFailed(l config.ListenerFD, err error) {
	switch {
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
	case errors.Is(err, unix.ECONNABORTED), errors.Is(err, unix.EPROTO), errors.Is(err, unix.EPERM):
		w.log.Debug("accept", "listener", l.Addr, "error", err)
	default:
		d := w.acceptBackoff.Fail()
		w.acceptPausedUntil = time.Now().Add(d)
		w.log.Warn("accept failed; pausing", "listener", l.Addr, "error", err, "pause", d.String())
	}
}

// heldConn is a connection accepted when the machine then had no room to
// start its handler (descriptors, memory, processes): it waits for the
// next try instead of being refused.
type heldConn struct {
	fd     int
	remote unix.Sockaddr
}

// lackOfResources: the handler could not start for want of something the
// machine may soon have again, not because the command cannot run.
func lackOfResources(err error) bool {
	for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ENOMEM, unix.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// spawnHeld tries again the connection held for lack of resources; false
// while it still cannot start (accepting stays paused).
func (w *Worker) spawnHeld() bool {
	h := w.heldConn
	if h == nil {
		return true
	}
	// Not after a handover: the successor has the count, and a process
	// started now would be in nobody's.
	if w.stopping || !w.upgrade.takesWork() || time.Now().Before(w.acceptPausedUntil) {
		return false
	}
	w.heldConn = nil
	w.spawn(h.fd, h.remote)
	return w.heldConn == nil
}

// refuseHeld answers the held connection when this worker takes no more
// work (it stops, or hands over).
func (w *Worker) refuseHeld() {
	if h := w.heldConn; h != nil {
		w.heldConn = nil
		w.reject(h.fd, handoff.DescribeConn(h.fd, h.remote).Text, "worker stopping before a handler could start")
	}
}

// spawn hands connection fd to a new handler. If the machine lacks the
// resources to start it, the connection is held and accepting pauses, with
// backoff, leaving the queue alone, as an accept that fails with EMFILE
// does. If the command cannot run, the connection is answered (with the
// reject message, if any) and closed at once, and later connections are
// answered the same way until a backoff has passed.
func (w *Worker) spawn(fd int, remote unix.Sockaddr) {
	peer := handoff.DescribeConn(fd, remote)
	pid, pidfd, err := w.cmd.StartHandler(fd, 2, peer.Env)
	if err != nil && lackOfResources(err) {
		d := w.acceptBackoff.Fail()
		w.acceptPausedUntil = time.Now().Add(d)
		w.heldConn = &heldConn{fd: fd, remote: remote}
		w.log.Warn("cannot start a handler for lack of resources; accepting paused, the connection waits", "peer", peer.Text, "error", err, "pause", d.String())
		return
	}
	if err != nil {
		d := w.spawnBackoff.Fail()
		w.spawnHoldUntil = time.Now().Add(d)
		w.counters.spawnFailures++
		w.report.counts.SpawnFailures++
		handoff.Refuse(fd, w.rejectMessage)
		w.log.Warn("FAIL", "peer", peer.Text, "reason", "spawn failed", "error", err, "retry_in", d.String())
		return
	}
	unix.Close(fd)
	w.spawnBackoff.Reset()
	w.acceptBackoff.Reset()
	h := &handler{pid: pid, pidfd: pidfd, start: time.Now(), peer: peer.Text}
	w.track(h)
	w.startedProc(pid, pidfd, h.start, peer.Text, false, 0)
	w.counters.accepted++
	w.report.counts.Accepted++
	if w.logConns {
		w.log.Info("START", "peer", peer.Text, "pid", pid)
	}
}

// reject answers a connection that will not be handed on and closes it.
func (w *Worker) reject(fd int, peer, reason string, attrs ...any) {
	w.counters.rejected++
	w.report.counts.Rejected++
	handoff.Refuse(fd, w.rejectMessage)
	if w.logConns {
		w.log.Info("FAIL", append([]any{"peer", peer, "reason", reason}, attrs...)...)
	}
}

// logQueue reports the accept-queue depth of each listener at debug level
// when the worker stops taking connections, so operators can see the queue.
func (w *Worker) logQueue(why string) {
	if !w.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for _, l := range w.listeners {
		if q, err := listen.ReadQueue(l.FD); err == nil {
			w.log.Debug("queue", "listener", l.Addr, "why", why, "depth", q.Depth, "max", q.Max)
		}
	}
}
