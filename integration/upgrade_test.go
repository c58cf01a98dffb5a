package integration

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var versionReply = regexp.MustCompile(`^it-[12] [0-9]+\n$`)

func checkVersionReply(reply string) error {
	if !versionReply.MatchString(reply) {
		return fmt.Errorf("wrong reply %q", reply)
	}
	return nil
}

// expectedStream is what the test handler's stream mode writes.
func expectedStream(n int) []byte {
	b := make([]byte, n)
	var x uint32 = 2463534242
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// Handlers streaming for several seconds across three upgrades finish with
// intact data, and their clean exit is reaped and logged by the holder.
func TestInFlightHandlersSurviveUpgrades(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	const size = 1 << 20
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "4",
		"--", handlerBin, "stream", strconv.Itoa(size), "3s")
	want := sha256.Sum256(expectedStream(size))
	var wg sync.WaitGroup
	results := make(chan error, 3)
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", in.addr(0))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil {
				results <- err
			} else if sha256.Sum256(b) != want {
				results <- fmt.Errorf("stream of %d bytes corrupted", len(b))
			}
		}(c)
	}
	starts := in.waitForN(5*time.Second, 3, msgIs("START"))
	for i := 0; i < 3; i++ {
		swapBinary(t, exe, []string{sockholdB, sockholdBin}[i%2])
		if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
			t.Fatalf("upgrade %d: %d %s %s", i, code, out, errOut)
		}
	}
	wg.Wait()
	close(results)
	for err := range results {
		t.Error(err)
	}
	for _, s := range starts {
		pid := s.int("pid")
		r := in.waitFor(10*time.Second, func(r record) bool { return r.str("msg") == "EXIT" && r.int("pid") == pid })
		if r.str("status") != "0" || r.str("reaped_by") != "holder" || r.str("gen") != "1" {
			t.Errorf("handler %d: %v, want a clean exit of a generation-1 handler reaped by the holder", pid, r)
		}
	}
}

// One budget across generations: four long handlers of generation 1 hold
// all of --processes 4; after an upgrade, 20 new clients wait and are
// served only as those slots free; never more than 4 handlers alive.
func TestProcessBudgetHoldsAcrossUpgrade(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	counter := filepath.Join(t.TempDir(), "live")
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "4", "--", handlerBin, "hold", counter)
	var old []net.Conn
	for i := 0; i < 4; i++ {
		old = append(old, dialReady(t, in.addr(0)))
	}
	maxSampled := sampleLiveHandlers(in)
	swapBinary(t, exe, sockholdB)
	if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatalf("upgrade: %d %s %s", code, out, errOut)
	}
	var waiting []net.Conn
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", in.addr(0))
		if err != nil {
			t.Fatal(err)
		}
		waiting = append(waiting, c)
	}
	// The new worker has looked at its gate and left them queued.
	in.waitFor(5*time.Second, func(r record) bool { return r.str("msg") == "queue" && r.str("why") == "full" && r.int("gen") == 2 })
	if n := in.count(msgIs("START")); n != 4 {
		t.Fatalf("%d handlers started while generation 1 held every slot", n)
	}
	for _, c := range old {
		c.Close()
	}
	for i, c := range waiting {
		buf := make([]byte, 6)
		if _, err := readAll(c, buf); err != nil || string(buf) != "ready\n" {
			t.Fatalf("waiting client %d: %q %v", i, buf, err)
		}
		c.Close()
	}
	sampled := maxSampled()
	maxFile, _ := os.ReadFile(counter + ".max")
	counted, _ := strconv.Atoi(strings.TrimSpace(string(maxFile)))
	t.Logf("max live handlers: %d by their own count, %d sampled", counted, sampled)
	if counted != 4 {
		t.Fatalf("handlers counted %d alive at once, want exactly the limit 4", counted)
	}
	if sampled > 4 {
		t.Fatalf("%d handlers sampled alive at once, limit 4: %s", sampled, describeHandlers(in.pid()))
	}
}

// Back-to-back: five upgrades in a row, each accepted as soon as the one
// before completed, while a generation-1 handler keeps running throughout.
func TestBackToBackUpgradesWhileOldHandlerRuns(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "2", "--", handlerBin, "hold")
	held := dialReady(t, in.addr(0))
	defer held.Close()
	for i := 0; i < 5; i++ {
		swapBinary(t, exe, []string{sockholdB, sockholdBin}[i%2])
		if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
			t.Fatalf("upgrade %d: exit %d %s %s", i+1, code, out, errOut)
		}
	}
	code, out, _ := ctl(t, in, "status", "--json")
	if code != 0 || !strings.Contains(out, `"gen": 6`) || !regexp.MustCompile(`"1": 1`).MatchString(out) {
		t.Fatalf("status: %s", out)
	}
	held.Write([]byte("x"))
	held.(*net.TCPConn).CloseWrite()
	buf := make([]byte, 4)
	if n, _ := readAll(held, buf); string(buf[:n]) != "bye\n" {
		t.Fatalf("generation-1 handler after 5 upgrades: %q", buf[:n])
	}
}

