package integration

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// appEvent is one line of the test app's own life record.
type appEvent struct {
	what string
	pid  int
	at   int64
}

func readEvents(t *testing.T, path string) []appEvent {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []appEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		pid, _ := strconv.Atoi(f[len(f)-2])
		at, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
		out = append(out, appEvent{strings.Join(f[:len(f)-2], " "), pid, at})
	}
	return out
}

// waitAppEvent waits until the app with this pid has recorded what: the
// app's own record is the readiness signal, polled because it is a file.
func waitAppEvent(t *testing.T, path string, pid int, what string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; {
		for _, e := range readEvents(t, path) {
			if e.pid == pid && e.what == what {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("app %d never recorded %q within %v", pid, what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// restartUnderLoad restarts n times with `upgrade --wait`, each a success,
// and waits for the load to be served 20 more times after each.
func restartUnderLoad(t *testing.T, in *instance, l *load, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
			t.Fatalf("restart %d: %d %q %q", i+1, code, out, errOut)
		}
		l.waitServed(t, 20, 10*time.Second)
	}
}

// appReply checks an answer of the test app: "TAG PID\n".
func appReply(tag string) func(string) error {
	return func(reply string) error {
		f := strings.Fields(reply)
		if len(f) != 2 || f[0] != tag || !strings.HasSuffix(reply, "\n") {
			return fmt.Errorf("wrong reply %q", reply)
		}
		return nil
	}
}

// A real reader of LISTEN_* (go-systemd's activation, which checks
// LISTEN_PID against its own PID) receives its listeners by name and is
// ready by READY=1; a reader of EINHORN_FD_COUNT/EINHORN_FD_n is ready by
// einhorn's manual ACK on EINHORN_SOCK_PATH; a reader of EINHORN_FDS by
// a timer.
func TestServeEveryDialect(t *testing.T) {
	for _, c := range []struct {
		dialect, ready string
		appArgs        []string
	}{
		{"systemd", "notify", nil},
		{"einhorn", "einhorn", []string{"-ready", "einhorn"}},
		{"einhorn-fds", "timer:100ms", []string{"-ready", "none"}},
	} {
		t.Run(c.dialect, func(t *testing.T) {
			events := filepath.Join(t.TempDir(), "events")
			args := []string{"serve", "--listen", "tcp://127.0.0.1:0?name=web", "--listen", "tcp://127.0.0.1:0",
				"--fd-name", "web", "--fd-name", "admin", "--ready", c.ready, "--",
				appBin, "-dialect", c.dialect, "-tag", c.dialect, "-events", events}
			in := start(t, append(args, c.appArgs...)...)
			wantBy := map[string]string{"notify": "notify", "einhorn": "einhorn"}[c.ready]
			if wantBy == "" {
				wantBy = "timer"
			}
			// The worker logs through a queue of its own: its line may come
			// after the holder's "serving".
			if by := in.waitFor(5*time.Second, msgIs("app ready")).str("by"); by != wantBy {
				t.Fatalf("app ready by %q, want %q", by, wantBy)
			}
			a, b := mustRoundTrip(t, in.addr(0), ""), mustRoundTrip(t, in.addr(1), "")
			if appReply(c.dialect)(a) != nil || a != b {
				t.Fatalf("answers %q and %q, want one copy of %s on both listeners", a, b, c.dialect)
			}
			var listeners string
			for _, e := range readEvents(t, events) {
				if strings.HasPrefix(e.what, "listeners ") {
					listeners = strings.TrimPrefix(e.what, "listeners ")
				}
			}
			got := strings.Split(listeners, ",")
			sort.Strings(got)
			want := map[string]string{"systemd": "admin,web", "einhorn": "3,4", "einhorn-fds": "3,4"}[c.dialect]
			if strings.Join(got, ",") != want {
				t.Fatalf("the app found listeners %q, want %q", listeners, want)
			}
		})
	}
}

// fd hygiene: the app sees exactly fds 0-2 and its listeners, in order.
func TestServeAppGetsExactlyItsListeners(t *testing.T) {
	out := filepath.Join(t.TempDir(), "fds")
	stray, _ := os.Open(os.DevNull)
	defer stray.Close()
	in := startWith(t, startOpts{extraFiles: []*os.File{stray}}, "serve",
		"--listen", "tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0", "--ready", "timer:50ms", "--no-listen-pid",
		"--", fdAppBin, out)
	in.waitFor(5*time.Second, msgIs("app ready"))
	b, _ := os.ReadFile(out)
	want := fmt.Sprintf("fd=0 port=-1 listening=0\nfd=1 port=-1 listening=0\nfd=2 port=-1 listening=0\nfd=3 port=%d listening=1\nfd=4 port=%d listening=1\nend\n",
		portOf(in.addr(0)), portOf(in.addr(1)))
	if string(b) != want {
		t.Fatalf("app descriptors:\n%s\nwant:\n%s", b, want)
	}
}

// 20 restarts under closed-loop load: nothing refused, reset or failed;
// each old copy is signalled only after its successor said it was ready,
// by the apps' own clocks.
func TestServeTwentyRestartsUnderLoad(t *testing.T) {
	events := filepath.Join(t.TempDir(), "events")
	in := startWith(t, startOpts{verbosity: "-v"}, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify",
		"--", appBin, "-dialect", "systemd", "-tag", "v", "-events", events)
	l := startLoad(t, in.addr(0), 8, appReply("v"))
	l.waitServed(t, 50, 10*time.Second)
	restartUnderLoad(t, in, l, 20)
	served, errs := l.finish()
	t.Logf("%d requests across 20 restarts", served)
	if len(errs) > 0 {
		t.Fatalf("%d failed requests: %v", len(errs), errs[:min(5, len(errs))])
	}
	in.stop(syscall.SIGTERM, 15*time.Second)
	ev := readEvents(t, events)
	ready := map[int]int64{}
	var order []int
	for _, e := range ev {
		if e.what == "ready" {
			ready[e.pid] = e.at
			order = append(order, e.pid)
		}
	}
	if len(order) != 21 {
		t.Fatalf("%d copies became ready, want 21", len(order))
	}
	for _, e := range ev {
		if !strings.HasPrefix(e.what, "signal") {
			continue
		}
		for i, pid := range order[:len(order)-1] {
			if pid == e.pid && ready[order[i+1]] > e.at {
				t.Errorf("copy %d was signalled %v before its successor %d was ready",
					pid, time.Duration(ready[order[i+1]]-e.at), order[i+1])
			}
		}
	}
}

// A new copy that exits 1 at start, and one that never gets ready: the
// restart is abandoned with the reason, the old copy serves on untouched,
// and the next good restart succeeds.
func TestServeFailedRestartsKeepTheOldCopy(t *testing.T) {
	mode := filepath.Join(t.TempDir(), "mode")
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--ready-timeout", "1s",
		"--", appBin, "-dialect", "systemd", "-tag", "v", "-mode-file", mode)
	first := mustRoundTrip(t, in.addr(0), "")
	// A copy that is not ready may still accept on the shared socket (as
	// under einhorn or systemd); what matters is that nothing fails.
	l := startLoad(t, in.addr(0), 4, appReply("v"))
	for _, c := range []struct{ mode, reason string }{
		{"exit 1", "exited before it was ready (status 1)"},
		{"never-ready", "not ready within --ready-timeout 1s"},
	} {
		os.WriteFile(mode, []byte(c.mode), 0o644)
		code, _, errOut := ctl(t, in, "upgrade", "--wait")
		if code != 1 || !strings.Contains(errOut, c.reason) {
			t.Errorf("%s: exit %d %q, want 1 and %q", c.mode, code, errOut, c.reason)
		}
		l.waitServed(t, 10, 10*time.Second)
	}
	if _, errs := l.finish(); len(errs) > 0 {
		t.Fatalf("%d requests failed: %v", len(errs), errs[:min(5, len(errs))])
	}
	if got := mustRoundTrip(t, in.addr(0), ""); got != first {
		t.Fatalf("after the failed restarts %q answers, want the old copy %q", got, first)
	}
	os.WriteFile(mode, nil, 0o644)
	if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatalf("good restart: %d %q %q", code, out, errOut)
	}
	if got := mustRoundTrip(t, in.addr(0), ""); got == first || appReply("v")(got) != nil {
		t.Fatalf("after the good restart: %q (old copy %q)", got, first)
	}
}

// An old copy that ignores SIGTERM is killed after --drain-timeout.
func TestServeDrainTimeoutKills(t *testing.T) {
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--drain-timeout", "300ms",
		"--", appBin, "-dialect", "systemd", "-ignore-term")
	old, _ := strconv.Atoi(strings.Fields(mustRoundTrip(t, in.addr(0), ""))[1])
	if code, _, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatal(errOut)
	}
	r := in.waitFor(5*time.Second, msgIs("app did not stop within --drain-timeout; killed"))
	if r.int("app_pid") != old {
		t.Fatalf("killed %v, want the old copy %d", r, old)
	}
	// Its worker stays until it has gone, and reaps it.
	in.waitFor(5*time.Second, func(r record) bool {
		return r.str("msg") == "app exited" && r.int("app_pid") == old && r.str("signal") == "SIGKILL"
	})
}

