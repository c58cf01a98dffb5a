package holder

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/core"
	"github.com/sockhold/sockhold/holder/evloop"
)

// The control socket: one request per connection, a JSON line each way,
// served inside the holder's loop with every read and write non-blocking
// and bounded in size and time, so no client can block or crash the holder.
// A client is always answered before its connection closes, and whatever it
// sent is read first, so that it hears the answer instead of a reset.
const (
	maxRequest      = 4096
	requestTimeout  = 5 * time.Second
	maxControlConns = 512
	controlBacklog  = 1024
	drainLimit      = 1 << 20
	drainTimeout    = 2 * time.Second
	maxWait         = 24 * time.Hour
)

// ControlRequest is what a client sends.
type ControlRequest struct {
	Verb      string `json:"verb"` // upgrade, status, stop
	Wait      bool   `json:"wait,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
}

// controlReply is what the holder answers.
type controlReply struct {
	core.ControlReply
	Status *Status `json:"status,omitempty"`
}

type controlServer struct {
	path  string
	sock  *listen.Socket // the listener; also removes the file when sockhold stops
	conns map[int]*ctlConn
	off   time.Time // accepting paused until (EMFILE)
	pause time.Duration
}

type ctlPhase int

const (
	ctlReading ctlPhase = iota
	ctlWaiting          // the core has the request
	ctlWriting
	ctlDraining // answered; reading what the client sent so it hears the answer
)

type ctlConn struct {
	ID       int       `json:"id"`
	FD       int       `json:"fd"`
	UID      int       `json:"uid"`
	Phase    ctlPhase  `json:"phase"`
	In       []byte    `json:"in,omitempty"`
	Out      []byte    `json:"out,omitempty"`
	Wait     string    `json:"wait,omitempty"` // how long the core was given, for the timeout answer
	Drained  int       `json:"drained,omitempty"`
	deadline time.Time // carried across exec as remaining time
}

// openControl creates the control socket (mode 0600) in a directory only
// sockhold's user can write to.
func (h *Holder) openControl() error {
	path := h.cfg.Control
	if err := config.EnsureControlDir(filepath.Dir(path), h.cfg.ControlDerived); err != nil {
		return err
	}
	// Not through a URI: a path may hold '?' or '%'.
	spec, err := listen.UnixSpec(path, 0o600)
	if err != nil {
		return fmt.Errorf("control socket: %v", err)
	}
	socks, _, err := listen.OpenAll([]listen.Spec{spec}, listen.Options{Backlog: controlBacklog}, nil)
	if err != nil {
		return fmt.Errorf("control socket: %v", err)
	}
	h.control = &controlServer{path: path, sock: socks[0], conns: map[int]*ctlConn{}}
	return nil
}

func (h *Holder) closeControl() {
	if h.control == nil {
		return
	}
	for id := range h.control.conns {
		h.closeConn(id)
	}
	h.unwatch(h.control.sock.FD)
	h.control.sock.Close()
	h.control = nil
}

func (h *Holder) acceptControl() {
	cs := h.control
	for i := 0; i < 64; i++ {
		fd, _, err := unix.Accept4(cs.sock.FD, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if err != nil {
			if errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.EINTR) {
				continue
			}
			// Out of descriptors: pause instead of spinning on a ready
			// listener; clients wait in the backlog.
			cs.pause = min(max(2*cs.pause, 10*time.Millisecond), time.Second)
			cs.off = time.Now().Add(cs.pause)
			h.unwatch(cs.sock.FD)
			h.log.Warn("control: accept failed; pausing", "error", err, "pause", cs.pause.String())
			return
		}
		cs.pause = 0
		uid := -1
		if cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
		if len(cs.conns) >= maxControlConns {
			// Room for the newcomer: the client that has been silent
			// longest goes (answered), so idle connections can never
			// keep status or upgrade out.
			if idle := cs.idlest(); idle != nil {
				h.evict(idle)
			}
		}
		c := &ctlConn{ID: h.newID(), FD: fd, UID: uid, deadline: time.Now().Add(requestTimeout)}
		cs.conns[c.ID] = c
		h.watch(fd, fdControlConn, c.ID)
		if len(cs.conns) > maxControlConns {
			h.answer(c, failReply("busy: too many control connections; try again"))
		}
	}
}

// evict answers a client that has sent nothing and closes it at once
// (nothing unread, so the close loses nothing).
func (h *Holder) evict(c *ctlConn) {
	b, _ := json.Marshal(failReply("no complete request: too many control connections open"))
	unix.Write(c.FD, append(b, '\n'))
	h.closeConn(c.ID)
}

// idlest is the connection still silent that came first (nil: none).
func (cs *controlServer) idlest() *ctlConn {
	var found *ctlConn
	for _, c := range cs.conns {
		if c.Phase == ctlReading && len(c.In) == 0 && (found == nil || c.ID < found.ID) {
			found = c
		}
	}
	return found
}

func (h *Holder) resumeControl() {
	cs := h.control
	cs.off = time.Time{}
	h.watch(cs.sock.FD, fdControl, 0)
}

func (h *Holder) controlReady(id int, r evloop.Ready) {
	c := h.control.conns[id]
	if c == nil {
		return
	}
	switch c.Phase {
	case ctlReading:
		h.readRequest(c)
	case ctlWaiting:
		if r.HangUp {
			h.closeConn(id) // the client has gone: nobody to answer
		}
	case ctlWriting:
		if r.HangUp {
			h.closeConn(id)
			return
		}
		h.writeAnswer(c)
	case ctlDraining:
		h.drainInput(c)
	}
}

// readRequest reads what has arrived, up to one request.
func (h *Holder) readRequest(c *ctlConn) {
	var buf [maxRequest + 1]byte
	for c.Phase == ctlReading {
		n, err := unix.Read(c.FD, buf[:maxRequest+1-len(c.In)])
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		eof := n == 0 || err != nil
		if n > 0 {
			c.In = append(c.In, buf[:n]...)
		}
		line, complete := c.In, false
		if i := bytes.IndexByte(c.In, '\n'); i >= 0 {
			line, complete = c.In[:i], true
		}
		switch {
		case !complete && len(c.In) > maxRequest:
			h.answer(c, failReply(fmt.Sprintf("request too long (at most %d bytes)", maxRequest)))
		case complete || (eof && len(c.In) > 0):
			h.request(c, line)
		case eof:
			h.answer(c, failReply("no complete request: EOF"))
		case len(c.In) == maxRequest+1:
			h.answer(c, failReply(fmt.Sprintf("request too long (at most %d bytes)", maxRequest)))
		}
	}
}

func failReply(msg string) controlReply {
	return controlReply{ControlReply: core.ControlReply{Error: msg}}
}

// request handles one request line. The caller's uid (SO_PEERCRED) is
// checked after it has been read, so that a refused client hears why.
func (h *Holder) request(c *ctlConn, line []byte) {
	if c.UID != 0 && c.UID != os.Geteuid() {
		h.log.Warn("control: refused a client", "uid", c.UID)
		h.answer(c, failReply("permission denied: only root or the user sockhold runs as may control it"))
		return
	}
	var req ControlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		h.answer(c, failReply("bad request: not JSON"))
		return
	}
	wait := 10 * time.Second
	switch {
	case req.TimeoutMS < 0:
		h.answer(c, failReply("bad request: timeout_ms must not be negative"))
		return
	case req.Wait && req.TimeoutMS > 0:
		// Clamped before it is multiplied, so no value overflows.
		wait = time.Duration(min(req.TimeoutMS, maxWait.Milliseconds())) * time.Millisecond
	case req.Wait:
		wait = h.cfg.UpgradeTimeout + 15*time.Second
	}
	switch req.Verb {
	case "status":
		h.readAllReports() // the ledger as of now
		h.answer(c, controlReply{ControlReply: core.ControlReply{OK: true}, Status: h.status()})
	case "upgrade", "stop":
		c.Phase, c.Wait = ctlWaiting, wait.String()
		c.deadline = time.Now().Add(wait)
		h.setWatch(c.FD, false, false) // only a hang-up matters now
		h.feed(core.ControlAsk{Ctl: c.ID, Verb: req.Verb, Wait: req.Wait})
	default:
		h.answer(c, failReply(fmt.Sprintf("bad request: unknown verb %q (want upgrade, status, stop)", req.Verb)))
	}
}

// reply answers a request the core took.
func (h *Holder) reply(id int, rep core.ControlReply) {
	if h.control == nil {
		return
	}
	if c := h.control.conns[id]; c != nil && c.Phase == ctlWaiting {
		h.answer(c, controlReply{ControlReply: rep})
	}
}

func (h *Holder) answer(c *ctlConn, rep controlReply) {
	b, _ := json.Marshal(rep)
	c.Out, c.Phase = append(b, '\n'), ctlWriting
	c.deadline = time.Now().Add(requestTimeout)
	h.writeAnswer(c)
}

func (h *Holder) writeAnswer(c *ctlConn) {
	for len(c.Out) > 0 {
		n, err := unix.Write(c.FD, c.Out)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			h.setWatch(c.FD, false, true)
			return
		}
		if err != nil {
			h.closeConn(c.ID)
			return
		}
		c.Out = c.Out[n:]
	}
	// Answered. Whatever else the client sends is read and dropped until it
	// closes, so that closing never turns into a reset that would destroy
	// the answer before the client reads it.
	unix.Shutdown(c.FD, unix.SHUT_WR)
	c.Phase, c.In, c.Out = ctlDraining, nil, nil
	c.deadline = time.Now().Add(drainTimeout)
	h.setWatch(c.FD, true, false)
	h.drainInput(c)
}

func (h *Holder) drainInput(c *ctlConn) {
	var buf [16 << 10]byte
	for {
		n, err := unix.Read(c.FD, buf[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		c.Drained += n
		if n == 0 || err != nil || c.Drained > drainLimit {
			h.closeConn(c.ID)
			return
		}
	}
}

func (h *Holder) closeConn(id int) {
	c := h.control.conns[id]
	if c == nil {
		return
	}
	delete(h.control.conns, id)
	h.unwatch(c.FD)
	unix.Close(c.FD)
}

func (h *Holder) controlDeadlines(now time.Time) {
	if !h.control.off.IsZero() && !h.control.off.After(now) {
		h.resumeControl()
	}
	for id, c := range h.control.conns {
		if c.deadline.IsZero() || c.deadline.After(now) {
			continue
		}
		switch c.Phase {
		case ctlReading:
			h.answer(c, failReply("no complete request: read timed out"))
		case ctlWaiting:
			h.answer(c, failReply(fmt.Sprintf("no answer within %s (the upgrade may still complete)", c.Wait)))
		default:
			h.closeConn(id)
		}
	}
}
