package link

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// maxPacket bounds one message; more pidfds than fit go in several messages.
const (
	maxPacket = 64 << 10
	// MaxFDs is how many descriptors one message carries (SCM_MAX_FD is 253).
	MaxFDs = 250
)

// Errors of a link.
var (
	// ErrClosed reports that the other side has gone.
	ErrClosed = errors.New("link closed")
	// ErrTruncated reports a message whose descriptors did not all
	// arrive (MSG_CTRUNC: the receiver ran out of descriptors). What it
	// carried cannot be trusted: the handover failed.
	ErrTruncated = errors.New("link: descriptors lost in transit (MSG_CTRUNC)")
	// ErrBacklog reports that the peer has not read for so long that the
	// bounded queue is full: it is wedged.
	ErrBacklog = errors.New("link: peer not reading (send queue full)")
)

// Conn is one end of a link. The socket is non-blocking: a message the
// kernel will not take now is queued (with duplicates of its descriptors)
// and sent by Flush when the socket has room again, so no send can block
// an event loop. The queue is bounded; a peer that lets it fill is wedged.
type Conn struct {
	FD      int
	queue   []queued
	rb      *RecvBuffer
	maxKeep int
	enc     []byte // reused for reports
}

// RecvBuffer is the room Recv reads a message into. Conns read from one
// goroutine can share one (the holder's loop reads every link), so a new
// link costs no new 64 KiB.
type RecvBuffer struct {
	buf, oob []byte
}

// NewRecvBuffer makes room for the largest message.
func NewRecvBuffer() *RecvBuffer {
	return &RecvBuffer{buf: make([]byte, maxPacket), oob: make([]byte, unix.CmsgSpace(MaxFDs*4))}
}

type queued struct {
	b   []byte
	fds []int // owned duplicates, closed once sent
}

// DefaultQueue is how many messages may wait for a slow peer.
const DefaultQueue = 1024

// NewConn wraps a connected SOCK_SEQPACKET descriptor and makes it
// non-blocking.
func NewConn(fd int, rb *RecvBuffer) (*Conn, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, err
	}
	if rb == nil {
		rb = NewRecvBuffer()
	}
	return &Conn{FD: fd, rb: rb, maxKeep: DefaultQueue}, nil
}

// Send sends m with fds attached, now or, if the socket is full, as soon as
// Flush can. The caller keeps its own descriptors.
func (c *Conn) Send(m Msg, fds ...int) error {
	if len(fds) > MaxFDs {
		return fmt.Errorf("link: %d descriptors in one message, at most %d", len(fds), MaxFDs)
	}
	var b []byte
	if m.Type == Procs {
		c.enc = AppendProcs(c.enc[:0], &m)
		b = c.enc
	} else {
		var err error
		if b, err = json.Marshal(m); err != nil {
			return err
		}
	}
	if len(c.queue) == 0 {
		err := sendOne(c.FD, b, fds)
		if !errors.Is(err, unix.EAGAIN) {
			return err
		}
	}
	if m.Type == Procs {
		b = append([]byte(nil), b...) // queued: c.enc is reused
	}
	if len(c.queue) >= c.maxKeep {
		return ErrBacklog
	}
	q := queued{b: b}
	for _, fd := range fds {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			closeAll(q.fds)
			return fmt.Errorf("link: keep descriptor for a queued message: %v", err)
		}
		q.fds = append(q.fds, d)
	}
	c.queue = append(c.queue, q)
	return nil
}

// Flush sends queued messages while the socket takes them.
func (c *Conn) Flush() error {
	for len(c.queue) > 0 {
		q := c.queue[0]
		err := sendOne(c.FD, q.b, q.fds)
		if errors.Is(err, unix.EAGAIN) {
			return nil
		}
		closeAll(q.fds)
		c.queue[0] = queued{}
		c.queue = c.queue[1:]
		if err != nil {
			return err
		}
	}
	c.queue = nil
	return nil
}

// Drop discards the queue: the peer can no longer take it.
func (c *Conn) Drop() {
	for _, q := range c.queue {
		closeAll(q.fds)
	}
	c.queue = nil
}

// Pending reports whether messages wait for room (watch for writability).
// A nil Conn (a link already closed) has nothing pending.
func (c *Conn) Pending() bool { return c != nil && len(c.queue) > 0 }

// Requeue puts back messages Queued returned (in a new holder process).
func (c *Conn) Requeue(msgs [][]byte, fds [][]int) {
	for i, b := range msgs {
		c.queue = append(c.queue, queued{b: b, fds: fds[i]})
	}
}

// Close closes the socket and drops the queue.
func (c *Conn) Close() {
	c.Drop()
	unix.Close(c.FD)
}

// Recv reads one message without blocking, with any descriptors attached
// (close-on-exec). unix.EAGAIN when none waits; ErrClosed when the peer has
// gone; ErrTruncated when descriptors were lost.
func (c *Conn) Recv() (Msg, []int, error) {
	var n, oobn, flags int
	var err error
	for {
		n, oobn, flags, _, err = unix.Recvmsg(c.FD, c.rb.buf, c.rb.oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
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
	fds := parseRights(c.rb.oob[:oobn])
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		closeAll(fds)
		return Msg{}, nil, ErrTruncated
	case flags&unix.MSG_TRUNC != 0:
		closeAll(fds)
		return Msg{}, nil, fmt.Errorf("link: message longer than %d bytes", maxPacket)
	}
	var m Msg
	if isProcs(c.rb.buf[:n]) {
		err = decodeProcs(c.rb.buf[:n], &m)
	} else {
		err = json.Unmarshal(c.rb.buf[:n], &m)
	}
	if err != nil {
		closeAll(fds)
		return Msg{}, nil, fmt.Errorf("link: bad message: %v", err)
	}
	return m, fds, nil
}

func sendOne(fd int, b []byte, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err := unix.Sendmsg(fd, b, oob, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func parseRights(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	scms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, scm := range scms {
		if got, err := unix.ParseUnixRights(&scm); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Waiting lists the messages waiting for room, without taking them: a
// holder re-executing itself hands them on.
func (c *Conn) Waiting() (msgs [][]byte, fds [][]int) {
	for _, q := range c.queue {
		msgs, fds = append(msgs, q.b), append(fds, q.fds)
	}
	return msgs, fds
}
