package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// holderStatus is the part of `status --json` the tests read.
type holderStatus struct {
	HolderPID      int            `json:"holder_pid"`
	Version        string         `json:"version"`
	HolderReplaced int            `json:"holder_replaced"`
	Generation     int            `json:"gen"`
	WorkerPID      int            `json:"worker_pid"`
	HandlersByGen  map[string]int `json:"handlers_by_gen"`
	SlotsUsed      int            `json:"slots_used"`
	Accepted       int            `json:"accepted"`
	UpgradesOK     int            `json:"upgrades_ok"`
	UpgradesFailed int            `json:"upgrades_failed"`
	WorkerRestarts int            `json:"worker_restarts"`
	Apps           []struct {
		PID      int  `json:"pid"`
		Gen      int  `json:"gen"`
		Stopping bool `json:"stopping"`
	} `json:"apps"`
}

func statusOf(t *testing.T, in *instance) holderStatus {
	t.Helper()
	code, out, errOut := ctl(t, in, "status", "--json")
	var st holderStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status: exit %d %q %q", code, out, errOut)
	}
	return st
}

// newWorkerServing waits for a worker other than old to report serving,
// after every serving record logged so far (PIDs are reused: a long test
// can see the same PID serve twice).
func (in *instance) newWorkerServing(old int, timeout time.Duration) record {
	in.t.Helper()
	before := in.count(msgIs("serving"))
	for n := before + 1; ; n++ {
		rs := in.waitForN(timeout, n, msgIs("serving"))
		if r := rs[n-1]; r.int("worker") != old {
			return r
		}
	}
}

// comm is a process's command name.
func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// Processes a handler leaves in the background (cmd &, rsync's pre- and
// post-xfer scripts) end up children of the holder, the subreaper. After an
// upgrade or a worker crash they are reaped when they end but never counted
// against --processes: the only slot stays free.
func TestDaemonisedDescendantsAreNotHandlers(t *testing.T) {
	for _, how := range []string{"upgrade", "crash"} {
		t.Run(how, func(t *testing.T) {
			exe := installSockhold(t, sockholdBin)
			in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "1",
				"--stop-timeout", "1s", "--kill-grace", "500ms",
				"--", "/bin/sh", "-c", "sleep 300 </dev/null >/dev/null 2>&1 & echo ok")
			for i := 0; i < 3; i++ {
				if got := mustRoundTrip(t, in.addr(0), ""); got != "ok\n" {
					t.Fatalf("connection %d: %q", i, got)
				}
			}
			in.waitForN(5*time.Second, 3, func(r record) bool { return r.str("msg") == "EXIT" })
			old := in.workerPID()
			switch how {
			case "upgrade":
				swapBinary(t, exe, sockholdB)
				if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
					t.Fatalf("upgrade: %d %q %q", code, out, errOut)
				}
			case "crash":
				signalPID(old, syscall.SIGKILL)
				in.newWorkerServing(old, 5*time.Second)
			}
			sleeps := 0
			for _, c := range childrenOf(in.pid()) {
				if comm(c) == "sleep" {
					sleeps++
				}
			}
			if sleeps != 3 {
				t.Fatalf("%d background sleeps are the holder's children, want 3: the test proves nothing", sleeps)
			}
			if st := statusOf(t, in); st.SlotsUsed != 0 {
				t.Fatalf("%d of 1 slots used by processes that were never handlers: %+v", st.SlotsUsed, st)
			}
			begin := time.Now()
			if got := mustRoundTrip(t, in.addr(0), ""); got != "ok\n" {
				t.Fatalf("after the %s: %q", how, got)
			}
			if d := time.Since(begin); d > 2*time.Second {
				t.Fatalf("a new client waited %v for the only slot, held by no handler", d)
			}
		})
	}
}

// A handler that runs something with SOCKHOLD_ROLE=worker (or anything
// else a worker's environment has) is still a handler: after a worker
// crash a new worker serves at once, and the handler is counted, untouched.
func TestHandlerWithAWorkersEnvironmentIsAHandler(t *testing.T) {
	env, err := exec.LookPath("env")
	if err != nil {
		t.Fatal(err)
	}
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "2",
		"--", env, "SOCKHOLD_ROLE=worker", "SOCKHOLD_CONFIG={}", "SOCKHOLD_FDS={}", handlerBin, "hold")
	held := dialReady(t, in.addr(0))
	defer held.Close()
	handler := in.waitFor(5*time.Second, msgIs("START")).int("pid")
	old := in.workerPID()
	killed := time.Now()
	signalPID(old, syscall.SIGKILL)
	in.newWorkerServing(old, 5*time.Second)
	if d := time.Since(killed); d > 2*time.Second {
		t.Fatalf("no worker served for %v after the crash", d)
	}
	if st := statusOf(t, in); st.SlotsUsed != 1 {
		t.Fatalf("the live handler is not counted: %+v", st)
	}
	if !processAlive(handler) || in.count(func(r record) bool { return strings.Contains(r.str("msg"), "killing") }) > 0 {
		t.Fatalf("the handler was taken for a worker:\n%s", in.dump())
	}
	held.Write([]byte("x"))
	held.(interface{ CloseWrite() error }).CloseWrite()
	buf := make([]byte, 4)
	if n, _ := readAll(held, buf); string(buf[:n]) != "bye\n" {
		t.Fatalf("handler after the crash: %q", buf[:n])
	}
}

