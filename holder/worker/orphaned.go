package worker

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// holderGone: the holder died (SIGKILL, a crash), so nobody will reap,
// count, drain or kill what this worker started. Spawn-mode handlers hold
// only their own connection and are left to finish it. Serve-mode copies
// hold the listening sockets: left running they would keep the port with
// nobody to restart or stop them, and a restarted sockhold could not bind
// it. So the worker stops them itself, as a stop would (stop-signal,
// --drain-timeout, SIGKILL), and reaps them before it exits.
func (w *Worker) holderGone() {
	w.stopping = true
	if w.holder != nil {
		w.poll.Del(w.holder.FD)
		delete(w.kinds, w.holder.FD)
		w.holder.Close()
		w.holder = nil
	}
	if w.reports != nil {
		w.poll.Del(w.reports.FD)
		delete(w.kinds, w.reports.FD)
		w.reports.Close()
		w.reports = nil // holderGone may run again: never close the number twice
	}
	if w.serve == nil || w.holderGoneDone {
		return
	}
	w.holderGoneDone = true
	w.stopAll()
	deadline := time.Now().Add(w.serve.cfg.DrainTimeout)
	for {
		var pfds []unix.PollFd
		for _, a := range w.serve.apps {
			if a != nil {
				pfds = append(pfds, unix.PollFd{Fd: int32(a.pidfd), Events: unix.POLLIN})
			}
		}
		if len(pfds) == 0 {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			for _, p := range pfds {
				unix.PidfdSendSignal(int(p.Fd), unix.SIGKILL, nil, 0)
				w.appExited(int(p.Fd))
			}
			w.log.Warn("apps did not stop within --drain-timeout; killed", "apps", len(pfds))
			return
		}
		if _, err := unix.Poll(pfds, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			w.log.Error("waiting for the apps", "error", err)
			return
		}
		for _, p := range pfds {
			if p.Revents != 0 {
				w.appExited(int(p.Fd))
			}
		}
	}
}