// A copy that crashes at start is restarted with exponential backoff, not
// in a busy loop: count the starts over a few seconds.
func TestServeCrashLoopBacksOff(t *testing.T) {
	// Nothing ever serves here, so wait for the listener, not for serving.
	in := launch(t, startOpts{}, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify",
		"--", appBin, "-exit-at-start", "3")
	in.addrs = []string{in.waitFor(10*time.Second, msgIs("listening")).str("addr")}
	begin := time.Now()
	in.waitForN(10*time.Second, 5, msgIs("app started"))
	took := time.Since(begin)
	// 5 starts need at least 100+200+400+800 ms of backoff between them.
	if took < 1400*time.Millisecond {
		t.Fatalf("5 starts in %v: no backoff", took)
	}
	n := in.count(msgIs("app started"))
	t.Logf("%d starts in %v", n, took)
	if n > 6 {
		t.Fatalf("%d starts in %v", n, took)
	}
	if c, err := net.Dial("tcp", in.addr(0)); err != nil {
		t.Fatalf("the listener closed during the crash loop: %v", err)
	} else {
		c.Close()
	}
}

// SIGTERM: the copy gets --stop-signal and drains; sockhold exits with a
// status that reflects the app's: 0 for a clean stop, 137 when it had to be
// killed.
func TestServeStopReflectsTheApp(t *testing.T) {
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--stop-signal", "USR2",
		"--", appBin, "-dialect", "systemd")
	mustRoundTrip(t, in.addr(0), "")
	if code := in.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("clean stop: exit %d", code)
	}
	in2 := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--drain-timeout", "200ms",
		"--", appBin, "-dialect", "systemd", "-ignore-term")
	mustRoundTrip(t, in2.addr(0), "")
	if code := in2.stop(syscall.SIGTERM, 10*time.Second); code != 137 {
		t.Fatalf("stop of an app that ignores SIGTERM: exit %d, want 137", code)
	}
}

