package holder

import (
	"bytes"
	"errors"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/holder/logs"
)

// relay re-logs, line by line, what a served app writes (serve
// --capture-output), tagged with its PID and generation. The holder owns
// the pipe's read end from the moment the app starts, so output is read for
// as long as the app lives, whichever worker started it. Captured output
// is printed whatever -v says: it is the app's, not sockhold's.
type relay struct {
	FD      int    `json:"fd"`
	PID     int    `json:"pid"`
	Gen     int    `json:"gen"`
	Partial []byte `json:"partial,omitempty"` // a line not yet ended
	log     *slog.Logger
}

// maxLine is where a line without an end is logged in pieces: a relay that
// stopped reading would leave the app blocked on a full pipe.
const maxLine = 64 << 10

func (h *Holder) relayFromLink(m link.Msg, fds []int, worker int) {
	if len(fds) != 1 || len(m.PIDs) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return
	}
	gen := 0
	if w := h.core.Workers[worker]; w != nil {
		gen = w.Gen
	}
	h.addRelay(&relay{FD: fds[0], PID: m.PIDs[0], Gen: gen})
}

func (h *Holder) addRelay(r *relay) {
	unix.SetNonblock(r.FD, true)
	r.log = logs.New(os.Stderr, h.cfg.LogFormat, slog.LevelInfo).With("role", "app", "app_pid", r.PID, "gen", r.Gen)
	h.relays[r.FD] = r
	h.watch(r.FD, fdRelay, r.FD)
}

func (h *Holder) relayReady(fd int) {
	r := h.relays[fd]
	if r == nil {
		return
	}
	var buf [32 << 10]byte
	for i := 0; i < 16; i++ {
		n, err := unix.Read(fd, buf[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if n <= 0 || err != nil {
			if len(r.Partial) > 0 {
				r.log.Info("app output", "line", string(r.Partial))
			}
			h.unwatch(fd)
			unix.Close(fd)
			delete(h.relays, fd)
			return
		}
		r.Partial = append(r.Partial, buf[:n]...)
		for {
			i := bytes.IndexByte(r.Partial, '\n')
			if i < 0 {
				break
			}
			r.log.Info("app output", "line", string(r.Partial[:i]))
			r.Partial = r.Partial[i+1:]
		}
		for len(r.Partial) >= maxLine {
			r.log.Info("app output", "line", string(r.Partial[:maxLine]))
			r.Partial = r.Partial[maxLine:]
		}
		r.Partial = append([]byte(nil), r.Partial...)
	}
}
