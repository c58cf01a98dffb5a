package integration

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// zombiesOf counts pid's children that have exited and not been reaped.
func zombiesOf(pid int) int {
	n := 0
	for _, c := range childrenOf(pid) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c)); err == nil {
			if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(string(b[i:]), ") Z") {
				n++
			}
		}
	}
	return n
}

// Under load that never lets the accept queue empty (--processes 0, more
// clients than spawns a second), the worker still returns to its loop:
// handlers are reaped as they exit, counts reach the holder, and a stop is
// prompt. An unbounded accept loop left thousands of zombies and froze
// status.
func TestSustainedLoadKeepsTheWorkerResponsive(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "0", "--", "/bin/true")
	// The replies (none: /bin/true) and connect errors are not what is
	// checked here; the worker's responsiveness is.
	l := startLoad(t, in.addr(0), 24, func(string) error { return nil })
	defer l.finish()
	worker := in.workerPID()
	most := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		most = max(most, zombiesOf(worker))
	}
	if most > 500 {
		t.Errorf("up to %d unreaped handlers under load", most)
	}
	began := time.Now()
	if st := statusOf(t, in); st.Accepted == 0 {
		t.Errorf("status under load counts no accepted connection: %+v", st)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("status took %v under load", d)
	}
	began = time.Now()
	in.stop(syscall.SIGTERM, 10*time.Second)
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("stop took %v under load", d)
	}
	t.Logf("most unreaped handlers seen: %d", most)
}

// At the descriptor limit, a handler that cannot start for lack of
// descriptors pauses accepting and leaves the queue alone, as an accept
// that fails with EMFILE does: every client is served in the end. The
// reject path, which answered the whole queue at once, is for a command
// that cannot run.
//
// The limit is the worker's alone (prlimit on it): a holder at its own
// limit is another fault (it cannot take the handlers' pidfds at all).
func TestOutOfDescriptorsQueuesInsteadOfRefusing(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "0", "--", handlerBin, "sleep", "200ms")
	lim := unix.Rlimit{Cur: 48, Max: 48}
	if err := unix.Prlimit(in.workerPID(), unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatal(err)
	}
	const clients = 150
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := roundTrip(t, in.addr(0), "")
			if err != nil || out != "ok\n" {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%q %v", out, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d clients not served: %v", len(failed), clients, failed[:min(5, len(failed))])
	}
	if in.count(msgIs("cannot start a handler for lack of resources; accepting paused, the connection waits")) == 0 {
		t.Fatal("the descriptor limit was never reached: the test proves nothing")
	}
}
