package integration

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The holder logs to a stderr whose reader has gone (sockhold ... 2>&1 |
// logger, a log shipper that restarts): it must not die of SIGPIPE and
// take every listener with it, not even when its parent ignores SIGPIPE.
// A reader that stays but stops reading (the pipe full) must not stall
// sockhold either: lines are dropped, connections are served.
func TestHolderSurvivesAGoneLogReader(t *testing.T) {
	for _, c := range []struct {
		name, wrap string
		stall      bool
	}{
		{"plain", "", false},
		{"parent ignores SIGPIPE", `trap "" PIPE; exec "$0" "$@"`, false},
		{"reader stalls", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctlPath := controlPath(t)
			args := []string{"--log-format", "json", "-v", "--control", ctlPath, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "echo", "hi"}
			cmd := exec.Command(sockholdBin, args...)
			if c.wrap != "" {
				cmd = exec.Command("sh", append([]string{"-c", c.wrap, sockholdBin}, args...)...)
			}
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = w
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
				}
			}()
			var addr string
			for sc := bufio.NewScanner(r); sc.Scan(); {
				line := sc.Text()
				if i := strings.Index(line, `"addr":"`); i >= 0 && addr == "" {
					addr = strings.SplitN(line[i+8:], `"`, 2)[0]
				}
				if strings.Contains(line, `"msg":"serving"`) {
					break
				}
			}
			if addr == "" {
				t.Fatal("sockhold never said where it listens")
			}
			conns := 5
			if c.stall {
				conns = 1500 // some 3000 log lines: far more than a pipe holds
				defer r.Close()
			} else {
				r.Close() // the log reader goes away
			}
			for i := 0; i < conns; i++ {
				if got, err := roundTrip(t, addr, ""); err != nil || got != "hi\n" {
					t.Fatalf("connection %d after the log reader left: %q %v", i, got, err)
				}
			}
			select {
			case err := <-done:
				t.Fatalf("sockhold died when its log reader left: %v", err)
			default:
			}
			status := exec.Command(sockholdBin, "status", "--control", ctlPath)
			if out, err := status.CombinedOutput(); err != nil || !strings.Contains(string(out), "serving true") {
				t.Fatalf("status: %v %s", err, out)
			}
		})
	}
}

// --on-stop term with a handler that ignores SIGTERM and leaves a
// descendant in a session of its own: the descendant reaches the holder
// only once the handler is killed, after the first SIGKILL sweep. The stop
// still finishes, promptly, with nothing left running.
func TestStopFinishesWithLateDescendants(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--on-stop", "term", "--kill-grace", "300ms",
		"--", "/bin/sh", "-c", `trap "" TERM; setsid sleep 300 & wait`)
	c, err := net.Dial("tcp", in.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	handler := in.waitFor(5*time.Second, msgIs("START")).int("pid")
	var sleeper int
	for deadline := time.Now().Add(5 * time.Second); sleeper == 0; time.Sleep(5 * time.Millisecond) {
		for _, pid := range childrenOf(handler) {
			if comm(pid) == "sleep" {
				sleeper = pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the handler's descendant never started")
		}
	}
	begin := time.Now()
	if code := in.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	t.Logf("stopped in %v", time.Since(begin).Round(time.Millisecond))
	assertGone(t, "handler", handler)
	assertGone(t, "descendant", sleeper)
}

// The holder runs out of descriptors just as an upgrade's new worker dials
// in: accepting on the rendezvous pauses and is retried (and says so), and
// once descriptors are free again the new worker links and the upgrade
// completes.
func TestRendezvousRecoversFromEMFILE(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "echo", "up")
	slowBinary(t, exe, sockholdB, "1")
	result := make(chan string, 1)
	go func() {
		code, out, errOut := ctl(t, in, "upgrade", "--wait")
		result <- fmt.Sprint(code, " ", out, errOut)
	}()
	workerChild(t, in.workerPID()) // the holder has re-executed; the new worker is on its way
	var old unix.Rlimit
	if err := unix.Prlimit(in.pid(), unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	lim := unix.Rlimit{Cur: uint64(maxFD(t, in.pid()) + 4), Max: old.Max}
	if err := unix.Prlimit(in.pid(), unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			unix.Prlimit(in.pid(), unix.RLIMIT_NOFILE, &old, nil)
		}
	}
	defer restore()
	// Idle control clients take what is left.
	var idle []net.Conn
	for i := 0; i < 8; i++ {
		if c, err := net.Dial("unix", in.ctl); err == nil {
			idle = append(idle, c)
		}
	}
	in.waitFor(10*time.Second, msgIs("worker rendezvous: accept failed; pausing"))
	// They leave; the holder has descriptors again.
	for _, c := range idle {
		c.Close()
	}
	r := <-result
	restore()
	if !strings.HasPrefix(r, "0 ") || !strings.Contains(r, "version it-2") {
		t.Fatalf("upgrade with the holder out of descriptors: %s", r)
	}
	if got := mustRoundTrip(t, in.addr(0), ""); got != "up\n" {
		t.Fatalf("after the upgrade: %q", got)
	}
}