// A SIGHUP during an upgrade is queued, not lost: two SIGHUPs in a row make
// two upgrades.
func TestSIGHUPDuringUpgradeIsQueued(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "version")
	// Identical standard signals that are both pending merge in the
	// kernel; the second is sent once the first is being acted on.
	in.cmd.Process.Signal(syscall.SIGHUP)
	in.waitFor(10*time.Second, msgIs("upgrade started"))
	in.cmd.Process.Signal(syscall.SIGHUP)
	in.waitForN(10*time.Second, 2, msgIs("upgrade done"))
	if got := mustRoundTrip(t, in.addr(0), ""); got != "it-1 3\n" {
		t.Fatalf("after two SIGHUPs: %q, want generation 3", got)
	}
}

// Broken upgrades. The holder checks the new binary before it re-executes
// it: one that exits 1, hangs, is not executable, or is an older sockhold
// that does not know the state format fails there. One that passes the
// check but whose worker exits 1 or never gets ready fails in the worker
// upgrade. Each `upgrade --wait` fails with the reason on one line, traffic
// continues without a single error, and a good upgrade then works.
func TestBrokenUpgradesLeaveTheOldGenerationServing(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "4",
		"--upgrade-timeout", "1s", "--", handlerBin, "version")
	holder := in.pid()
	l := startLoad(t, in.addr(0), 4, checkVersionReply)
	l.waitSeen(t, "it-1 1\n", 10*time.Second)
	cases := []struct {
		name    string
		install func()
		reason  string
	}{
		{"exits 1", func() { wrapper(t, exe, "exit 1\n") }, "check mode: exit status 1"},
		{"hangs in check mode", func() { wrapper(t, exe, "exec sleep 60\n") }, "no answer within 5s in check mode"},
		{"not executable", func() { copyFile(t, sockholdB, exe, 0o644) }, "permission denied"},
		{"an older sockhold", func() { copyFile(t, sockholdOld, exe, 0o755) }, "this sockhold understands up to 0"},
		{"worker exits 1", func() { wrapper(t, exe, "case \"$1\" in worker) exit 1;; esac\nexec "+sockholdBin+" \"$@\"\n") }, "exited: exit status 1"},
		{"worker never ready", func() { wrapper(t, exe, "case \"$1\" in worker) exec sleep 60;; esac\nexec "+sockholdBin+" \"$@\"\n") }, "timed out"},
	}
	for _, c := range cases {
		c.install()
		code, out, errOut := ctl(t, in, "upgrade", "--wait")
		if code != 1 || !strings.Contains(errOut, c.reason) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 and one line with %q", c.name, code, out, errOut, c.reason)
		}
		l.waitServed(t, 10, 10*time.Second)
	}
	swapBinary(t, exe, sockholdB)
	if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 || !strings.Contains(out, "version it-2") {
		t.Fatalf("good upgrade after broken ones: %d %q %q", code, out, errOut)
	}
	l.waitSeen(t, "it-2 2\n", 10*time.Second)
	_, errs := l.finish()
	if len(errs) > 0 {
		t.Fatalf("%d failed requests during broken upgrades: %v", len(errs), errs[:min(5, len(errs))])
	}
	code, out, _ := ctl(t, in, "status", "--json")
	if code != 0 || !strings.Contains(out, `"upgrades_failed": 6`) || !strings.Contains(out, `"upgrades_ok": 1`) ||
		!strings.Contains(out, `"version": "it-2"`) || !strings.Contains(out, fmt.Sprintf(`"holder_pid": %d`, holder)) {
		t.Errorf("status: %s", out)
	}
}

// slowBinary is a wrapper that, as a worker, waits before becoming the real
// sockhold, so a test can act while a worker upgrade is in progress (the
// holder's own check and re-execution go straight on). exec keeps the PID.
func slowBinary(t *testing.T, exe, real string, delay string) {
	t.Helper()
	wrapper(t, exe, "case \"$1\" in worker) sleep "+delay+";; esac\nexec "+real+" \"$@\"\n")
}

// wrapper puts a shell script at exe, atomically.
func wrapper(t *testing.T, exe, body string) {
	t.Helper()
	tmp := exe + ".new"
	if err := os.WriteFile(tmp, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, exe); err != nil {
		t.Fatal(err)
	}
}

