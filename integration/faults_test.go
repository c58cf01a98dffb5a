package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatal(err)
	}
}

// The handler binary disappears after start: each client gets the message
// and EOF at once, every failure is logged once, the worker's descriptor
// count does not grow over 1000 failures, and once the binary is back the
// next client is served.
func TestSpawnFailureClosesAndRecovers(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "handler")
	copyFile(t, handlerBin, bin, 0o755)
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "2",
		"--reject-message", "unavailable", "--", bin, "echo", "served")
	if got := mustRoundTrip(t, in.addr(0), ""); got != "served\n" {
		t.Fatalf("before removal: %q", got)
	}
	worker := in.workerPID()
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if got := mustRoundTrip(t, in.addr(0), ""); got != "unavailable\n" {
		t.Fatalf("with the binary gone: %q", got)
	}
	if d := time.Since(begin); d > time.Second {
		t.Fatalf("failed connection took %v to close", d)
	}
	fdsBefore := fdCount(t, worker)
	const failures = 1000
	for i := 0; i < failures; i++ {
		if got := mustRoundTrip(t, in.addr(0), ""); got != "unavailable\n" {
			t.Fatalf("failure %d: read %q", i, got)
		}
	}
	// The client reads EOF once the worker has shut down its side; the
	// worker closes the descriptor an instant later. A leak would keep
	// hundreds: look until the count is back, for at most two seconds.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		fdsAfter := fdCount(t, worker)
		if fdsAfter <= fdsBefore {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker descriptors grew from %d to %d over %d failures", fdsBefore, fdsAfter, failures)
		}
	}
	fails := in.waitForN(10*time.Second, failures+1, msgIs("FAIL"))
	spawnFailures := 0
	for _, r := range fails {
		if r.str("reason") == "spawn failed" {
			spawnFailures++
		}
	}
	// Backoff: far fewer exec attempts than connections, yet more than one.
	t.Logf("%d connections failed, %d exec attempts (the rest answered during backoff)", len(fails), spawnFailures)
	if spawnFailures < 1 || spawnFailures > len(fails)/2 {
		t.Fatalf("%d exec attempts for %d failed connections: no backoff", spawnFailures, len(fails))
	}

	copyFile(t, handlerBin, bin, 0o755)
	// A client that arrives within the advertised backoff still gets the
	// message; one that comes back after it is served.
	var last record
	for _, r := range fails {
		if r.str("reason") == "spawn failed" {
			last = r
		}
	}
	retry, _ := time.ParseDuration(last.str("retry_in"))
	if retry <= 0 || retry > time.Second {
		t.Fatalf("advertised backoff %q, want (0, 1s]", last.str("retry_in"))
	}
	time.Sleep(retry)
	if got := mustRoundTrip(t, in.addr(0), ""); got != "served\n" {
		t.Fatalf("binary restored and backoff (%v) over, still %q", retry, got)
	}
	if worker != in.workerPID() || !processAlive(worker) {
		t.Fatal("the worker was replaced; spawn failures must not kill it")
	}
}

// listenInode finds the inode of the TCP listener on port in /proc/net.
func listenInode(t *testing.T, port int) string {
	t.Helper()
	hex := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && strings.HasSuffix(fields[1], hex) && fields[3] == "0A" {
				fh.Close()
				return fields[9]
			}
		}
		fh.Close()
	}
	t.Fatalf("no listener on port %d", port)
	return ""
}

// listenerExists reports whether a TCP listener with this inode is open.
func listenerExists(inode string) bool {
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			fields := strings.Fields(line)
			if len(fields) > 9 && fields[3] == "0A" && fields[9] == inode {
				return true
			}
		}
	}
	return false
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// SIGKILL the worker: the holder starts another within a second, clients
// that connect in the gap wait in the backlog and are served, none is
// refused, and the listening socket is the very same one.
func TestWorkerKilledIsReplaced(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "4", "--", handlerBin, "echo", "hello")
	inode := listenInode(t, portOf(in.addr(0)))
	old := in.workerPID()
	killed := time.Now()
	if err := signalPID(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Clients in the gap: all of them connect before the new worker is up.
	const gap = 20
	var wg sync.WaitGroup
	results := make(chan string, gap)
	for i := 0; i < gap; i++ {
		c, err := net.Dial("tcp", in.addr(0))
		if err != nil {
			t.Fatalf("client %d in the gap refused: %v", i, err)
		}
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil {
				results <- err.Error()
				return
			}
			results <- string(b)
		}(c)
	}
	r := in.waitFor(5*time.Second, func(r record) bool { return r.str("msg") == "serving" && r.int("worker") != old })
	took := time.Since(killed)
	wg.Wait()
	close(results)
	for got := range results {
		if got != "hello\n" {
			t.Errorf("client in the gap got %q", got)
		}
	}
	t.Logf("new worker %d serving %v after SIGKILL", r.int("worker"), took)
	if took > time.Second {
		t.Errorf("new worker took %v", took)
	}
	if got := listenInode(t, portOf(in.addr(0))); got != inode {
		t.Errorf("listener inode changed from %s to %s", inode, got)
	}
}

