package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// socket-burst-dampener's own example: unlimited processes, a load gate, and
// three sequential connections each answered by a fresh echo.
func TestDampenerEcho(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "0", "--load-average", "1", "--", "echo", "hello")
	for i := 0; i < 3; i++ {
		if got := mustRoundTrip(t, in.addr(0), ""); got != "hello\n" {
			t.Fatalf("connection %d read %q", i, got)
		}
	}
	in.waitForN(5*time.Second, 3, msgIs("EXIT"))
	if code := in.stop(15, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
}

// The PORT form works as socket-burst-dampener's does: every address,
// dual-stack, so IPv4 and IPv6 clients both reach it; an IPv4 client is
// described as plain IPv4.
func TestPortFormDualStack(t *testing.T) {
	port := freePort(t)
	in := start(t, strconv.Itoa(port), "--processes", "2", "--", handlerBin, "env")
	v4 := parseEnv(mustRoundTrip(t, fmt.Sprintf("127.0.0.1:%d", port), ""))
	if v4["PROTO"] != "TCP" || v4["TCPREMOTEIP"] != "127.0.0.1" || v4["TCPLOCALIP"] != "127.0.0.1" || v4["TCPLOCALPORT"] != strconv.Itoa(port) {
		t.Fatalf("IPv4 client via dual-stack socket: %v", v4)
	}
	v6 := parseEnv(mustRoundTrip(t, fmt.Sprintf("[::1]:%d", port), ""))
	if v6["TCPREMOTEIP"] != "::1" || v6["TCPLOCALIP"] != "::1" {
		t.Fatalf("IPv6 client: %v", v6)
	}
	if len(in.addrs) != 1 || !strings.HasPrefix(in.addrs[0], "[::]:") {
		t.Fatalf("want one dual-stack socket, got %v", in.addrs)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func parseEnv(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		} else if line != "" {
			m[line] = ""
		}
	}
	return m
}

// Environment values for IPv4, IPv6 and a unix socket, checked against what
// the client itself sees.
func TestHandlerEnvironment(t *testing.T) {
	sock := t.TempDir() + "/env.sock"
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--listen", "tcp6://[::1]:0", "--listen", "unix://"+sock,
		"--processes", "3", "--", handlerBin, "env")
	for _, addr := range in.addrs[:2] {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, _ := readAll(c, buf)
		local := c.LocalAddr().(*net.TCPAddr)
		remote := c.RemoteAddr().(*net.TCPAddr)
		c.Close()
		env := parseEnv(string(buf[:n]))
		want := map[string]string{
			"PROTO":         "TCP",
			"TCPREMOTEIP":   local.IP.String(),
			"TCPREMOTEPORT": strconv.Itoa(local.Port),
			"TCPLOCALIP":    remote.IP.String(),
			"TCPLOCALPORT":  strconv.Itoa(remote.Port),
			"REMOTE_ADDR":   local.IP.String(),
			"REMOTE_PORT":   strconv.Itoa(local.Port),
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s: %s=%q, want %q (all: %v)", addr, k, env[k], v, env)
			}
		}
		for k := range env {
			if strings.HasPrefix(k, "LEAK") {
				t.Errorf("internal variable leaked to handler: %s", k)
			}
		}
		if env["SOCKHOLD_VERSION"] != "it-1" || env["SOCKHOLD_GENERATION"] != "1" {
			t.Errorf("SOCKHOLD_VERSION=%q SOCKHOLD_GENERATION=%q, want it-1 and 1", env["SOCKHOLD_VERSION"], env["SOCKHOLD_GENERATION"])
		}
	}
	env := parseEnv(mustRoundTrip(t, sock, ""))
	want := map[string]string{
		"PROTO":          "UNIX",
		"UNIXREMOTEEUID": strconv.Itoa(os.Geteuid()),
		"UNIXREMOTEEGID": strconv.Itoa(os.Getegid()),
		"UNIXREMOTEPID":  strconv.Itoa(os.Getpid()),
		"UNIXLOCALPATH":  sock,
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("unix: %s=%q, want %q (all: %v)", k, env[k], v, env)
		}
	}
	if _, ok := env["TCPREMOTEIP"]; ok {
		t.Errorf("unix handler got TCP variables: %v", env)
	}
}

func readAll(c net.Conn, buf []byte) (int, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// fd hygiene: the handler has exactly fds 0, 1 and 2; 0 and 1 are the same
// connected socket, in blocking mode; 2 is sockhold's own stderr.
func TestHandlerGetsExactlyThreeFDs(t *testing.T) {
	// sockhold's own parent leaks a descriptor to it (as deploy scripts
	// do): it must not reach the handler either.
	stray, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	in := startWith(t, startOpts{extraFiles: []*os.File{stray}}, "--listen", "tcp://127.0.0.1:0", "--listen", "unix:@sockhold-fds-"+strconv.Itoa(os.Getpid()), "--", fdsBin)
	holderStderr, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/2", in.pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range in.addrs {
		out := mustRoundTrip(t, addr, "")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 {
			t.Fatalf("%s: handler has %d descriptors, want 3:\n%s", addr, len(lines), out)
		}
		var targets []string
		for i, line := range lines {
			var fd int
			var target, nonblock string
			fmt.Sscanf(strings.NewReplacer("fd=", "", "target=", "", "nonblock=", "").Replace(line), "%d %s %s", &fd, &target, &nonblock)
			if fd != i {
				t.Fatalf("%s: descriptors %v, want 0 1 2", addr, lines)
			}
			if i < 2 && (!strings.HasPrefix(target, "socket:") || nonblock != "false") {
				t.Errorf("%s: fd %d is %s nonblock=%s, want a blocking socket", addr, i, target, nonblock)
			}
			targets = append(targets, target)
		}
		if targets[0] != targets[1] {
			t.Errorf("%s: fd 0 (%s) and fd 1 (%s) differ", addr, targets[0], targets[1])
		}
		if targets[2] != holderStderr {
			t.Errorf("%s: fd 2 is %s, sockhold's stderr is %s", addr, targets[2], holderStderr)
		}
	}
}

