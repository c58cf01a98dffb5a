package integration

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runToExit runs sockhold expecting it to refuse to start, and returns its
// exit status and stderr lines.
func runToExit(t *testing.T, args ...string) (int, []string) {
	t.Helper()
	return runToExitEnv(t, nil, args...)
}

func runToExitEnv(t *testing.T, env []string, args ...string) (int, []string) {
	t.Helper()
	cmd := exec.Command(sockholdBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("sockhold %v kept running; stderr: %s", args, stderr.String())
	}
	out := strings.TrimRight(stderr.String(), "\n")
	var lines []string
	if out != "" {
		lines = strings.Split(out, "\n")
	}
	return cmd.ProcessState.ExitCode(), lines
}

// Every bad input gets one clear line on stderr and a non-zero status:
// 2 for a wrong command line, 1 for what the machine refused.
func TestBadInputOneLineAndExitStatus(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	noexec := filepath.Join(t.TempDir(), "noexec")
	os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644)
	cases := []struct {
		name   string
		args   []string
		status int
		want   string
	}{
		{"unknown flag", []string{"873", "--no-such-flag", "--", "echo"}, 2, "unknown flag"},
		{"bad port", []string{"99999", "--", "echo"}, 2, "bad port"},
		{"bad processes", []string{"873", "--processes", "many", "--", "echo"}, 2, "processes"},
		{"negative processes", []string{"873", "--processes", "-1", "--", "echo"}, 2, "processes"},
		{"missing command", []string{"873"}, 2, "no command"},
		{"command not found", []string{"873", "--", "no-such-command-xyz"}, 2, "not found"},
		{"command not executable", []string{"873", "--", noexec}, 2, "not executable"},
		{"nothing to listen on", []string{}, 2, "nothing to listen on"},
		{"forgot the port", []string{"--", "echo"}, 2, "bad port \"echo\""},
		{"bad uri", []string{"--listen", "http://x:1", "--", "echo"}, 2, "unknown scheme"},
		{"bad unix option", []string{"--listen", "unix:///tmp/x.sock?mode=999", "--", "echo"}, 2, "mode"},
		{"bad when-full", []string{"873", "--when-full", "drop", "--", "echo"}, 2, "when-full"},
		{"port in use", []string{"--listen", "tcp://" + busy.Addr().String(), "--", "echo"}, 1, "address already in use"},
		{"unusable socket path", []string{"--listen", "unix:///proc/sockhold.sock", "--", "echo"}, 1, "listen unix:///proc/sockhold.sock"},
		{"no such directory", []string{"--listen", "unix:///nonexistent-dir/x.sock", "--", "echo"}, 1, "no such file or directory"},
		{"fd not open", []string{"--listen", "fd://97", "--", "echo"}, 1, "fd 97"},
		{"fd name with a colon", []string{"serve", "--listen", "tcp://127.0.0.1:0", "--fd-name", "web:1", "--", "echo"}, 2, "':' separates"},
		{"fd name not ASCII", []string{"serve", "--listen", "tcp://127.0.0.1:0", "--fd-name", "caf\u00e9", "--", "echo"}, 2, "printable ASCII"},
		{"fd name too long", []string{"serve", "--listen", "tcp://127.0.0.1:0", "--fd-name", strings.Repeat("n", 256), "--", "echo"}, 2, "at most 255"},
		{"--env without =", []string{"--listen", "tcp://127.0.0.1:0", "--env", "NOVALUE", "--", "echo"}, 2, "NAME=VALUE"},
		{"--env of a reserved name", []string{"serve", "--listen", "tcp://127.0.0.1:0", "--env", "LISTEN_FDS=2", "--", "echo"}, 2, "sockhold sets the LISTEN_*"},
		{"--unset-env bad name", []string{"--listen", "tcp://127.0.0.1:0", "--unset-env", "A-B", "--", "echo"}, 2, "a variable name"},
		{"huge --listen", []string{"--listen", "tcp://127.0.0.1:1" + strings.Repeat("x", 100000), "--", "echo"}, 2, "at most 4096"},
		{"port with a sign", []string{"--listen", "tcp://127.0.0.1:+80", "--", "echo"}, 2, "bad port"},
		{"owner id that wraps to root", []string{"--listen", "unix:///tmp/sockhold-x.sock?owner=4294967296", "--", "echo"}, 2, "not a valid id"},
		{"group id -1", []string{"--listen", "unix:///tmp/sockhold-x.sock?group=4294967295", "--", "echo"}, 2, "not a valid id"},
		{"forward URG", []string{"serve", "--listen", "tcp://127.0.0.1:0", "--forward-signals", "URG", "--", "echo"}, 2, "SIGURG"},
		{"tiny --load-recheck", []string{"--listen", "tcp://127.0.0.1:0", "--load-recheck", "1ns", "--", "echo"}, 2, "at least 10ms"},
		{"tiny --idle-stop", []string{"serve", "--on-demand", "--listen", "tcp://127.0.0.1:0", "--idle-stop", "1ms", "--", "echo"}, 2, "at least 100ms"},
		{"negative --kill-grace in serve", []string{"serve", "--listen", "tcp://127.0.0.1:0", "--kill-grace", "-1s", "--", "echo"}, 2, "kill-grace"},
		{"?name= with a colon", []string{"--listen", "tcp://127.0.0.1:0?name=a:b", "--", "echo"}, 2, "':' separates"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, lines := runToExit(t, c.args...)
			if code != c.status {
				t.Errorf("exit status %d, want %d (stderr %q)", code, c.status, lines)
			}
			if len(lines) < 1 || !strings.Contains(lines[0], c.want) {
				t.Errorf("stderr %q, want a line containing %q", lines, c.want)
			}
			// kong prints usage after a parse error; our own errors are
			// exactly one line.
			if c.name != "unknown flag" && c.name != "bad processes" && c.name != "bad when-full" && len(lines) != 1 {
				t.Errorf("want exactly one line, got %d: %q", len(lines), lines)
			}
			for _, l := range lines[:1] {
				if !strings.HasPrefix(l, "sockhold: ") {
					t.Errorf("line %q does not say who is speaking", l)
				}
			}
		})
	}
}
