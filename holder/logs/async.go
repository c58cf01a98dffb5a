package logs

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// stderr is what every sockhold logger writes to: a queue in front of fd 2
// written by a goroutine of its own, so that a log reader that stalls (a
// shipper restarting, a full pipe) never stalls the holder's or a worker's
// loop. What does not fit the queue (maxLines records or maxBytes bytes:
// captured app lines can be 64 KiB each) is dropped and counted, and the
// count is logged once stderr moves again. fd 2 itself is left blocking:
// its open file is shared with every handler and app.
var stderr = newAsync(os.Stderr, 4096, 1<<20)

type async struct {
	out      io.Writer
	ch       chan []byte
	maxBytes int64
	bytes    atomic.Int64 // queued and not yet written
	pending  atomic.Int64 // records queued and not yet written
	dropped  atomic.Int64
}

func newAsync(out io.Writer, maxLines int, maxBytes int64) *async {
	a := &async{out: out, ch: make(chan []byte, maxLines), maxBytes: maxBytes}
	go a.run()
	return a
}

// Write queues one record (slog writes each with a single call).
func (a *async) Write(p []byte) (int, error) {
	if a.bytes.Add(int64(len(p))) > a.maxBytes {
		a.bytes.Add(-int64(len(p)))
		a.dropped.Add(1)
		return len(p), nil
	}
	a.pending.Add(1)
	select {
	case a.ch <- append([]byte(nil), p...):
	default:
		a.pending.Add(-1)
		a.bytes.Add(-int64(len(p)))
		a.dropped.Add(1)
	}
	return len(p), nil
}

func (a *async) run() {
	for b := range a.ch {
		if n := a.dropped.Swap(0); n > 0 {
			fmt.Fprintf(a.out, "sockhold: %d log lines dropped: nothing was reading stderr\n", n)
		}
		a.out.Write(b)
		a.bytes.Add(-int64(len(b)))
		a.pending.Add(-1)
	}
}

// Flush waits, at most timeout, until every queued line is written: before
// a process exits or re-executes itself. It leaves nothing behind when it
// gives up (the process may go on).
func Flush(timeout time.Duration) { stderr.flush(timeout) }

func (a *async) flush(timeout time.Duration) {
	for deadline := time.Now().Add(timeout); a.pending.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(200 * time.Microsecond)
	}
}
