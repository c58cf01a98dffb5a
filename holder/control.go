package holder

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff/listen"
)

// The control socket: one request per connection, a JSON line each way.
// Every connection is served by its own goroutine with a size limit and a
// deadline; the holder's loop only ever sees a parsed request and answers
// through a buffered channel, so no client can block or crash it.
const (
	maxRequest     = 4096
	requestTimeout = 5 * time.Second
)

// ControlRequest is what a client sends.
type ControlRequest struct {
	Verb      string `json:"verb"` // upgrade, status, stop
	Wait      bool   `json:"wait,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
}

type controlRequest struct {
	ControlRequest
	replies chan controlReply
}

// controlReply is what the holder answers.
type controlReply struct {
	OK         bool    `json:"ok"`
	Error      string  `json:"error,omitempty"`
	Message    string  `json:"message,omitempty"`
	Generation int     `json:"gen,omitempty"`
	Version    string  `json:"version,omitempty"`
	TookMS     float64 `json:"took_ms,omitempty"`
	Status     *Status `json:"status,omitempty"`
}

func (r *controlRequest) reply(rep controlReply) {
	if r == nil {
		return
	}
	select {
	case r.replies <- rep:
	default: // already answered
	}
}

func (r *controlRequest) fail(msg string) { r.reply(controlReply{Error: msg}) }

type controlServer struct {
	path string
	sock *listen.Socket
	ln   net.Listener
}

// openControl creates the control socket (mode 0600, its directory 0700 if
// sockhold creates it) and serves it.
func (h *Holder) openControl() error {
	path := h.cfg.Control
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("control socket: %v", err)
	}
	spec, err := listen.Parse("unix://" + path + "?mode=0600")
	if err != nil {
		return fmt.Errorf("control socket: %v", err)
	}
	socks, _, err := listen.OpenAll([]listen.Spec{spec}, listen.Options{Backlog: 16}, nil)
	if err != nil {
		return fmt.Errorf("control socket: %v", err)
	}
	// net.FileListener works on a duplicate; the Socket is kept only to
	// remove the file (if still ours) when sockhold stops.
	f := os.NewFile(uintptr(socks[0].FD), path)
	ln, err := net.FileListener(f)
	f.Close()
	socks[0].FD = -1
	if err != nil {
		socks[0].Close()
		return fmt.Errorf("control socket: %v", err)
	}
	h.control = &controlServer{path: path, sock: socks[0], ln: ln}
	go h.serveControl(ln)
	return nil
}

func (h *Holder) closeControl() {
	if h.control == nil {
		return
	}
	h.control.ln.Close()
	h.control.sock.Close()
}

func (h *Holder) serveControl(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE: do not spin
			continue
		}
		go h.controlConn(c.(*net.UnixConn))
	}
}

func (h *Holder) controlConn(c *net.UnixConn) {
	defer c.Close()
	answer := func(rep controlReply) {
		c.SetWriteDeadline(time.Now().Add(requestTimeout))
		b, _ := json.Marshal(rep)
		c.Write(append(b, '\n'))
	}
	// The request is read (bounded in size and time) before anything is
	// answered, refusals included: a client still writing when the holder
	// closed would see EPIPE instead of the reason.
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxRequest+1), maxRequest+1).ReadSlice('\n')
	if uid, uerr := peerUID(c); uerr != nil || (uid != 0 && uid != os.Geteuid()) {
		h.log.Warn("control: refused a client", "uid", uid, "error", uerr)
		answer(controlReply{Error: "permission denied: only root or the user sockhold runs as may control it"})
		return
	}
	switch {
	case errors.Is(err, bufio.ErrBufferFull) || len(line) > maxRequest:
		answer(controlReply{Error: fmt.Sprintf("request too long (at most %d bytes)", maxRequest)})
		return
	case err != nil && !errors.Is(err, io.EOF):
		answer(controlReply{Error: "no complete request: " + err.Error()})
		return
	}
	var req ControlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		answer(controlReply{Error: "bad request: not JSON"})
		return
	}
	switch req.Verb {
	case "upgrade", "status", "stop":
	default:
		answer(controlReply{Error: fmt.Sprintf("bad request: unknown verb %q (want upgrade, status, stop)", req.Verb)})
		return
	}
	r := &controlRequest{ControlRequest: req, replies: make(chan controlReply, 1)}
	h.events <- event{kind: evControl, ctl: r}
	wait := 10 * time.Second
	if req.Wait {
		wait = h.cfg.UpgradeTimeout + 15*time.Second
		if req.TimeoutMS > 0 {
			wait = time.Duration(req.TimeoutMS) * time.Millisecond
		}
	}
	select {
	case rep := <-r.replies:
		answer(rep)
	case <-time.After(wait):
		answer(controlReply{Error: fmt.Sprintf("no answer within %v (the upgrade may still complete)", wait)})
	}
}

func peerUID(c *net.UnixConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	uid := -1
	var credErr error
	rc.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			credErr = err
			return
		}
		uid = int(cred.Uid)
	})
	return uid, credErr
}

// onControl runs a request in the holder's loop.
func (h *Holder) onControl(r *controlRequest) {
	switch r.Verb {
	case "upgrade":
		h.requestUpgrade(r)
	case "status":
		h.requestStatus(r)
	case "stop":
		r.reply(controlReply{OK: true, Message: "stopping"})
		h.stop(unix.SIGTERM)
	}
}
