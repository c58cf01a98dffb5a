package logs

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// stderr is what every sockhold logger writes to: a queue in front of fd 2
// written by a goroutine of its own, so that a log reader that stalls (a
// shipper restarting, a full pipe) never stalls the holder's or a worker's
// loop. What does not fit the queue is dropped and counted, and the count
// is logged once stderr moves again. fd 2 itself is left blocking: its
// open file is shared with every handler and app.
var stderr = newAsync(4096)

type async struct {
	ch      chan []byte
	dropped atomic.Int64
	idle    sync.WaitGroup // one per line queued and not yet written
}

func newAsync(depth int) *async {
	a := &async{ch: make(chan []byte, depth)}
	go a.run()
	return a
}

// Write queues one record (slog writes each with a single call).
func (a *async) Write(p []byte) (int, error) {
	b := append([]byte(nil), p...)
	a.idle.Add(1)
	select {
	case a.ch <- b:
	default:
		a.idle.Done()
		a.dropped.Add(1)
	}
	return len(p), nil
}

func (a *async) run() {
	for b := range a.ch {
		if n := a.dropped.Swap(0); n > 0 {
			fmt.Fprintf(os.Stderr, "sockhold: %d log lines dropped: nothing was reading stderr\n", n)
		}
		os.Stderr.Write(b)
		a.idle.Done()
	}
}

// Flush waits, at most timeout, until every queued line is written: before
// a process exits or re-executes itself.
func Flush(timeout time.Duration) {
	done := make(chan struct{})
	go func() { stderr.idle.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}