// maxFD is the highest descriptor number pid has open.
func maxFD(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	most := 0
	for _, e := range ents {
		var n int
		fmt.Sscan(e.Name(), &n)
		most = max(most, n)
	}
	return most
}

// A stopped worker whose link the holder keeps writing to (a flood of
// forwarded signals) never freezes the holder: status answers throughout,
// and once the link's bounded queue is full the wedged worker is killed
// and replaced.
func TestWedgedWorkerDoesNotFreezeTheHolder(t *testing.T) {
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--forward-signals", "USR1",
		"--", appBin, "-dialect", "systemd")
	in.waitFor(5*time.Second, msgIs("app ready"))
	worker := in.workerPID()
	signalPID(worker, syscall.SIGSTOP)
	defer signalPID(worker, syscall.SIGCONT)
	stop := make(chan struct{})
	flooded := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				flooded <- n
				return
			default:
			}
			signalPID(in.pid(), syscall.SIGUSR1)
			n++
		}
	}()
	gaveUp := func(r record) bool { return r.str("msg") == "cannot send to the worker; killing it" }
	for deadline := time.Now().Add(30 * time.Second); in.count(gaveUp) == 0; {
		if time.Now().After(deadline) {
			close(stop)
			t.Fatalf("the holder never gave up on the wedged worker (%d signals sent)", <-flooded)
		}
		begin := time.Now()
		if code, out, errOut := ctl(t, in, "status"); code != 0 {
			t.Fatalf("status during the flood: %d %q %q", code, out, errOut)
		}
		if d := time.Since(begin); d > 2*time.Second {
			t.Fatalf("status took %v with a wedged worker", d)
		}
	}
	close(stop)
	t.Logf("%d SIGUSR1 sent before the holder gave up on the stopped worker", <-flooded)
	in.newWorkerServing(worker, 10*time.Second)
}

// rendezvousName finds the holder's abstract rendezvous socket.
func rendezvousName(t *testing.T, holder int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("@sockhold/%d/", holder)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 8 && strings.HasPrefix(f[7], prefix) && f[5] == "01" {
			return f[7]
		}
	}
	t.Fatal("no rendezvous socket found")
	return ""
}

// Any local user can connect to the abstract rendezvous. A loop of such
// connections is refused without a log line each: one line, then a
// summary at most every 10 s.
func TestRendezvousFloodIsNotLogged(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "echo", "up")
	name := rendezvousName(t, in.pid())
	n := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); n++ {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Connect(fd, &unix.SockaddrUnix{Name: name})
		unix.Close(fd)
	}
	if got := mustRoundTrip(t, in.addr(0), ""); got != "up\n" {
		t.Fatalf("serving after the flood: %q", got)
	}
	lines := in.count(func(r record) bool { return strings.Contains(r.str("msg"), "refused") })
	t.Logf("%d connections to the rendezvous, %d log lines", n, lines)
	if n < 1000 || lines > 2 {
		t.Fatalf("%d connections gave %d log lines, want at most 2", n, lines)
	}
}

// A worker's counters are the holder's as soon as it reports them: a
// worker SIGKILLed after 50 connections leaves them counted.
func TestCountersSurviveWorkerCrashes(t *testing.T) {
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "echo", "up")
	for i := 0; i < 50; i++ {
		mustRoundTrip(t, in.addr(0), "")
	}
	old := in.workerPID()
	signalPID(old, syscall.SIGKILL)
	in.newWorkerServing(old, 5*time.Second)
	for i := 0; i < 10; i++ {
		mustRoundTrip(t, in.addr(0), "")
	}
	if st := statusOf(t, in); st.Accepted != 60 {
		t.Fatalf("status counts %d accepted, want 60 (50 of them by the killed worker)", st.Accepted)
	}
}

