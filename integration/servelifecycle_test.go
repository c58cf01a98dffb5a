package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A serve worker stays until its copies have drained. These are the
// lifecycle's corners that this makes reachable.

// runningCopies is how many copies of the current generation status shows
// running and not stopping.
func runningCopies(t *testing.T, in *instance) int {
	t.Helper()
	code, out, errOut := ctl(t, in, "status", "--json")
	var s struct {
		Gen  int `json:"gen"`
		Apps []struct {
			Gen      int  `json:"gen"`
			Stopping bool `json:"stopping"`
		} `json:"apps"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil {
		t.Fatalf("status: %d %q %q", code, out, errOut)
	}
	n := 0
	for _, a := range s.Apps {
		if a.Gen == s.Gen && !a.Stopping {
			n++
		}
	}
	return n
}

// A stop during a rolling restart: the old worker, still waiting for its
// copies, starts none again (its successor's exit is no failed restart to
// make up for), and the stop takes the drain, not a kill timer's wait.
func TestStopDuringARollingRestartStartsNothing(t *testing.T) {
	// The old copies drain for 2 s, the new ones not at all: the new
	// worker exits while the old one still waits for its copies.
	mode := filepath.Join(t.TempDir(), "mode")
	os.WriteFile(mode, []byte("drain-delay 2s"), 0o644)
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "-n", "3", "--drain-timeout", "3s",
		"--", appBin, "-dialect", "systemd", "-ready-delay", "1s", "-mode-file", mode)
	os.WriteFile(mode, nil, 0o644)
	old := in.workerPID()
	go ctl(t, in, "upgrade", "--wait")
	// One new copy was ready and one old one has drained: the roll is
	// half-way.
	in.waitFor(10*time.Second, func(r record) bool {
		return r.str("msg") == "app exited" && r.int("worker_pid") == old
	})
	begin := time.Now()
	in.stop(syscall.SIGTERM, 20*time.Second)
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("the stop took %v (drain 3s)", d)
	}
	stopped := false
	for _, r := range in.all(func(record) bool { return true }) {
		if r.int("worker_pid") == old && r.str("msg") == "worker stopping" {
			stopped = true
		}
		if stopped && r.int("worker_pid") == old && r.str("msg") == "app started" {
			t.Errorf("the old worker started a copy after it was told to stop: %v", r)
		}
		if r.str("msg") == "worker did not exit in time; killing it" {
			t.Errorf("%v", r)
		}
	}
}

// A rolling restart that fails half-way when the holder started the new
// generation (the current worker's own predecessor still drains, so
// tableflip could not): the old generation still gets back the copy it had
// stopped.
func TestFailedRollingRestartThroughTheHolderRefills(t *testing.T) {
	mode := filepath.Join(t.TempDir(), "mode")
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "-n", "3", "--drain-timeout", "20s",
		"--", appBin, "-dialect", "systemd", "-mode-file", mode, "-drain-delay", "4s")
	if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatalf("restart 1: %d %q %q", code, out, errOut)
	}
	// Live now: generation 1's copies (indices 0-2, draining) and
	// generation 2's (3-5); the next ones get 6, 7, 8, and 7 fails.
	os.WriteFile(mode, []byte("fail-copy 7"), 0o644)
	if code, _, errOut := ctl(t, in, "upgrade", "--wait"); code != 1 {
		t.Fatalf("restart 2 should fail: exit %d %q", code, errOut)
	}
	os.WriteFile(mode, nil, 0o644)
	if in.count(func(r record) bool { return r.str("msg") == "worker started" && r.str("successor") == "true" }) == 0 {
		t.Fatal("the holder did not start the second restart's worker: the test proves nothing")
	}
	for deadline := time.Now().Add(10 * time.Second); runningCopies(t, in) != 3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the current generation has %d copies running, want 3", runningCopies(t, in))
		}
	}
}

// A failed restart is answered when it fails, not once the new
// generation's copies have drained.
func TestFailedRestartIsAnsweredAtOnce(t *testing.T) {
	mode := filepath.Join(t.TempDir(), "mode")
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "-n", "2", "--drain-timeout", "20s",
		"--", appBin, "-dialect", "systemd", "-mode-file", mode, "-drain-delay", "4s")
	// The old copies hold 0 and 1: the new ones get 2 (ready, then
	// stopped and draining for 4 s) and 3, which fails.
	os.WriteFile(mode, []byte("fail-copy 3"), 0o644)
	begin := time.Now()
	if code, _, errOut := ctl(t, in, "upgrade", "--wait"); code != 1 {
		t.Fatalf("the restart should fail: exit %d %q", code, errOut)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("the failed restart was answered after %v", d)
	}
}

// A second SIGTERM hurries a serve-mode stop even while the workers wait
// for their copies: the apps are killed.
func TestSecondStopSignalHurriesTheApps(t *testing.T) {
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--drain-timeout", "20s",
		"--", appBin, "-dialect", "systemd", "-drain-delay", "15s")
	in.cmd.Process.Signal(syscall.SIGTERM)
	in.waitFor(5*time.Second, msgIs("app asked to stop"))
	begin := time.Now()
	in.stop(syscall.SIGTERM, 20*time.Second)
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("the stop took %v after the second SIGTERM", d)
	}
}

// A serve worker that someone else sends SIGTERM is replaced at once, not
// once its copies have drained.
func TestWorkerStoppedBySomeoneElseIsReplacedAtOnce(t *testing.T) {
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--drain-timeout", "20s",
		"--", appBin, "-dialect", "systemd", "-drain-delay", "5s")
	old := in.workerPID()
	begin := time.Now()
	signalPID(old, syscall.SIGTERM)
	in.newWorkerServing(old, 10*time.Second)
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("a new worker served %v after the old one was told to stop", d)
	}
	if err := appReply("app")(mustRoundTrip(t, in.addr(0), "")); err != nil {
		t.Fatal(err)
	}
}

// On demand: a copy the worker stopped for idleness still gets its
// --drain-timeout, and no more, when sockhold stops meanwhile.
func TestIdleStoppedCopyDrainsThroughAStop(t *testing.T) {
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--on-demand", "--idle-stop", "500ms",
		"--drain-timeout", "2s", "--", appBin, "-dialect", "systemd", "-ignore-term")
	mustRoundTrip(t, in.addr(0), "")
	in.waitFor(10*time.Second, msgIs("idle: stopping the app"))
	begin := time.Now()
	in.stop(syscall.SIGTERM, 20*time.Second)
	if d := time.Since(begin); d > 4*time.Second {
		t.Fatalf("the stop took %v (drain 2s)", d)
	}
}
