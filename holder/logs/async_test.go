package logs

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// stalledWriter blocks every write until released, as a pipe whose reader
// has stopped reading does.
type stalledWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *stalledWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// A stalled reader never blocks a logger, what waits is bounded in bytes
// as well as lines, Flush gives up at its timeout, and once the reader
// moves the lines kept arrive, then a count of those dropped.
func TestStalledStderrNeverBlocksAndIsBounded(t *testing.T) {
	w := &stalledWriter{release: make(chan struct{})}
	a := newAsync(w, 100, 4096)
	line := strings.Repeat("x", 1000) + "\n"
	start := time.Now()
	for i := 0; i < 1000; i++ {
		a.Write([]byte(line))
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("1000 writes to a stalled stderr took %v", d)
	}
	if b := a.bytes.Load(); b > 4096+int64(len(line)) {
		t.Fatalf("%d bytes queued, bound 4096", b)
	}
	start = time.Now()
	a.flush(50 * time.Millisecond)
	if d := time.Since(start); d < 50*time.Millisecond || d > time.Second {
		t.Fatalf("flush of a stalled stderr returned after %v, want its 50ms timeout", d)
	}
	close(w.release)
	a.flush(5 * time.Second)
	a.Write([]byte("after\n"))
	a.flush(5 * time.Second)
	out := w.String()
	if kept := strings.Count(out, line); kept < 1 || kept > 5 {
		t.Fatalf("%d lines kept, want the few that fit 4096 bytes", kept)
	}
	if !strings.Contains(out, "log lines dropped") || !strings.HasSuffix(out, "after\n") {
		t.Fatalf("no count of the dropped lines, or the last line lost:\n%.300s", out)
	}
	if a.pending.Load() != 0 || a.bytes.Load() != 0 {
		t.Fatalf("accounting off: %d pending, %d bytes", a.pending.Load(), a.bytes.Load())
	}
}
