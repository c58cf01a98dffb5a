package integration

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// installSockhold puts a copy of build src in a directory of its own; the
// holder is started from there and upgrades pick up whatever is there then.
func installSockhold(t *testing.T, src string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "sockhold")
	copyFile(t, src, path, 0o755)
	return path
}

// swapBinary replaces the binary at path atomically, as a deploy does.
func swapBinary(t *testing.T, path, src string) { copyFile(t, src, path, 0o755) }

// ctl runs a sockhold client command against in's control socket.
func ctl(t testing.TB, in *instance, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(sockholdBin, append(args, "--control", in.ctl)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// load is a closed-loop client population: each client connects, reads to
// EOF, checks the reply and connects again, until stopped.
type load struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	cond   *sync.Cond
	served int
	errs   []string
	seen   map[string]int // reply -> count
	lat    []sample
}

// sample is one connection: when it started and ended.
type sample struct{ start, end time.Time }

func startLoad(t testing.TB, addr string, clients int, check func(string) error) *load {
	return startLoadWith(t, clients, func() func() (string, error) {
		return func() (string, error) { return oneRequest(addr) }
	}, check)
}

// startLoadWith runs clients closed-loop clients, each making requests with
// a function of its own from newClient (an HTTP client keeping its
// connection alive, say).
func startLoadWith(t testing.TB, clients int, newClient func() func() (string, error), check func(string) error) *load {
	l := &load{stop: make(chan struct{}), seen: map[string]int{}}
	l.cond = sync.NewCond(&l.mu)
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		request := newClient()
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				t0 := time.Now()
				reply, err := request()
				t1 := time.Now()
				if err == nil {
					err = check(reply)
				}
				l.mu.Lock()
				if err != nil {
					l.errs = append(l.errs, err.Error())
				} else {
					l.served++
					l.seen[reply]++
					l.lat = append(l.lat, sample{t0, t1})
				}
				l.cond.Broadcast()
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func oneRequest(addr string) (string, error) {
	c, err := net.DialTimeout(network(addr), addr, 10*time.Second)
	if err != nil {
		return "", fmt.Errorf("connect: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("read: %v", err)
	}
	return string(b), nil
}

// replies is the set of distinct replies seen so far.
func (l *load) replies() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]bool{}
	for r := range l.seen {
		out[r] = true
	}
	return out
}

// waitNewReplies blocks until n distinct replies not in before have been
// seen (n server processes answering since then, when replies name them).
func (l *load) waitNewReplies(t testing.TB, before map[string]bool, n int, timeout time.Duration) {
	t.Helper()
	fresh := func() int {
		k := 0
		for r := range l.seen {
			if !before[r] {
				k++
			}
		}
		return k
	}
	l.waitUntil(t, timeout, func() bool { return fresh() >= n }, func() string {
		return fmt.Sprintf("%d of %d new server processes answered within %v", fresh(), n, timeout)
	})
}

// waitSeen blocks until a reply equal to want has been seen at least once.
func (l *load) waitSeen(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	l.waitUntil(t, timeout, func() bool { return l.seen[want] > 0 }, func() string {
		return fmt.Sprintf("reply %q not seen within %v (seen %v, errors %v)", want, timeout, l.seen, l.errs)
	})
}

// waitServed blocks until n more requests have been served.
func (l *load) waitServed(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	l.mu.Lock()
	target := l.served + n
	l.mu.Unlock()
	l.waitUntil(t, timeout, func() bool { return l.served >= target }, func() string {
		return fmt.Sprintf("load stalled: %d of %d more served within %v; errors %v", l.served-target+n, n, timeout, l.errs)
	})
}

// waitUntil blocks, woken by each reply, until done holds (called with
// l.mu held) or timeout passes, when it fails the test with failure().
func (l *load) waitUntil(t testing.TB, timeout time.Duration, done func() bool, failure func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wake := time.AfterFunc(timeout, func() { l.mu.Lock(); l.cond.Broadcast(); l.mu.Unlock() })
	defer wake.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for !done() {
		if time.Now().After(deadline) {
			t.Fatal(failure())
		}
		l.cond.Wait()
	}
}

// finish stops the clients and returns how many were served and the errors.
func (l *load) finish() (int, []string) {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.served, l.errs
}
