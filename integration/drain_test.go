package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// Under --user, the app's user can reach its NOTIFY_SOCKET and
// EINHORN_SOCK_PATH (and nobody else can): both readiness protocols work
// for an app that is not sockhold's user.
func TestReadinessSocketsReachableByTheAppsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root") // CI runs as root; --user needs it
	}
	// The shim and the app are run as nobody: installed where nobody can
	// execute them, as /usr/local/bin would be.
	os.Chmod(binDir, 0o755)
	defer os.Chmod(binDir, 0o700)
	for _, c := range []struct{ ready, dialect string }{{"notify", "systemd"}, {"einhorn", "einhorn"}} {
		t.Run(c.ready, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "shu") // t.TempDir's parent is root's alone
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			os.Chmod(dir, 0o777)
			events := filepath.Join(dir, "events")
			in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", c.ready, "--ready-timeout", "5s", "--user", "nobody",
				"--", appBin, "-dialect", c.dialect, "-ready", c.ready, "-events", events, "-drain-checks")
			r := in.waitFor(5*time.Second, msgIs("app ready"))
			if by := r.str("by"); by != c.ready {
				t.Fatalf("ready by %q, want %q", by, c.ready)
			}
			if err := appReply("app")(mustRoundTrip(t, in.addr(0), "")); err != nil {
				t.Fatal(err)
			}
			// Another user (daemon) can reach neither socket.
			sockets := appSocketsOf(t, events, r.int("app_pid"))
			for _, s := range []struct{ network, path string }{{"unixgram", sockets + "/notify"}, {"unix", sockets + "/einhorn"}} {
				cmd := exec.Command(handlerBin, "dial", s.network, s.path)
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1, Gid: 1}}
				out, err := cmd.Output()
				if err == nil || !strings.Contains(string(out), "permission denied") {
					t.Errorf("uid 1 connecting to %s: %v %q, want permission denied", s.path, err, out)
				}
			}
			if code := in.stop(syscall.SIGTERM, 15*time.Second); code != 0 {
				t.Fatalf("stop: exit %d, want 0", code)
			}
		})
	}
}

// An einhorn ack counts only from the copy itself, as the kernel records
// who connected (SO_PEERCRED): another process claiming the copy's PID
// does not make it ready.
func TestEinhornAckFromAnotherProcessIsIgnored(t *testing.T) {
	events := filepath.Join(t.TempDir(), "events")
	in := launch(t, startOpts{}, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "einhorn", "--ready-timeout", "30s",
		"--", appBin, "-dialect", "einhorn", "-ready", "none", "-events", events, "-drain-checks")
	pid := in.waitFor(10*time.Second, msgIs("app started")).int("app_pid")
	sockets := appSocketsOf(t, events, pid)
	if out, err := exec.Command(handlerBin, "einhorn-ack", sockets+"/einhorn", strconv.Itoa(pid)).CombinedOutput(); err != nil {
		t.Fatalf("einhorn-ack: %v %s", err, out)
	}
	r := in.waitFor(5*time.Second, msgIs("einhorn ack from a process that is not a copy of the app ignored"))
	if r.int("claimed_pid") != pid || r.int("sender") == pid {
		t.Fatalf("logged %v, want the claim of %d from another sender", r, pid)
	}
	if n := in.count(msgIs("app ready")); n != 0 {
		t.Fatalf("the forged ack made the app ready")
	}
}

// Restarts follow each other without waiting for the copies still
// draining: a worker whose own predecessor is still draining cannot pass
// the sockets on through tableflip until that one exits, so the holder
// starts the next generation itself.
func TestRestartsDoNotWaitForDrainingCopies(t *testing.T) {
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--drain-timeout", "20s",
		"--", appBin, "-dialect", "systemd", "-drain-delay", "4s")
	l := startLoad(t, in.addr(0), 2, appReply("app"))
	l.waitServed(t, 10, 10*time.Second)
	for i := 1; i <= 4; i++ {
		begin := time.Now()
		if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
			t.Fatalf("restart %d: %d %q %q", i, code, out, errOut)
		}
		if took := time.Since(begin); took > 2*time.Second {
			t.Fatalf("restart %d took %v: it waited for the copies still draining", i, took)
		}
		l.waitServed(t, 10, 10*time.Second)
	}
	if _, errs := l.finish(); len(errs) > 0 {
		t.Fatalf("%d failed requests: %v", len(errs), errs[:min(5, len(errs))])
	}
	if code := in.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("stop: exit %d, want 0", code)
	}
}

// einhorn fidelity: a new copy gets the lowest EINHORN_CHILD_INDEX that no
// live copy holds (the old copy, draining, keeps 0); commands other than
// worker:ack get an answer; and SIGHUP to EINHORN_MASTER_PID, einhorn's own
// restart signal, restarts.
func TestEinhornFidelity(t *testing.T) {
	events := filepath.Join(t.TempDir(), "events")
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "einhorn", "--drain-timeout", "10s",
		"--", appBin, "-dialect", "einhorn", "-ready", "einhorn", "-events", events, "-drain-delay", "3s", "-drain-checks")
	first := in.waitFor(5*time.Second, msgIs("app ready")).int("app_pid")
	waitAppEvent(t, events, first, "index 0", 5*time.Second)
	sock := appSocketsOf(t, events, first) + "/einhorn"
	for cmd, want := range map[string]string{"state": "copy 0: pid " + strconv.Itoa(first), "bogus": "Unrecognized command: bogus", "ehlo": "sockhold"} {
		out, err := exec.Command(handlerBin, "einhorn-cmd", sock, cmd).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"message"`) || !strings.Contains(string(out), want) {
			t.Errorf("einhorn %s: %v %q, want a message containing %q", cmd, err, out, want)
		}
	}
	// What einhorn apps do to restart themselves.
	signalPID(in.workerPID(), syscall.SIGHUP)
	in.waitFor(10*time.Second, msgIs("upgrade done"))
	second := in.waitForN(5*time.Second, 2, msgIs("app ready"))[1].int("app_pid")
	waitAppEvent(t, events, second, "index 1", 5*time.Second)
	if code := in.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("stop: exit %d, want 0", code)
	}
}