// --forward-signals passes the listed signals to the running copy; sockhold's
// own signals cannot be listed.
func TestServeForwardSignals(t *testing.T) {
	events := filepath.Join(t.TempDir(), "events")
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--forward-signals", "USR1,WINCH",
		"--", appBin, "-dialect", "systemd", "-events", events)
	app, _ := strconv.Atoi(strings.Fields(mustRoundTrip(t, in.addr(0), ""))[1])
	for _, s := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGWINCH} {
		in.cmd.Process.Signal(s)
		r := in.waitFor(5*time.Second, func(r record) bool {
			return r.str("msg") == "signal passed on to the app" && r.str("signal") == unixSignalName(s)
		})
		if r.int("app_pid") != app {
			t.Fatalf("%v passed to %v, want the app %d", s, r, app)
		}
		// Before the next signal: the kernel delivers pending signals
		// lowest number first, so a SIGTERM sent right after SIGWINCH can
		// overtake it, and the app stops before it has noted SIGWINCH.
		waitAppEvent(t, events, app, "got "+s.String(), 5*time.Second)
	}
	if code := in.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	code, lines := runToExit(t, "serve", "--listen", "tcp://127.0.0.1:0", "--forward-signals", "HUP", "--", appBin)
	if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], "sockhold's own") {
		t.Fatalf("--forward-signals HUP: exit %d %q", code, lines)
	}
}

func unixSignalName(s syscall.Signal) string {
	return map[syscall.Signal]string{syscall.SIGUSR1: "SIGUSR1", syscall.SIGWINCH: "SIGWINCH"}[s]
}