// 100 worker SIGKILLs under 8-client load, with handlers caught between
// vfork and exec at some of them: every new worker serves at once, no
// handler is ever taken for a worker or killed, and the only connections
// lost are the one each SIGKILL can take (accepted, not yet handed on).
func TestWorkerKillsUnderLoadNeverTakeAHandler(t *testing.T) {
	in := startWith(t, startOpts{verbosity: "-v"}, "--listen", "tcp://127.0.0.1:0", "--processes", "8", "--", handlerBin, "version")
	l := startLoad(t, in.addr(0), 8, checkVersionReply)
	const kills = 100
	for i := 0; i < kills; i++ {
		l.waitServed(t, 5, 10*time.Second)
		old := in.workerPID()
		signalPID(old, syscall.SIGKILL)
		in.newWorkerServing(old, 3*time.Second)
	}
	l.waitServed(t, 20, 10*time.Second)
	served, errs := l.finish()
	eofs := 0
	for _, e := range errs {
		if e == `wrong reply ""` {
			eofs++
		} else {
			t.Errorf("failed request: %s", e)
		}
	}
	t.Logf("%d requests across %d worker kills, %d lost to a kill", served, kills, eofs)
	if eofs > kills {
		t.Fatalf("%d connections lost to %d kills", eofs, kills)
	}
	for _, r := range in.all(func(r record) bool { return strings.Contains(r.str("msg"), "killing") }) {
		t.Errorf("the holder killed something: %v", r)
	}
	for _, r := range in.all(func(r record) bool { return r.str("msg") == "EXIT" && r.str("reaped_by") == "holder" }) {
		if r.str("status") != "0" {
			t.Errorf("a handler of a killed worker did not end by itself: %v", r)
		}
	}
	if st := statusOf(t, in); st.WorkerRestarts != kills {
		t.Errorf("status counts %d worker restarts, want %d", st.WorkerRestarts, kills)
	}
}

// Serve mode, worker SIGKILLed: its app copy is the old generation. The
// new worker starts a copy; once that one is ready the old copy gets
// --stop-signal (no two servers left running unmanaged), and a stop ends
// cleanly with status 0.
func TestServeWorkerKilledStopsTheOldCopies(t *testing.T) {
	for _, copies := range []int{1, 2} {
		t.Run(fmt.Sprintf("copies %d", copies), func(t *testing.T) {
			in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "-n", fmt.Sprint(copies),
				"--", appBin, "-dialect", "systemd")
			first := map[int]bool{}
			for _, r := range in.waitForN(5*time.Second, copies, msgIs("app ready")) {
				first[r.int("app_pid")] = true
			}
			l := startLoad(t, in.addr(0), 4, appReply("app"))
			l.waitServed(t, 20, 10*time.Second)
			maxApps := sampleApps(in)
			old := in.workerPID()
			signalPID(old, syscall.SIGKILL)
			in.newWorkerServing(old, 10*time.Second)
			for pid := range first {
				in.waitFor(10*time.Second, func(r record) bool {
					return r.str("msg") == "app asked to stop" && r.int("app_pid") == pid && r.str("role") == "holder"
				})
				in.waitFor(10*time.Second, func(r record) bool { return r.str("msg") == "EXIT" && r.int("pid") == pid })
			}
			l.waitServed(t, 20, 10*time.Second)
			if n := maxApps(); n > 2*copies {
				t.Errorf("%d copies ran at once, want at most %d + the %d being replaced", n, copies, copies)
			}
			if st := statusOf(t, in); len(st.Apps) != copies {
				t.Errorf("status shows %d copies, want %d: %+v", len(st.Apps), copies, st.Apps)
			}
			if _, errs := l.finish(); len(errs) > 0 {
				t.Errorf("%d failed requests: %v", len(errs), errs[:min(5, len(errs))])
			}
			if code := in.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
				t.Fatalf("exit status %d, want 0", code)
			}
		})
	}
}

// sampleApps counts, every few milliseconds until the returned function is
// called, the app copies alive under the holder; it returns the most seen.
func sampleApps(in *instance) func() int {
	done, finished := make(chan struct{}), make(chan int)
	go func() {
		most := 0
		for {
			select {
			case <-done:
				finished <- most
				return
			case <-time.After(2 * time.Millisecond):
			}
			n := 0
			queue := []int{in.pid()}
			for len(queue) > 0 {
				pid := queue[0]
				queue = queue[1:]
				for _, c := range childrenOf(pid) {
					if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); exe == appBin && processAlive(c) {
						n++
					}
					queue = append(queue, c)
				}
			}
			most = max(most, n)
		}
	}()
	return func() int { close(done); return <-finished }
}
