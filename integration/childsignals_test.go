package integration

import (
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// launchFromHostileParent starts sockhold as a parent that blocked
// SIGUSR1, SIGUSR2, SIGPIPE and SIGALRM and ignores SIGHUP and SIGINT (as
// nohup, some init scripts and job runners leave them) would.
func launchFromHostileParent(t *testing.T, args ...string) *instance {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set, old unix.Sigset_t
	for _, s := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM} {
		set.Val[(s-1)/64] |= 1 << ((s - 1) % 64)
	}
	// The fork copies this thread's mask; signals ignored here stay
	// ignored across exec.
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		t.Fatal(err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
	defer signal.Reset(syscall.SIGHUP, syscall.SIGINT)
	return startWith(t, startOpts{}, args...)
}

// sigLines is the SigBlk and SigIgn lines of a /proc/PID/status.
func sigLines(status string) string {
	var out []string
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(l, "SigBlk:") || strings.HasPrefix(l, "SigIgn:") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, "\n")
}

const cleanSignals = "SigBlk: 0000000000000000\nSigIgn: 0000000000000000"

// A handler starts with no signal blocked and none ignored, whatever
// sockhold inherited: alarm()-based timeouts (git-daemon --timeout, inetd
// tools) must fire, and the handler must die of SIGPIPE as it would under
// inetd. So must a served app, started through the LISTEN_PID shim or not,
// and a handler started after an upgrade.
func TestChildrenStartWithCleanSignals(t *testing.T) {
	t.Run("handler", func(t *testing.T) {
		in := launchFromHostileParent(t, "0", "--address", "127.0.0.1", "--", "/bin/cat", "/proc/self/status")
		if got := sigLines(mustRoundTrip(t, in.addr(0), "")); got != cleanSignals {
			t.Fatalf("handler:\n%s\nwant:\n%s", got, cleanSignals)
		}
		if code, out, errs := ctl(t, in, "upgrade", "--wait"); code != 0 {
			t.Fatalf("upgrade: exit %d %s%s", code, out, errs)
		}
		if got := sigLines(mustRoundTrip(t, in.addr(0), "")); got != cleanSignals {
			t.Fatalf("handler after an upgrade:\n%s\nwant:\n%s", got, cleanSignals)
		}
	})
	for _, shim := range []bool{true, false} {
		name := "app through the LISTEN_PID shim"
		args := []string{"serve", "--listen", "tcp://127.0.0.1:0", "--ready", "timer:50ms"}
		if !shim {
			name, args = "app without the shim", append(args, "--no-listen-pid")
		}
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "status")
			in := launchFromHostileParent(t, append(args, "--", "/bin/sh", "-c", `cat /proc/self/status > "$0.tmp" && mv "$0.tmp" "$0"; exec sleep 600`, out)...)
			in.waitFor(5*time.Second, msgIs("app ready"))
			var b []byte
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				var err error
				if b, err = os.ReadFile(out); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the app wrote no status: %v", err)
				}
			}
			if got := sigLines(string(b)); got != cleanSignals {
				t.Fatalf("app:\n%s\nwant:\n%s", got, cleanSignals)
			}
		})
	}
}