// --copies 3: restarts keep at least 3 ready copies at every moment (by the
// apps' own clocks); rolling replaces one at a time (never more than 4
// ready), fleet starts all new ones before stopping any old one (6).
func TestServeCopiesStayReadyThroughRestarts(t *testing.T) {
	for _, c := range []struct {
		mode     string
		maxReady int
	}{{"rolling", 4}, {"fleet", 6}} {
		t.Run(c.mode, func(t *testing.T) {
			events := filepath.Join(t.TempDir(), "events")
			in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "-n", "3", "--restart", c.mode,
				"--", appBin, "-dialect", "systemd", "-events", events, "-ready-delay", "30ms")
			l := startLoad(t, in.addr(0), 4, appReply("app"))
			l.waitServed(t, 20, 10*time.Second)
			restartUnderLoad(t, in, l, 3)
			if _, errs := l.finish(); len(errs) > 0 {
				t.Fatalf("%d failed requests: %v", len(errs), errs[:min(5, len(errs))])
			}
			stopAt := time.Now().UnixNano()
			in.stop(syscall.SIGTERM, 15*time.Second)
			ready, signalled := map[int]int64{}, map[int]int64{}
			var moments []int64
			for _, e := range readEvents(t, events) {
				switch {
				case e.what == "ready":
					ready[e.pid] = e.at
					moments = append(moments, e.at)
				case strings.HasPrefix(e.what, "signal"):
					signalled[e.pid] = e.at
					moments = append(moments, e.at)
				}
			}
			if len(ready) != 12 {
				t.Fatalf("%d copies became ready, want 3 + 3 restarts x 3", len(ready))
			}
			sort.Slice(moments, func(i, j int) bool { return moments[i] < moments[j] })
			first3 := int64(0)
			maxSeen := 0
			for _, at := range moments {
				n := 0
				for pid, r := range ready {
					if s, ok := signalled[pid]; r <= at && (!ok || s > at) {
						n++
					}
				}
				if n >= 3 && first3 == 0 {
					first3 = at
				}
				maxSeen = max(maxSeen, n)
				if first3 != 0 && at < stopAt && n < 3 {
					t.Errorf("only %d ready copies at %v", n, time.Duration(at-first3))
				}
			}
			if maxSeen > c.maxReady {
				t.Errorf("%d copies ready at once, want at most %d for %s", maxSeen, c.maxReady, c.mode)
			}
			if c.mode == "fleet" && maxSeen != 6 {
				t.Errorf("fleet: at most %d ready at once, want all 6 before any old one stops", maxSeen)
			}
			t.Logf("%s: at most %d ready at once, never fewer than 3", c.mode, maxSeen)
		})
	}
}

// A rolling restart that fails half-way (the second new copy exits): the
// restart is reported failed, the new copies already started are stopped,
// and the old generation starts again the copy it had already stopped, so
// it is back to 3. Nothing fails meanwhile.
func TestServeRollingRestartFailingHalfWay(t *testing.T) {
	mode := filepath.Join(t.TempDir(), "mode")
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "-n", "3",
		"--", appBin, "-dialect", "systemd", "-mode-file", mode)
	old := in.workerPID()
	l := startLoad(t, in.addr(0), 4, appReply("app"))
	l.waitServed(t, 20, 10*time.Second)
	// The old copies hold EINHORN_CHILD_INDEX 0-2, so the new ones get
	// 3, 4, 5: the second new copy fails.
	os.WriteFile(mode, []byte("fail-copy 4"), 0o644)
	code, _, errOut := ctl(t, in, "upgrade", "--wait")
	if code != 1 || !strings.Contains(errOut, "exited before it was ready") {
		t.Fatalf("half-way failure: exit %d %q", code, errOut)
	}
	os.WriteFile(mode, nil, 0o644)
	// The old worker refills the slot its rolling half had emptied: its
	// fourth start (three at first, then the refill), which gets ready.
	startedByOld := func(r record) bool { return r.str("msg") == "app started" && r.int("worker_pid") == old }
	refill := in.waitForN(10*time.Second, 4, startedByOld)[3]
	in.waitFor(10*time.Second, func(r record) bool {
		return r.str("msg") == "app ready" && r.int("app_pid") == refill.int("app_pid")
	})
	l.waitServed(t, 20, 10*time.Second)
	if _, errs := l.finish(); len(errs) > 0 {
		t.Fatalf("%d failed requests: %v", len(errs), errs[:min(5, len(errs))])
	}
	if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatalf("good restart afterwards: %d %q %q", code, out, errOut)
	}
}

// --capture-output: each line the app writes to stdout or stderr is logged
// with its PID and generation, including what an old copy writes while it
// drains after its own worker has gone.
func TestServeCaptureOutput(t *testing.T) {
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--capture-output",
		"--", appBin, "-dialect", "systemd", "-chatty")
	old, _ := strconv.Atoi(strings.Fields(mustRoundTrip(t, in.addr(0), ""))[1])
	line := func(text string, pid, gen int) func(record) bool {
		return func(r record) bool {
			return r.str("msg") == "app output" && r.str("line") == text && r.int("app_pid") == pid && r.int("gen") == gen
		}
	}
	in.waitFor(5*time.Second, line(fmt.Sprintf("hello stdout %d", old), old, 1))
	in.waitFor(5*time.Second, line(fmt.Sprintf("hello stderr %d", old), old, 1))
	oldWorker := in.workerPID()
	if code, _, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatal(errOut)
	}
	in.waitFor(5*time.Second, func(r record) bool { return r.str("msg") == "worker exited" && r.int("pid") == oldWorker })
	in.waitFor(5*time.Second, line(fmt.Sprintf("draining %d", old), old, 1))
}