// workerChild finds the new worker an upgrade is starting: the child of the
// old worker running the slowBinary wrapper. (A handler caught between
// vfork and exec still shows the worker's environment and command line, so
// neither of those can tell them apart; the wrapper's /bin/sh can.)
func workerChild(t *testing.T, oldWorker int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, pid := range childrenOf(oldWorker) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if bytes.HasPrefix(b, []byte("/bin/sh\x00")) {
				return pid
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the upgrade never started a new worker")
	return 0
}

// SIGKILL of the new worker while it starts: the upgrade fails, the old
// generation serves on, nothing is refused.
func TestNewWorkerKilledMidUpgrade(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "4", "--", handlerBin, "version")
	l := startLoad(t, in.addr(0), 4, checkVersionReply)
	l.waitSeen(t, "it-1 1\n", 10*time.Second)
	slowBinary(t, exe, sockholdB, "1")
	result := make(chan string, 1)
	go func() {
		code, _, errOut := ctl(t, in, "upgrade", "--wait")
		result <- fmt.Sprint(code, " ", errOut)
	}()
	signalPID(workerChild(t, in.workerPID()), syscall.SIGKILL)
	if r := <-result; !strings.HasPrefix(r, "1 ") || !strings.Contains(r, "exited") {
		t.Errorf("upgrade --wait with the new worker killed: %s", r)
	}
	l.waitServed(t, 20, 10*time.Second)
	if _, errs := l.finish(); len(errs) > 0 {
		t.Fatalf("%d failed requests: %v", len(errs), errs[:min(5, len(errs))])
	}
}

// SIGKILL of the old worker while the new one starts: service continues
// (the new worker takes over, or a fresh one is started), nothing refused.
func TestOldWorkerKilledMidUpgrade(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "4", "--", handlerBin, "version")
	l := startLoad(t, in.addr(0), 4, checkVersionReply)
	l.waitSeen(t, "it-1 1\n", 10*time.Second)
	old := in.workerPID()
	slowBinary(t, exe, sockholdB, "0.5")
	result := make(chan int, 1)
	go func() {
		code, _, _ := ctl(t, in, "upgrade", "--wait")
		result <- code
	}()
	workerChild(t, old)
	signalPID(old, syscall.SIGKILL)
	<-result // either outcome is truthful; what matters is the service
	in.waitFor(10*time.Second, func(r record) bool { return r.str("msg") == "serving" && r.int("worker") != old })
	l.waitServed(t, 20, 10*time.Second)
	// Nothing is refused. The one thing SIGKILL can take is a connection
	// the old worker had accepted and not yet handed to its handler (a
	// window of a fraction of a millisecond): that client sees EOF. The
	// worker hands each connection off before accepting the next, so there
	// is at most one.
	_, errs := l.finish()
	eofs := 0
	for _, e := range errs {
		if e == `wrong reply ""` {
			eofs++
		} else {
			t.Errorf("failed request: %s", e)
		}
	}
	if eofs > 1 {
		t.Fatalf("%d connections lost to the SIGKILL, at most 1 can be", eofs)
	}
}

func describeHandlers(holder int) string {
	var b strings.Builder
	queue := []int{holder}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range childrenOf(pid) {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
			fmt.Fprintf(&b, "[%d parent=%d handler=%v alive=%v stat=%.60s] ", c, pid, isHandler(c), processAlive(c), st)
			queue = append(queue, c)
		}
	}
	return b.String()
}

// `sockhold upgrade` while an upgrade is under way is answered at once,
// "upgrade already in progress", and the running upgrade completes.
func TestUpgradeDuringUpgradeAnswersInProgress(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "version")
	slowBinary(t, exe, sockholdB, "1")
	first := make(chan string, 1)
	go func() {
		code, out, errOut := ctl(t, in, "upgrade", "--wait")
		first <- fmt.Sprint(code, " ", out, errOut)
	}()
	workerChild(t, in.workerPID()) // the first upgrade is under way
	code, _, errOut := ctl(t, in, "upgrade", "--wait")
	if code != 1 || !strings.Contains(errOut, "upgrade already in progress") {
		t.Fatalf("second upgrade: exit %d %q", code, errOut)
	}
	if r := <-first; !strings.HasPrefix(r, "0 ") || !strings.Contains(r, "version it-2") {
		t.Fatalf("first upgrade: %s", r)
	}
}

// SIGTERM while an upgrade is under way: the upgrade is abandoned with a
// reason, every worker stops, in-flight handlers finish, sockhold exits 0
// and leaves no process behind.
func TestStopDuringUpgrade(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "2", "--", handlerBin, "sleep", "500ms")
	c, err := net.Dial("tcp", in.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in.waitFor(5*time.Second, msgIs("START"))
	old := in.workerPID()
	slowBinary(t, exe, sockholdB, "1")
	result := make(chan string, 1)
	go func() {
		code, _, errOut := ctl(t, in, "upgrade", "--wait")
		result <- fmt.Sprint(code, " ", errOut)
	}()
	child := workerChild(t, old)
	if code := in.stop(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if r := <-result; !strings.HasPrefix(r, "1 ") {
		t.Errorf("upgrade during stop: %s", r)
	}
	buf := make([]byte, 3)
	if _, err := readAll(c, buf); err != nil || string(buf) != "ok\n" {
		t.Errorf("in-flight client: %q %v", buf, err)
	}
	assertGone(t, "process", append(startedPIDs(in), old, child)...)
}
