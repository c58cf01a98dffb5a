package worker

import (
	"log/slog"
	"syscall"
	"time"

	"github.com/sockhold/sockhold/holder/logs"
)

// handler is one live connection handler this worker counts against
// --processes: either its own child, or one inherited from an earlier
// generation (reaped by the holder; here only its pidfd is watched).
type handler struct {
	pid       int
	pidfd     int
	start     time.Time
	peer      string
	inherited bool
	gen       int // for inherited handlers: the generation that started them
}

// handlers is the worker's table of live handlers, keyed by pidfd.
type handlers map[int]*handler

// reap collects the exit status of an own child whose pidfd became
// readable; it reports whether this worker reaped it (an inherited handler
// is the holder's, or its own worker's, to reap).
func (h *handler) reap(log *slog.Logger, logExit bool) bool {
	if h.inherited {
		log.Debug("inherited handler gone", "pid", h.pid)
		return false
	}
	var ws syscall.WaitStatus
	for {
		pid, err := syscall.Wait4(h.pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid != h.pid {
			log.Warn("EXIT", "pid", h.pid, "error", err)
			return false
		}
		break
	}
	if !logExit {
		return true
	}
	attrs := append([]any{"pid", h.pid}, logs.WaitAttrs(ws)...)
	attrs = append(attrs, "duration", time.Since(h.start).Round(time.Millisecond).String(), "peer", h.peer)
	log.Info("EXIT", attrs...)
	return true
}
