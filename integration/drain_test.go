package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// appSocketsOf is the directory of a copy's NOTIFY_SOCKET and
// EINHORN_SOCK_PATH, as the test app recorded them (-drain-checks).
func appSocketsOf(t *testing.T, events string, pid int) string {
	t.Helper()
	waitAppEvent(t, events, pid, "ready", 5*time.Second)
	for _, e := range readEvents(t, events) {
		if f := strings.Fields(e.what); e.pid == pid && len(f) == 3 && f[0] == "sockets" {
			if filepath.Dir(f[1]) != filepath.Dir(f[2]) {
				t.Fatalf("NOTIFY_SOCKET %s and EINHORN_SOCK_PATH %s are in different directories", f[1], f[2])
			}
			return filepath.Dir(f[1])
		}
	}
	t.Fatalf("app %d recorded no sockets", pid)
	return ""
}

func waitGone(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Lstat(path); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists after %v", path, timeout)
		}
	}
}

// A copy still draining after a restart keeps what it was started with
// until it exits: its NOTIFY_SOCKET (puma sends STOPPING=1 from its stop
// hook, uwsgi its status), its EINHORN_SOCK_PATH, and its parent, the
// EINHORN_MASTER_PID it was given. Once it has gone, so has its
// generation's socket directory.
func TestDrainingCopyKeepsItsSockets(t *testing.T) {
	events := filepath.Join(t.TempDir(), "events")
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--drain-timeout", "10s",
		"--", appBin, "-dialect", "systemd", "-events", events, "-drain-delay", "800ms", "-drain-checks")
	old := in.waitFor(5*time.Second, msgIs("app ready")).int("app_pid")
	oldWorker := in.workerPID()
	dir := appSocketsOf(t, events, old)
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory %s: %v, mode %v, want 0700", dir, err, st.Mode().Perm())
	}
	if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatalf("restart: %d %q %q", code, out, errOut)
	}
	waitAppEvent(t, events, old, "draining parent ok", 5*time.Second)
	for _, what := range []string{"draining notify ok", "draining einhorn ok"} {
		waitAppEvent(t, events, old, what, time.Second)
	}
	in.waitFor(5*time.Second, func(r record) bool { return r.str("msg") == "app stopping" && r.int("app_pid") == old })
	in.waitFor(5*time.Second, func(r record) bool { return r.str("msg") == "worker exited" && r.int("pid") == oldWorker })
	waitGone(t, dir, 5*time.Second)
	if code := in.stop(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("stop: exit %d, want 0", code)
	}
}

// A worker that is SIGKILLed cannot remove its copies' socket directory:
// the holder does, once the worker has gone.
func TestKilledWorkersSocketDirectoryIsRemoved(t *testing.T) {
	events := filepath.Join(t.TempDir(), "events")
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify",
		"--", appBin, "-dialect", "systemd", "-events", events, "-drain-checks")
	pid := in.waitFor(5*time.Second, msgIs("app ready")).int("app_pid")
	dir := appSocketsOf(t, events, pid)
	old := in.workerPID()
	signalPID(old, syscall.SIGKILL)
	in.newWorkerServing(old, 10*time.Second)
	waitGone(t, dir, 5*time.Second)
}
