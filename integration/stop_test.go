package integration

import (
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startedPIDs returns the PIDs of every handler START logged.
func startedPIDs(in *instance) []int {
	var pids []int
	for _, r := range in.all(msgIs("START")) {
		pids = append(pids, r.int("pid"))
	}
	return pids
}

func assertGone(t *testing.T, what string, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("%s %d still running after sockhold exited", what, pid)
			signalPID(pid, syscall.SIGKILL)
		}
	}
}

// SIGTERM with handlers in flight (--on-stop wait, the default): no new
// connection is taken, the running handlers finish and their clients get
// the whole answer, sockhold exits 0 and leaves no process behind.
func TestStopWaitsForHandlers(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "3", "--", handlerBin, "sleep", "700ms")
	var wg sync.WaitGroup
	replies := make(chan string, 3)
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", in.addr(0))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			b, _ := io.ReadAll(c)
			replies <- string(b)
		}()
	}
	in.waitForN(5*time.Second, 3, msgIs("START"))
	worker := in.workerPID()
	if code := in.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	wg.Wait()
	close(replies)
	for r := range replies {
		if r != "ok\n" {
			t.Errorf("in-flight client got %q", r)
		}
	}
	assertGone(t, "handler", startedPIDs(in)...)
	assertGone(t, "worker", worker)
	if n := in.count(func(r record) bool { return r.str("msg") == "EXIT" && r.str("status") == "0" }); n != 3 {
		t.Errorf("%d clean EXIT records, want 3", n)
	}
}

// --on-stop term: handlers get SIGTERM at once.
func TestStopTermSignalsHandlers(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "2", "--on-stop", "term", "--", handlerBin, "hold")
	a, b := dialReady(t, in.addr(0)), dialReady(t, in.addr(0))
	defer a.Close()
	defer b.Close()
	if code := in.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if n := in.count(func(r record) bool { return r.str("msg") == "EXIT" && r.str("signal") == "SIGTERM" }); n != 2 {
		t.Errorf("%d handlers ended by SIGTERM, want 2:\n%s", n, in.dump())
	}
	assertGone(t, "handler", startedPIDs(in)...)
}

// --on-stop wait with a deadline: a handler that ignores SIGTERM is killed
// after --stop-timeout and --kill-grace; sockhold still stops cleanly.
func TestStopTimeoutEscalatesToKill(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--stop-timeout", "200ms", "--kill-grace", "200ms",
		"--", handlerBin, "ignore-term")
	c := dialReady(t, in.addr(0))
	defer c.Close()
	begin := time.Now()
	if code := in.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if d := time.Since(begin); d < 400*time.Millisecond {
		t.Errorf("stopped after %v, before --stop-timeout + --kill-grace", d)
	}
	if n := in.count(func(r record) bool { return r.str("msg") == "EXIT" && r.str("signal") == "SIGKILL" }); n != 1 {
		t.Errorf("handler not killed:\n%s", in.dump())
	}
	assertGone(t, "handler", startedPIDs(in)...)
}

// --on-stop leave: sockhold exits at once and the handler keeps serving its
// client; it is left on purpose, so the test ends it by PID.
func TestStopLeaveKeepsHandlersRunning(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--on-stop", "leave", "--", handlerBin, "hold")
	c := dialReady(t, in.addr(0))
	defer c.Close()
	// The worker logs through a queue of its own: START may come after
	// the handler's "ready".
	in.waitFor(5*time.Second, msgIs("START"))
	pids := startedPIDs(in)
	if code := in.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if !processAlive(pids[0]) {
		t.Fatal("handler did not survive --on-stop leave")
	}
	c.Write([]byte("x"))
	c.(*net.TCPConn).CloseWrite()
	buf := make([]byte, 4)
	if n, _ := readAll(c, buf); string(buf[:n]) != "bye\n" {
		t.Fatalf("left handler did not keep serving: %q", buf[:n])
	}
	signalPID(pids[0], syscall.SIGKILL)
}

// A second SIGTERM during a waiting stop hurries it: handlers get SIGTERM.
func TestSecondSignalHurriesStop(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--stop-timeout", "0", "--", handlerBin, "hold")
	c := dialReady(t, in.addr(0))
	defer c.Close()
	in.cmd.Process.Signal(syscall.SIGTERM)
	in.waitFor(5*time.Second, msgIs("waiting for handlers to finish"))
	if code := in.stop(syscall.SIGINT, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if n := in.count(func(r record) bool { return r.str("msg") == "EXIT" && r.str("signal") == "SIGTERM" }); n != 1 {
		t.Errorf("handler not terminated by the second signal:\n%s", in.dump())
	}
	assertGone(t, "handler", startedPIDs(in)...)
}
