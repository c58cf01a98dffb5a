package integration

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// controlExchange sends raw bytes to the control socket and returns the
// holder's one-line JSON answer.
func controlExchange(t *testing.T, path string, send []byte, closeWrite bool) map[string]any {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if len(send) > 0 {
		c.Write(send)
	}
	if closeWrite {
		c.(*net.UnixConn).CloseWrite()
	}
	buf := make([]byte, 64<<10)
	n, _ := readAll(c, buf)
	var rep map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(buf[:n]))), &rep); err != nil {
		t.Fatalf("answer %q is not JSON: %v", buf[:n], err)
	}
	return rep
}

// Malformed, oversized and slow input gets an error and never blocks or
// crashes the holder: a slow client does not hold up a status request.
func TestControlSocketBadInput(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "echo", "up")
	st, err := os.Stat(in.ctl)
	if err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket %v %v, want a 0600 socket", st, err)
	}
	slow, err := net.Dial("unix", in.ctl) // says nothing
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()

	for name, c := range map[string]struct {
		send []byte
		want string
	}{
		"garbage":      {[]byte("hello there\n"), "bad request"},
		"unknown verb": {[]byte(`{"verb":"explode"}` + "\n"), "unknown verb"},
		"oversized":    {[]byte(strings.Repeat("x", 100000)), "too long"},
		"binary":       {[]byte{0, 1, 2, 255, '\n'}, "bad request"},
	} {
		rep := controlExchange(t, in.ctl, c.send, true)
		if rep["ok"] != false || !strings.Contains(rep["error"].(string), c.want) {
			t.Errorf("%s: %v, want an error about %q", name, rep, c.want)
		}
	}
	begin := time.Now()
	if code, out, errOut := ctl(t, in, "status"); code != 0 || !strings.Contains(out, "generation 1") {
		t.Fatalf("status with a slow client connected: %d %q %q", code, out, errOut)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("status took %v with a slow client connected", d)
	}
	// The slow client is answered too, after the request deadline.
	buf := make([]byte, 512)
	slow.SetDeadline(time.Now().Add(15 * time.Second))
	n, _ := slow.Read(buf)
	if !strings.Contains(string(buf[:n]), "no complete request") {
		t.Fatalf("slow client got %q", buf[:n])
	}
	if got := mustRoundTrip(t, in.addr(0), ""); got != "up\n" {
		t.Fatalf("serving after bad control input: %q", got)
	}
}

// A client of another uid is refused by SO_PEERCRED even if the socket
// file's permissions were loosened by mistake.
func TestControlSocketRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	dir, err := os.MkdirTemp("", "shc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "ctl")
	in := start(t, "--control", path, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "echo", "up")
	os.Chmod(path, 0o666) // the mistake
	client := filepath.Join(dir, "sockhold-client")
	copyFile(t, sockholdBin, client, 0o755)
	cmd := exec.Command(client, "stop", "--control", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("stop as uid 65534: exit %d, %q", cmd.ProcessState.ExitCode(), out)
	}
	if in.exited() {
		t.Fatal("another user stopped sockhold")
	}
	if got := mustRoundTrip(t, in.addr(0), ""); got != "up\n" {
		t.Fatalf("serving after a refused client: %q", got)
	}
	if code, _, _ := ctl(t, in, "stop"); code != 0 {
		t.Fatal("stop as the owner failed")
	}
	if code := in.stop(0, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// The client finds the control socket from the PORT the instance uses.
func TestControlFoundByPort(t *testing.T) {
	xdg, err := os.MkdirTemp("", "xdg")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(xdg)
	port := freePort(t)
	in := startWith(t, startOpts{noControl: true, env: []string{"XDG_RUNTIME_DIR=" + xdg}},
		itoa(port), "--", handlerBin, "echo", "up")
	cmd := exec.Command(sockholdBin, "status", itoa(port))
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+xdg)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "generation 1") {
		t.Fatalf("status %d: %v %s", port, err, out)
	}
	if !strings.HasPrefix(in.ctl, filepath.Join(xdg, "sockhold")) {
		t.Fatalf("control socket %s not under $XDG_RUNTIME_DIR/sockhold", in.ctl)
	}
}

// sd_notify: READY=1 once serving, RELOADING=1 with MONOTONIC_USEC when an
// upgrade starts and READY=1 when it ends, STOPPING=1 on stop.
func TestSystemdNotify(t *testing.T) {
	dir, err := os.MkdirTemp("", "shn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "notify")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	msgs := make(chan string, 32)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := pc.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string) string {
		t.Helper()
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, want) {
					return m
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no notify message with %q", want)
			}
		}
	}
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe, env: []string{"NOTIFY_SOCKET=" + sock}},
		"--listen", "tcp://127.0.0.1:0", "--", handlerBin, "env")
	next("READY=1")
	if env := parseEnv(mustRoundTrip(t, in.addr(0), "")); len(env) == 0 {
		t.Fatal("no env")
	} else {
		for k := range env {
			if strings.HasPrefix(k, "LEAK") {
				t.Errorf("leaked to handler: %s", k)
			}
		}
	}
	swapBinary(t, exe, sockholdB)
	if code, _, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatal(errOut)
	}
	if m := next("RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING without MONOTONIC_USEC: %q", m)
	}
	if m := next("READY=1"); !strings.Contains(m, "STATUS=gen 2 (it-2)") {
		t.Errorf("READY after upgrade: %q", m)
	}
	in.stop(syscall.SIGTERM, 10*time.Second)
	next("STOPPING=1")
}

func TestVersionFlag(t *testing.T) {
	out, err := exec.Command(sockholdB, "--version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "it-2" {
		t.Fatalf("--version: %q %v", out, err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// status reports each listener's accept queue, TCP (TCP_INFO) and unix
// (sock_diag) alike: with the only slot held, two clients per listener
// wait in the kernel's queue and status shows them there.
func TestStatusShowsQueueDepth(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "q.sock")
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--listen", "unix://"+sock, "--processes", "1", "--", handlerBin, "hold")
	held := dialReady(t, in.addr(0))
	defer held.Close()
	for _, addr := range []string{in.addr(0), in.addr(1)} {
		for i := 0; i < 2; i++ {
			c, err := net.Dial(network(addr), addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
	}
	type status struct {
		Queues []struct {
			Listener   string
			Depth, Max uint32
		}
	}
	// The TCP clients' final ACKs may still be on their way: look until
	// both queues show 2, or give up.
	var last string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		code, out, errOut := ctl(t, in, "status", "--json")
		if code != 0 {
			t.Fatalf("status: %d %s", code, errOut)
		}
		last = out
		var s status
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		both := len(s.Queues) == 2
		for _, q := range s.Queues {
			both = both && q.Depth == 2 && q.Max > 0
		}
		if both {
			return
		}
	}
	t.Fatalf("status never showed 2 waiting on each listener:\n%s", last)
}
