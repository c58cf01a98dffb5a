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

// acceptFrom takes pending connections from one listener for as long as the
// admission allows (queue policy) or until the queue is empty (reject
// policy). Connections left behind stay in the kernel's queue, in order.
func (w *Worker) acceptFrom(l config.ListenerFD) {
	for !w.stopping {
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

// spawn hands connection fd to a new handler. On failure the connection is
// answered (with the reject message, if any) and closed at once, and later
// connections are answered the same way until a backoff has passed.
func (w *Worker) spawn(fd int, remote unix.Sockaddr) {
	peer := handoff.DescribeConn(fd, remote)
	pid, pidfd, err := w.cmd.StartHandler(fd, 2, peer.Env)
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
