// Package evloop holds the small kernel-facing pieces both sockhold loops (the
// holder's and the worker's) are built on: one epoll set, a one-shot timerfd
// and an eventfd to wake the loop from another goroutine.
package evloop

import (
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Poller is a loop's single wait point: every descriptor it cares about
// reports through one epoll set, so every event is handled in one goroutine,
// in order.
//
// The loop never blocks in epoll_wait itself: it parks in Go's own network
// poller on the epoll descriptor (readable while events are pending) and
// takes the events with a zero-timeout epoll_wait. A goroutine blocked in
// a system call makes the runtime's monitor hand its processor to another
// thread again and again (thousands of futex wake-ups and sleeps a second
// under load); one parked in the poller costs nothing.
type Poller struct {
	ep     int
	file   *os.File
	raw    syscall.RawConn
	events []unix.EpollEvent
	ready  []Ready
}

// Ready is one descriptor the kernel reported, with what it reported.
type Ready struct {
	FD       int
	Readable bool // input, or the peer hung up (a read then says so)
	Writable bool
	HangUp   bool // the peer closed both ways, or an error
}

// NewPoller creates the epoll set.
func NewPoller() (*Poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &Poller{ep: ep, events: make([]unix.EpollEvent, 64)}
	// Non-blocking, so that os.NewFile gives it to the runtime's poller.
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, err
	}
	p.file = os.NewFile(uintptr(ep), "epoll")
	if p.raw, err = p.file.SyscallConn(); err != nil {
		p.file.Close()
		return nil, err
	}
	return p, nil
}

// Add watches fd for input.
func (p *Poller) Add(fd int) error { return p.ctl(unix.EPOLL_CTL_ADD, fd, false) }

// Del stops watching fd.
func (p *Poller) Del(fd int) error {
	return unix.EpollCtl(p.ep, unix.EPOLL_CTL_DEL, fd, nil)
}

// Watch changes what an added fd is watched for. With neither, only a
// hang-up or an error is reported (the kernel always reports those).
func (p *Poller) Watch(fd int, in, out bool) error {
	ev := unix.EpollEvent{Fd: int32(fd)}
	if in {
		ev.Events |= unix.EPOLLIN
	}
	if out {
		ev.Events |= unix.EPOLLOUT
	}
	return unix.EpollCtl(p.ep, unix.EPOLL_CTL_MOD, fd, &ev)
}

func (p *Poller) ctl(op, fd int, write bool) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if write {
		ev.Events |= unix.EPOLLOUT
	}
	return unix.EpollCtl(p.ep, op, fd, &ev)
}

// Wait blocks until at least one descriptor is ready and returns them (the
// loops' deadlines are timerfds in the set). The slice is reused by the
// next call.
func (p *Poller) Wait() ([]Ready, error) {
	var n int
	var err error
	rerr := p.raw.Read(func(fd uintptr) bool {
		for {
			n, err = unix.EpollWait(int(fd), p.events, 0)
			if !errors.Is(err, unix.EINTR) {
				return n > 0 || err != nil
			}
		}
	})
	if rerr != nil {
		return nil, rerr
	}
	if err != nil {
		return nil, err
	}
	p.ready = p.ready[:0]
	for _, ev := range p.events[:n] {
		p.ready = append(p.ready, Ready{
			FD:       int(ev.Fd),
			Readable: ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0,
			Writable: ev.Events&unix.EPOLLOUT != 0,
			HangUp:   ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0,
		})
	}
	return p.ready, nil
}

// Close closes the epoll set.
func (p *Poller) Close() { p.file.Close() }

// Timer is a one-shot timerfd.
type Timer struct {
	FD    int
	armed bool
	at    time.Time
}

// NewTimer creates a disarmed timer.
func NewTimer() (*Timer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &Timer{FD: fd}, nil
}

// Arm makes the timer fire after d, unless it is already set to fire sooner:
// a stream of other events must not keep pushing a deadline into the future.
func (t *Timer) Arm(d time.Duration) {
	if d <= 0 {
		d = time.Microsecond
	}
	at := time.Now().Add(d)
	if t.armed && !t.at.After(at) {
		return
	}
	t.Set(d)
}

// Set makes the timer fire after d, whatever it was set to before.
func (t *Timer) Set(d time.Duration) {
	if d <= 0 {
		d = time.Microsecond
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	unix.TimerfdSettime(t.FD, 0, &spec, nil)
	t.armed, t.at = true, time.Now().Add(d)
}

// Disarm stops the timer.
func (t *Timer) Disarm() {
	if !t.armed {
		return
	}
	unix.TimerfdSettime(t.FD, 0, &unix.ItimerSpec{}, nil)
	t.armed = false
}

// Fired consumes the expiration count after the poller reported the timer.
func (t *Timer) Fired() {
	var buf [8]byte
	unix.Read(t.FD, buf[:])
	t.armed = false
}

// Waker lets other goroutines (signal handlers) interrupt the wait.
type Waker struct{ FD int }

// NewWaker creates the eventfd.
func NewWaker() (*Waker, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &Waker{FD: fd}, nil
}

// Wake makes the loop's next (or current) wait return.
func (w *Waker) Wake() {
	one := [8]byte{1}
	unix.Write(w.FD, one[:])
}

// Drain resets the eventfd after the poller reported it.
func (w *Waker) Drain() {
	var buf [8]byte
	unix.Read(w.FD, buf[:])
}
