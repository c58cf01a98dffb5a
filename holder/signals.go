package holder

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/sockhold/sockhold/holder/evloop"
)

// signalQueue takes signals from Go's runtime and wakes the loop; the loop
// handles them in order. SIGPIPE is caught (never ignored: an ignored
// disposition would survive exec into every handler) and dropped, so a
// log write to a stderr whose reader has gone returns EPIPE instead of
// killing the process that holds every socket.
type signalQueue struct {
	c    chan os.Signal
	mu   sync.Mutex
	q    []syscall.Signal
	wake *evloop.Waker
	done chan struct{}
}

// holderSignals are the signals the holder acts on; forward adds those
// passed on to served apps.
func holderSignals(forward []int) []os.Signal {
	sigs := []os.Signal{syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE}
	for _, s := range forward {
		sigs = append(sigs, syscall.Signal(s))
	}
	return sigs
}

// newSignalQueue starts taking signals from c (already Notify'd for sigs,
// or nil to make one now).
func newSignalQueue(c chan os.Signal, sigs []os.Signal, wake *evloop.Waker) *signalQueue {
	if c == nil {
		c = make(chan os.Signal, 64)
	}
	signal.Notify(c, sigs...)
	q := &signalQueue{c: c, wake: wake, done: make(chan struct{})}
	go q.run()
	return q
}

func (q *signalQueue) run() {
	defer close(q.done)
	for s := range q.c {
		sig := s.(syscall.Signal)
		if sig == syscall.SIGPIPE {
			continue
		}
		q.mu.Lock()
		q.q = append(q.q, sig)
		q.mu.Unlock()
		q.wake.Wake()
	}
}

// take returns the signals queued since the last call, in order.
func (q *signalQueue) take() []syscall.Signal {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.q
	q.q = nil
	return s
}

func sigOf(n int) syscall.Signal { return syscall.Signal(n) }

// onSignal: SIGCHLD is the shell's (reaping); the rest go to the core.
func (h *Holder) onSignal(s syscall.Signal) {
	if s == syscall.SIGCHLD {
		h.reapChildren()
		return
	}
	h.feed(coreSignal(s))
}

// push queues a signal as if it had just arrived.
func (q *signalQueue) push(s syscall.Signal) {
	q.mu.Lock()
	q.q = append(q.q, s)
	q.mu.Unlock()
	q.wake.Wake()
}
