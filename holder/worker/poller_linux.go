package worker

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// poller is the worker's single wait point: listeners, handler pidfds, the
// timer, the wake-up eventfd and the holder link all report through one
// epoll set, so every event is handled in one goroutine, in order.
type poller struct {
	ep     int
	events []unix.EpollEvent
	ready  []int
}

func newPoller() (*poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &poller{ep: ep, events: make([]unix.EpollEvent, 64)}, nil
}

func (p *poller) add(fd int) error {
	return unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
}

func (p *poller) del(fd int) error {
	return unix.EpollCtl(p.ep, unix.EPOLL_CTL_DEL, fd, nil)
}

// wait blocks until at least one descriptor is ready and returns them.
func (p *poller) wait() ([]int, error) {
	for {
		n, err := unix.EpollWait(p.ep, p.events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		p.ready = p.ready[:0]
		for _, ev := range p.events[:n] {
			p.ready = append(p.ready, int(ev.Fd))
		}
		return p.ready, nil
	}
}

// timer is a one-shot timerfd: the load re-check and the accept pause.
type timer struct {
	fd    int
	armed bool
	at    time.Time
}

func newTimer() (*timer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &timer{fd: fd}, nil
}

// arm makes the timer fire after d, unless it is already set to fire sooner:
// a stream of other events must not keep pushing a re-check into the future.
func (t *timer) arm(d time.Duration) {
	if d <= 0 {
		d = time.Millisecond
	}
	at := time.Now().Add(d)
	if t.armed && !t.at.After(at) {
		return
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	unix.TimerfdSettime(t.fd, 0, &spec, nil)
	t.armed, t.at = true, at
}

func (t *timer) disarm() {
	if !t.armed {
		return
	}
	unix.TimerfdSettime(t.fd, 0, &unix.ItimerSpec{}, nil)
	t.armed = false
}

// fired consumes the expiration count after the poller reported the timer.
func (t *timer) fired() {
	var buf [8]byte
	unix.Read(t.fd, buf[:])
	t.armed = false
}

// waker lets other goroutines (the signal handler) interrupt the wait.
type waker struct{ fd int }

func newWaker() (*waker, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &waker{fd: fd}, nil
}

func (w *waker) wake() {
	one := [8]byte{1}
	unix.Write(w.fd, one[:])
}

func (w *waker) drain() {
	var buf [8]byte
	unix.Read(w.fd, buf[:])
}
