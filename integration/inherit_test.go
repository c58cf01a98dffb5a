package integration

import (
	"net"
	"os"
	"strings"
	"testing"
)

// inheritedListener makes a listening socket to pass to sockhold as fd 3.
func inheritedListener(t *testing.T) (*os.File, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // f is a duplicate: the socket stays open
	t.Cleanup(func() { f.Close() })
	return f, addr
}

// systemd socket activation: LISTEN_PID (equal to sockhold's PID, which the
// shell keeps through exec), LISTEN_FDS and LISTEN_FDNAMES. With no PORT and
// no --listen, the passed sockets are used; the variables and the original
// descriptor do not reach the handler.
func TestSystemdSocketsAreUsed(t *testing.T) {
	f, addr := inheritedListener(t)
	in := startWith(t, startOpts{
		extraFiles: []*os.File{f},
		argv0:      `export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=mirror; exec "$@"`,
	}, "--", handlerBin, "env")
	r := in.waitFor(0, msgIs("listening"))
	if r.str("addr") != addr || r.str("name") != "mirror" || r.str("inherited") != "true" {
		t.Fatalf("listening record %v, want %s named mirror", r, addr)
	}
	env := parseEnv(mustRoundTrip(t, addr, ""))
	if env["PROTO"] != "TCP" {
		t.Fatalf("handler env %v", env)
	}
	for k := range env {
		if strings.HasPrefix(k, "LEAK") {
			t.Errorf("leaked to handler: %s", k)
		}
	}
}

// fd://NAME picks a passed socket by its LISTEN_FDNAMES name; fd://N by
// number without any LISTEN_ variables. The handler still gets 3 fds only.
func TestListenFDByNameAndNumber(t *testing.T) {
	f, addr := inheritedListener(t)
	in := startWith(t, startOpts{
		extraFiles: []*os.File{f},
		argv0:      `export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web; exec "$@"`,
	}, "--listen", "fd://web", "--", fdsBin)
	if out := mustRoundTrip(t, in.addr(0), ""); strings.Count(out, "\n") != 3 {
		t.Fatalf("fd://web: handler fds:\n%s", out)
	}

	g, addr2 := inheritedListener(t)
	in2 := startWith(t, startOpts{extraFiles: []*os.File{g}}, "--listen", "fd://3", "--", fdsBin)
	if in2.addr(0) != addr2 || addr == addr2 {
		t.Fatalf("fd://3 listening on %s, want %s", in2.addr(0), addr2)
	}
	if out := mustRoundTrip(t, addr2, ""); strings.Count(out, "\n") != 3 {
		t.Fatalf("fd://3: handler fds:\n%s", out)
	}
}

// LISTEN_ variables meant for another process are ignored, not obeyed.
func TestSystemdVariablesForAnotherPIDIgnored(t *testing.T) {
	code, lines := runToExitEnv(t, []string{"LISTEN_PID=1", "LISTEN_FDS=1"}, "--", "echo")
	if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], "nothing to listen on") {
		t.Fatalf("exit %d, %q", code, lines)
	}
}