// Handlers of a killed worker are reaped by the holder and still count
// against --processes in the next worker: with the one slot taken by an
// orphan, the next client waits until the orphan exits.
func TestOrphanedHandlersStillCounted(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "1", "--", handlerBin, "hold")
	held := dialReady(t, in.addr(0))
	defer held.Close()
	old := in.workerPID()
	signalPID(old, syscall.SIGKILL)
	in.waitFor(5*time.Second, func(r record) bool {
		return r.str("msg") == "serving" && r.int("worker") != old
	})
	if r := in.all(msgIs("worker started")); r[len(r)-1].int("inherited_handlers") != 1 {
		t.Fatalf("new worker did not inherit the live handler: %v", r[len(r)-1])
	}
	waiting, err := net.Dial("tcp", in.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	// The new worker must count the orphan and close its gate (its own
	// debug "queue" record; the old worker logged one too), leaving the
	// client waiting rather than starting a second handler.
	in.waitFor(5*time.Second, func(r record) bool {
		return r.str("msg") == "queue" && r.str("why") == "full" && r.int("worker_pid") != old
	})
	// No handler for the waiting client yet. (Count it by its address: the
	// killed worker may never have logged START for the held one, whose
	// handler can answer before its parent writes the line.)
	peer := waiting.LocalAddr().String()
	if n := in.count(func(r record) bool { return r.str("msg") == "START" && r.str("peer") == peer }); n != 0 {
		t.Fatalf("the waiting client got a handler with the only slot held by an orphan")
	}
	held.Close()
	in.waitFor(5*time.Second, func(r record) bool { return r.str("msg") == "EXIT" && r.str("reaped_by") == "holder" })
	buf := make([]byte, 6)
	if _, err := readAll(waiting, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("waiting client: %q %v", buf, err)
	}
}

// If the holder itself is killed, the worker notices (its link closes) and
// stops taking work rather than serving on unmanaged, with nobody to reap
// or count its handlers.
func TestWorkerStopsWhenHolderDies(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "echo", "hi")
	worker := in.workerPID()
	in.cmd.Process.Kill()
	in.waitFor(5*time.Second, msgIs("holder is gone; worker stopping"))
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(worker) {
		if time.Now().After(deadline) {
			t.Fatal("worker still running 5 s after the holder died")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// If the holder dies in serve mode, the worker stops its copies itself
// (stop-signal, --drain-timeout, SIGKILL) before exiting: an app left
// running would hold the port with nobody to manage it, and a restarted
// sockhold could not bind it.
func TestServeAppsStopWhenHolderDies(t *testing.T) {
	for _, c := range []struct {
		name  string
		extra []string
	}{{"exits on SIGTERM", nil}, {"ignores SIGTERM", []string{"-ignore-term"}}} {
		t.Run(c.name, func(t *testing.T) {
			in := start(t, append([]string{"serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--drain-timeout", "1s",
				"--", appBin, "-dialect", "systemd"}, c.extra...)...)
			app := in.waitFor(5*time.Second, msgIs("app ready")).int("app_pid")
			worker := in.workerPID()
			inode := listenInode(t, portOf(in.addr(0)))
			t.Cleanup(func() {
				// Should the test fail, leave nothing running. (Only then:
				// after a pass these PIDs are gone and may be reused.)
				if t.Failed() {
					signalPID(app, syscall.SIGKILL)
					signalPID(worker, syscall.SIGKILL)
				}
			})
			killed := time.Now()
			in.cmd.Process.Kill()
			in.waitFor(5*time.Second, msgIs("holder is gone; worker stopping"))
			for deadline := time.Now().Add(5 * time.Second); processAlive(app) || processAlive(worker); {
				if time.Now().After(deadline) {
					t.Fatalf("5 s after the holder died: app alive %v, worker alive %v", processAlive(app), processAlive(worker))
				}
				time.Sleep(10 * time.Millisecond)
			}
			if c.extra != nil && time.Since(killed) < time.Second {
				t.Fatalf("an app ignoring SIGTERM was gone after %v, before --drain-timeout", time.Since(killed))
			}
			// The listening socket itself goes. (Binding the port again
			// would race other tests for it as an ephemeral port.) A Go
			// process's leader shows as a zombie while its other threads,
			// which share its descriptors, are still exiting: so look
			// until it is gone.
			for deadline := time.Now().Add(5 * time.Second); listenerExists(inode); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the listening socket (inode %s) is still open 5 s after its processes exited", inode)
				}
			}
		})
	}
}