// --when-full reject: with the only slot held, the next client reads the
// message and EOF at once instead of waiting.
func TestRejectWhenFull(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "1", "--when-full", "reject",
		"--reject-message", "@ERROR: max connections (1) reached -- try again later", "--", handlerBin, "hold")
	held, err := net.Dial("tcp", in.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	buf := make([]byte, 6)
	if _, err := readAll(held, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("held connection: %q %v", buf, err)
	}
	begin := time.Now()
	out, err := roundTrip(t, in.addr(0), "@RSYNCD: 31.0\n")
	if err != nil {
		t.Fatalf("rejected client: %v (read %q)", err, out)
	}
	if out != "@ERROR: max connections (1) reached -- try again later\n" {
		t.Fatalf("rejected client read %q", out)
	}
	if d := time.Since(begin); d > time.Second {
		t.Fatalf("reject took %v", d)
	}
	fails := in.waitForN(5*time.Second, 1, msgIs("FAIL"))
	if fails[0].str("reason") != "full" {
		t.Fatalf("FAIL record: %v", fails[0])
	}
	held.Close()
	in.waitFor(5*time.Second, msgIs("EXIT"))
	// With the slot free again, the next client is served.
	c, err := net.Dial("tcp", in.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := readAll(c, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("after the slot freed: %q %v", buf, err)
	}
	if n := in.count(msgIs("FAIL")); n != 1 {
		t.Fatalf("%d FAIL records, want exactly 1 (logged once)", n)
	}
}

// --user and --group: sockhold binds as itself; handlers run as the user,
// with its groups and HOME/USER/LOGNAME.
func TestHandlersRunAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "2", "--user", "nobody", "--", "/bin/sh", "-c",
		`echo "$(id -u) $(id -g) $(id -G) $HOME $USER $LOGNAME"`)
	got := strings.Fields(mustRoundTrip(t, in.addr(0), ""))
	if len(got) < 6 || got[0] != "65534" || got[len(got)-2] != "nobody" || got[len(got)-1] != "nobody" {
		t.Fatalf("handler identity %q, want uid 65534 and USER/LOGNAME nobody", got)
	}
	if os.Getuid() != 0 || in.pid() == 0 {
		t.Fatal("sockhold itself must keep its identity")
	}
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", in.pid()))
	if !strings.Contains(string(st), "Uid:\t0\t") {
		t.Fatalf("holder does not run as root any more:\n%s", st)
	}
	in2 := start(t, "--listen", "tcp://127.0.0.1:0", "--user", "nobody", "--group", "daemon", "--", "/usr/bin/id", "-g")
	if got := strings.TrimSpace(mustRoundTrip(t, in2.addr(0), "")); got != "1" {
		t.Fatalf("--group daemon: gid %q, want 1", got)
	}
	if code, lines := runToExit(t, "873", "--user", "no-such-user-xyz", "--", "echo"); code != 2 || len(lines) != 1 || !strings.Contains(lines[0], "--user no-such-user-xyz") {
		t.Fatalf("unknown user: exit %d %q", code, lines)
	}
}

// serve --user: the app runs as the user too, through the LISTEN_PID shim.
func TestServeAppRunsAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir, err := os.MkdirTemp("", "shu")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	out := filepath.Join(dir, "who")
	// The shim is sockhold's own binary, run as the app's user: installed
	// where that user can execute it, as /usr/local/bin would be.
	os.Chmod(binDir, 0o755)
	defer os.Chmod(binDir, 0o700)
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "timer:50ms", "--user", "nobody",
		"--", "/bin/sh", "-c", `echo "$(id -u) $LISTEN_PID $$ $HOME" > `+out+`; exec sleep 60`)
	in.waitFor(5*time.Second, msgIs("app ready"))
	var b []byte
	for deadline := time.Now().Add(5 * time.Second); len(b) == 0 && time.Now().Before(deadline); {
		b, _ = os.ReadFile(out) // the app writes it as it starts
		time.Sleep(5 * time.Millisecond)
	}
	f := strings.Fields(string(b))
	if len(f) != 4 || f[0] != "65534" || f[1] != f[2] {
		t.Fatalf("app as nobody: %q, want uid 65534 and LISTEN_PID equal to its PID", b)
	}
}

func freePortTB(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