// A worker that served and was then killed did not fail to start: killed
// every 100 ms, it is restarted after the shortest backoff every time, and
// clients never wait in the backlog for long.
func TestRestartBackoffOnlyForWorkersThatNeverServed(t *testing.T) {
	in := startWith(t, startOpts{verbosity: "-v"}, "--listen", "tcp://127.0.0.1:0", "--processes", "4", "--", handlerBin, "version")
	l := startLoad(t, in.addr(0), 4, checkVersionReply)
	for i := 0; i < 30; i++ {
		old := in.workerPID()
		time.Sleep(100 * time.Millisecond) // the pace of the kills; nothing waits on it
		signalPID(old, syscall.SIGKILL)
		in.newWorkerServing(old, 3*time.Second)
	}
	l.waitServed(t, 20, 10*time.Second)
	_, errs := l.finish()
	for _, e := range errs {
		if e != `wrong reply ""` {
			t.Errorf("failed request: %s", e)
		}
	}
	for _, r := range in.all(msgIs("worker restart scheduled")) {
		if r.str("in") != "50ms" {
			t.Fatalf("restart backoff grew for workers that had served: %v", r)
		}
	}
	worst := time.Duration(0)
	for _, s := range l.lat {
		worst = max(worst, s.end.Sub(s.start))
	}
	t.Logf("slowest request across 30 kills: %v", worst)
	if worst > 2*time.Second {
		t.Fatalf("a client waited %v in the backlog", worst)
	}
}

// A crashed worker is restarted from the binary that last served, never
// from a broken one someone left on disk after a failed upgrade, whether
// the upgrade failed before or after the holder replaced itself.
func TestCrashedWorkerRestartsFromTheBinaryThatServed(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--upgrade-timeout", "2s", "--", handlerBin, "version")
	for _, broken := range []string{
		"exit 1\n", // fails the holder's check
		"case \"$1\" in worker) exit 1;; esac\nexec " + sockholdB + " \"$@\"\n", // the holder takes it, its worker fails
	} {
		wrapper(t, exe, broken)
		if code, _, errOut := ctl(t, in, "upgrade", "--wait"); code != 1 {
			t.Fatalf("upgrade to a broken binary: exit %d %q", code, errOut)
		}
		for i := 0; i < 2; i++ {
			old := in.workerPID()
			signalPID(old, syscall.SIGKILL)
			r := in.newWorkerServing(old, 3*time.Second)
			if r.str("version") != "it-1" {
				t.Fatalf("restarted worker runs %q, want it-1, the binary that served", r.str("version"))
			}
			if got := mustRoundTrip(t, in.addr(0), ""); !strings.HasPrefix(got, "it-1 ") {
				t.Fatalf("after the restart: %q", got)
			}
		}
	}
}

// A new binary whose worker tells tableflip it is ready but never links to
// the holder is no successor: the old generation keeps serving without a
// pause, `upgrade --wait` says why, and the next upgrade (the old worker's
// tableflip is used up, so the holder starts the new worker) works.
func TestRogueSuccessorNeverTakesOver(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "4", "--", handlerBin, "version")
	l := startLoad(t, in.addr(0), 4, checkVersionReply)
	l.waitSeen(t, "it-1 1\n", 10*time.Second)
	wrapper(t, exe, "case \"$1\" in worker) exec "+rogueBin+";; esac\nexec "+sockholdB+" \"$@\"\n")
	code, _, errOut := ctl(t, in, "upgrade", "--wait")
	if code != 1 || !strings.Contains(errOut, "never linked") {
		t.Fatalf("upgrade to a rogue worker: exit %d %q", code, errOut)
	}
	l.waitServed(t, 50, 10*time.Second)
	swapBinary(t, exe, sockholdB)
	if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 || !strings.Contains(out, "version it-2") {
		t.Fatalf("upgrade after the rogue one: %d %q %q", code, out, errOut)
	}
	l.waitSeen(t, "it-2 2\n", 10*time.Second)
	_, errs := l.finish()
	if len(errs) > 0 {
		t.Fatalf("%d failed requests: %v", len(errs), errs[:min(5, len(errs))])
	}
	worst := time.Duration(0)
	for _, s := range l.lat {
		worst = max(worst, s.end.Sub(s.start))
	}
	if worst > time.Second {
		t.Fatalf("a client waited %v: the rogue took the service down", worst)
	}
}
