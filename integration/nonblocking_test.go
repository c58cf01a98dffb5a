package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fdFlags is the file status flags of a process's descriptor, from
// /proc/PID/fdinfo: those of the open file description, shared by every
// process that holds the socket.
func fdFlags(t *testing.T, pid, fd int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatalf("no flags in fdinfo of %d/%d", pid, fd)
	return 0
}

const oNonblock = 0o4000

// The listener's mode is chosen once and never changed: a restart does not
// switch it back to blocking under a copy that made it non-blocking itself
// (nginx does, and then blocks in accept4 under keep-alive load), and
// --nonblocking hands it over non-blocking to every copy from the start.
func TestListenerModeNeverChanges(t *testing.T) {
	t.Run("the app's own choice survives restarts", func(t *testing.T) {
		// Only the first copy sets it: later ones find this file.
		in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "timer:100ms", "--no-listen-pid",
			"--", nbAppBin, t.TempDir()+"/first")
		first := in.waitFor(5*time.Second, msgIs("app ready")).int("app_pid")
		if fdFlags(t, first, 3)&oNonblock == 0 {
			t.Fatal("the app's FIONBIO did not take")
		}
		for i := 0; i < 3; i++ {
			if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
				t.Fatalf("restart: %d %q %q", code, out, errOut)
			}
			cur := in.waitForN(5*time.Second, i+2, msgIs("app ready"))[i+1].int("app_pid")
			if fdFlags(t, cur, 3)&oNonblock == 0 {
				t.Fatalf("after restart %d the shared listener is blocking again", i+1)
			}
		}
	})
	for _, nb := range []bool{false, true} {
		t.Run(fmt.Sprintf("--nonblocking=%v", nb), func(t *testing.T) {
			args := []string{"serve", "--listen", "tcp://127.0.0.1:0", "--ready", "timer:100ms", "--no-listen-pid"}
			if nb {
				args = append(args, "--nonblocking")
			}
			in := start(t, append(args, "--", "/bin/sleep", "600")...)
			for i := 0; i < 3; i++ {
				pid := in.waitForN(5*time.Second, i+1, msgIs("app ready"))[i].int("app_pid")
				if got := fdFlags(t, pid, 3)&oNonblock != 0; got != nb {
					t.Fatalf("generation %d: the app's socket non-blocking %v, want %v", i+1, got, nb)
				}
				if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
					t.Fatalf("restart: %d %q %q", code, out, errOut)
				}
			}
		})
	}
}
