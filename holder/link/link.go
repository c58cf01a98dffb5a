// Package link is the channel between the holder and its workers: a
// SOCK_SEQPACKET unix socket carrying one JSON message per packet, with
// descriptors (pidfds of handlers) attached as SCM_RIGHTS where needed.
//
// Workers dial the holder's rendezvous socket instead of inheriting a
// socketpair, because a worker started by an upgrade is the child of the old
// worker, not of the holder; the holder learns each caller's PID from the
// kernel (SO_PEERCRED), not from what it says.
package link

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Message types.
const (
	Hello         = "hello"          // worker -> holder: I am up (Version)
	Adopt         = "adopt"          // holder -> worker: your generation, and pidfds of older handlers
	Serving       = "serving"        // worker -> holder: accepting now
	Upgrade       = "upgrade"        // holder -> worker: replace yourself with the binary on disk
	Upgraded      = "upgraded"       // worker -> holder: the new worker is ready; I am exiting
	UpgradeFailed = "upgrade-failed" // worker -> holder: Reason says why; I keep serving
	StatusAsk     = "status?"        // holder -> worker
	Signal        = "signal"         // holder -> worker: pass Signo on to the app
	Rolled        = "rolled"         // new worker -> holder: one more new copy is ready
	StopOne       = "stop-one"       // holder -> old worker: stop one copy (rolling restart)
	Drain         = "drain"          // worker -> holder: these apps were asked to stop
	Output        = "output"         // worker -> holder: the read end of an app's stdout/stderr
	StatusReply   = "status"         // worker -> holder: Stats
)

// Msg is one packet's payload.
type Msg struct {
	Type       string  `json:"type"`
	Version    string  `json:"version,omitempty"`
	Generation int     `json:"gen,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	PIDs       []int   `json:"pids,omitempty"`   // one per attached pidfd
	Starts     []int64 `json:"starts,omitempty"` // unix nanoseconds, one per attached pidfd
	Gens       []int   `json:"gens,omitempty"`   // the generation that started each
	More       bool    `json:"more,omitempty"`   // adopt: further pidfds follow in another message
	Signo      int     `json:"signo,omitempty"`
	Drain      []int   `json:"drain,omitempty"` // upgraded: app PIDs asked to stop, for the holder to kill after DrainMS
	DrainMS    int64   `json:"drain_ms,omitempty"`
	Stats      *Stats  `json:"stats,omitempty"`
}

// Stats is a worker's view, for `sockhold status`.
type Stats struct {
	Generation    int          `json:"gen"`
	PID           int          `json:"pid"`
	Version       string       `json:"version"`
	OwnHandlers   int          `json:"own_handlers"`
	Inherited     map[int]int  `json:"inherited_by_gen,omitempty"`
	SlotsUsed     int          `json:"slots_used"`
	SlotsLimit    int          `json:"slots_limit"`
	Accepted      int          `json:"accepted"`
	Rejected      int          `json:"rejected"`
	SpawnFailures int          `json:"spawn_failures"`
	Accepting     bool         `json:"accepting"`
	Queues        []QueueStats `json:"queues,omitempty"`
}

// QueueStats is one listener's accept queue.
type QueueStats struct {
	Listener string `json:"listener"`
	Depth    uint32 `json:"depth"`
	Max      uint32 `json:"max"`
}

// maxPacket bounds one message; more pidfds than fit go in several adopts.
const (
	maxPacket = 64 << 10
	maxFDs    = 250 // SCM_MAX_FD is 253
)

// Send writes one message with optional descriptors attached.
func Send(fd int, m Msg, fds ...int) error {
	if len(fds) > maxFDs {
		return fmt.Errorf("link: %d descriptors in one message, at most %d", len(fds), maxFDs)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err = unix.Sendmsg(fd, b, oob, nil, unix.MSG_NOSIGNAL)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// Recv reads one message and any descriptors attached (close-on-exec). A
// closed peer is io.EOF-like: ErrClosed.
func Recv(fd int) (Msg, []int, error) {
	buf := make([]byte, maxPacket)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	var n, oobn int
	var err error
	for {
		n, oobn, _, _, err = unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return Msg{}, nil, err
	}
	if n == 0 && oobn == 0 {
		return Msg{}, nil, ErrClosed
	}
	var fds []int
	if oobn > 0 {
		scms, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for _, scm := range scms {
				got, err := unix.ParseUnixRights(&scm)
				if err == nil {
					fds = append(fds, got...)
				}
			}
		}
	}
	var m Msg
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		for _, f := range fds {
			unix.Close(f)
		}
		return Msg{}, nil, fmt.Errorf("link: bad message: %v", err)
	}
	return m, fds, nil
}

// ErrClosed reports that the other side has gone.
var ErrClosed = errors.New("link closed")
