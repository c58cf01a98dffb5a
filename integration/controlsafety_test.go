package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const nobody = 65534

// publicCopy puts a copy of bin where another user can run it.
func publicCopy(t *testing.T, bin string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shpub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, filepath.Base(bin))
	copyFile(t, bin, path, 0o755)
	return path
}

func asNobody(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	return cmd
}

// Without $XDG_RUNTIME_DIR, a user's control socket lives in a directory
// under the temporary directory whose name anyone can know. One that
// another user made, or that others can write to, is refused: whoever can
// put a socket there could answer for sockhold.
func TestControlDirectoryOthersCanWriteIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run sockhold as another user (.ci/run runs as root)")
	}
	bin := publicCopy(t, sockholdBin)
	for _, c := range []struct {
		name  string
		owner int
		mode  os.FileMode
		ok    bool
	}{
		{"made by root, 0777", 0, 0o777, false},
		{"its own, but 0777", nobody, 0o777, false},
		{"its own, 0700", nobody, 0o700, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmp, err := os.MkdirTemp("", "shtmp")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(tmp)
			os.Chmod(tmp, 0o1777)
			dir := filepath.Join(tmp, fmt.Sprintf("sockhold-%d", nobody))
			os.Mkdir(dir, c.mode)
			os.Chmod(dir, c.mode)
			os.Chown(dir, c.owner, c.owner)
			cmd := asNobody(exec.Command(bin, "-v", "--listen", "tcp://127.0.0.1:0", "--", "/bin/echo", "hi"))
			cmd.Env = append(filteredEnv("XDG_RUNTIME_DIR", "TMPDIR"), "TMPDIR="+tmp)
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
			// It either serves (logs "serving") or says no and exits.
			var lines []string
			served := false
			for sc := bufio.NewScanner(stderr); !served && sc.Scan(); {
				lines = append(lines, sc.Text())
				served = strings.Contains(sc.Text(), "msg=serving")
			}
			switch {
			case c.ok && !served:
				t.Fatalf("refused a directory only it can write to: %q", lines)
			case !c.ok && served:
				t.Fatalf("sockhold ran with a control directory others can write to")
			case !c.ok:
				cmd.Wait()
				if cmd.ProcessState.ExitCode() != 1 || len(lines) != 1 || !strings.Contains(lines[0], "set XDG_RUNTIME_DIR or --control") {
					t.Fatalf("exit %d, %q; want 1 and one line saying to set XDG_RUNTIME_DIR or --control", cmd.ProcessState.ExitCode(), lines)
				}
			}
		})
	}
}

func filteredEnv(drop ...string) []string {
	var out []string
next:
	for _, kv := range os.Environ() {
		for _, d := range drop {
			if strings.HasPrefix(kv, d+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// A control client believes only a holder of its own user (or root):
// another user listening on the path can answer neither upgrade nor stop.
func TestClientTrustsOnlyItsOwnUsersHolder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run an impostor as another user (.ci/run runs as root)")
	}
	dir, err := os.MkdirTemp("", "shfake")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	path := filepath.Join(dir, "ctl")
	fake := asNobody(exec.Command(publicCopy(t, handlerBin), "fake-control", path))
	out, _ := fake.StdoutPipe()
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { fake.Process.Kill(); fake.Wait() }()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "listening\n" {
		t.Fatalf("impostor: %q", line)
	}
	for _, verb := range [][]string{{"upgrade", "--wait"}, {"stop"}, {"status"}} {
		cmd := exec.Command(sockholdBin, append(verb, "--control", path)...)
		got, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(got), "not trusting") || strings.Contains(string(got), "forged") {
			t.Errorf("%v against an impostor: exit %d, %q", verb, cmd.ProcessState.ExitCode(), got)
		}
	}
}

// The control socket's details: an over-long request is answered and then
// read to its end, so the client sees the answer and a clean end, never a
// reset; a burst of idle connections cannot keep status out; a huge
// timeout_ms is a long wait, not an overflow into none.
func TestControlSocketDetails(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "echo", "up")
	t.Run("over-long request", func(t *testing.T) {
		c, err := net.Dial("unix", in.ctl)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(strings.Repeat("x", 100000))); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		if err != nil || !strings.Contains(string(b), "request too long") {
			t.Fatalf("answer %q, error %v: want the answer, then a clean end", b, err)
		}
	})
	t.Run("burst of idle connections", func(t *testing.T) {
		// The holder stopped, only its accept queue takes connections:
		// it must be long (it was 16).
		in.cmd.Process.Signal(syscall.SIGSTOP)
		stopped := true
		defer func() {
			if stopped {
				in.cmd.Process.Signal(syscall.SIGCONT)
			}
		}()
		var idle []net.Conn
		defer func() {
			for _, c := range idle {
				c.Close()
			}
		}()
		for len(idle) < 1500 {
			c, err := net.Dial("unix", in.ctl)
			if err != nil {
				break
			}
			idle = append(idle, c)
		}
		if len(idle) < 1024 {
			t.Fatalf("the control socket's queue took %d connections, want at least 1024", len(idle))
		}
		// A client that finds the queue full waits for room (a blocking
		// connect would), then is answered among the idle ones.
		status := exec.Command(sockholdBin, "status", "--control", in.ctl)
		var out bytes.Buffer
		status.Stdout = &out
		errPipe, _ := status.StderrPipe()
		if err := status.Start(); err != nil {
			t.Fatal(err)
		}
		errOut := bufio.NewReader(errPipe)
		line, _ := errOut.ReadString('\n')
		if !strings.Contains(line, "queue is full; waiting") {
			status.Wait()
			t.Fatalf("status against a full queue: %q (exit %d)", line, status.ProcessState.ExitCode())
		}
		in.cmd.Process.Signal(syscall.SIGCONT)
		stopped = false
		rest, _ := io.ReadAll(errOut)
		status.Wait()
		if status.ProcessState.ExitCode() != 0 || !strings.Contains(out.String(), "serving true") {
			t.Fatalf("status with %d idle connections open: exit %d %q %q", len(idle), status.ProcessState.ExitCode(), out.String(), rest)
		}
	})
	t.Run("huge timeout_ms", func(t *testing.T) {
		slowBinary(t, exe, sockholdB, "0.5")
		rep := controlExchange(t, in.ctl, []byte(`{"verb":"upgrade","wait":true,"timeout_ms":9223372036854775807}`+"\n"), false)
		if rep["ok"] != true || rep["message"] != "upgraded" {
			b, _ := json.Marshal(rep)
			t.Fatalf("upgrade with timeout_ms at its largest: %s", b)
		}
	})
}
