package integration

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeLoadavg(t *testing.T, path, one string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(one+" 0.00 0.00 1/100 4242\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// --load-average: the first connection is always served; further ones wait
// while the load is at or above the limit, and are let in when it drops even
// though no handler exited, because the gate is re-checked on a timer.
func TestLoadGateRechecksOnTimer(t *testing.T) {
	load := filepath.Join(t.TempDir(), "loadavg")
	writeLoadavg(t, load, "5.00")
	in := startWith(t, startOpts{env: []string{"SOCKHOLD_TEST_LOADAVG=" + load}},
		"--listen", "tcp://127.0.0.1:0", "--processes", "0", "--load-average", "1",
		"--load-recheck", "100ms", "--", handlerBin, "hold")

	first := dialReady(t, in.addr(0))
	defer first.Close()

	second, err := net.Dial("tcp", in.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	// The worker logs each time it looks at the closed gate again; three
	// looks prove it kept re-checking without serving the second client.
	closed := func(r record) bool { return r.str("msg") == "load gate closed" }
	in.waitForN(10*time.Second, in.count(closed)+3, closed)
	if n := in.count(msgIs("START")); n != 1 {
		t.Fatalf("%d handlers started while load was 5.00, want 1", n)
	}

	writeLoadavg(t, load, "0.50")
	buf := make([]byte, 6)
	if _, err := readAll(second, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("second client after load dropped: %q %v", buf, err)
	}
	// The first handler is still running: the timer, not a child exit,
	// let the second one in.
	if n := in.count(msgIs("EXIT")); n != 0 {
		t.Fatalf("a handler exited (%d); the test proves nothing", n)
	}
}

func dialReady(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial(network(addr), addr)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := readAll(c, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("%s: %q %v", addr, buf, err)
	}
	c.SetDeadline(time.Time{})
	return c
}
