package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// 50 upgrades under 8-client closed-loop load, each replacing the holder
// (re-executed in place) and the worker, alternating two builds: nothing
// refused, reset or wrong; the holder's PID and the listener's inode stay
// the same; a generation-1 handler started before the first upgrade is
// still counted after the last, and when it ends the holder reaps it and
// logs its EXIT.
func TestFiftyUpgradesUnderLoad(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	sock := filepath.Join(t.TempDir(), "hold.sock")
	// The unix listener's handlers hold their connection; the TCP one's
	// answer with the version and generation that serve them.
	in := startWith(t, startOpts{exe: exe, verbosity: "-v"}, "--listen", "tcp://127.0.0.1:0", "--listen", "unix://"+sock,
		"--processes", "9", "--", "/bin/sh", "-c", `[ "$PROTO" = UNIX ] && exec "$0" hold; exec "$0" version`, handlerBin)
	inode := listenInode(t, portOf(in.addr(0)))
	holder := in.pid()
	held := dialReady(t, sock)
	defer held.Close()
	heldPID := in.waitFor(5*time.Second, func(r record) bool {
		return r.str("msg") == "START" && r.str("peer") != "" && strings.HasPrefix(r.str("peer"), "uid=")
	}).int("pid")
	l := startLoad(t, in.addr(0), 8, checkVersionReply)
	l.waitSeen(t, "it-1 1\n", 10*time.Second)
	var took []string
	const upgrades = 50
	for i := 1; i <= upgrades; i++ {
		build, version := sockholdB, "it-2"
		if i%2 == 0 {
			build, version = sockholdBin, "it-1"
		}
		swapBinary(t, exe, build)
		code, out, errOut := ctl(t, in, "upgrade", "--wait", "--timeout", "30s")
		want := fmt.Sprintf("generation %d, version %s", i+1, version)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("upgrade %d: exit %d, %q %q, want %q", i, code, out, errOut, want)
		}
		took = append(took, upgradeTook.FindStringSubmatch(out)[1])
		l.waitSeen(t, fmt.Sprintf("%s %d\n", version, i+1), 10*time.Second)
	}
	t.Logf("upgrade --wait, request to new generation serving: %s", strings.Join(took, ", "))
	served, errs := l.finish()
	t.Logf("%d requests served across %d upgrades", served, upgrades)
	if len(errs) > 0 {
		t.Fatalf("%d failed requests, first: %v", len(errs), errs[:min(5, len(errs))])
	}
	if got := listenInode(t, portOf(in.addr(0))); got != inode {
		t.Errorf("listener inode changed from %s to %s", inode, got)
	}
	// The load's last handlers may still be on their way out after their
	// clients read EOF: wait (bounded) until only the held one is left.
	st := statusOf(t, in)
	for deadline := time.Now().Add(5 * time.Second); st.SlotsUsed > 1 && time.Now().Before(deadline); st = statusOf(t, in) {
		time.Sleep(10 * time.Millisecond)
	}
	if st.HolderPID != holder || in.pid() != holder || st.HolderReplaced != upgrades || st.UpgradesOK != upgrades {
		t.Errorf("holder after %d upgrades: %+v", upgrades, st)
	}
	if st.SlotsUsed != 1 || st.HandlersByGen["1"] != 1 {
		t.Errorf("the generation-1 handler is not counted after %d upgrades: %+v", upgrades, st)
	}
	held.Write([]byte("x"))
	held.(*net.UnixConn).CloseWrite()
	buf := make([]byte, 4)
	if n, _ := readAll(held, buf); string(buf[:n]) != "bye\n" {
		t.Fatalf("generation-1 handler after %d upgrades: %q", upgrades, buf[:n])
	}
	r := in.waitFor(10*time.Second, func(r record) bool { return r.str("msg") == "EXIT" && r.int("pid") == heldPID })
	if r.str("reaped_by") != "holder" || r.str("gen") != "1" || r.str("status") != "0" {
		t.Errorf("EXIT of the generation-1 handler: %v", r)
	}
}

// upgradeTook reads `upgrade --wait`'s own figures: the whole, and the
// holder's check and re-execution within it.
var upgradeTook = regexp.MustCompile(`in ([0-9.]+) ms \((?:holder replaced in ([0-9.]+) ms|holder unchanged)\)`)

// The holder's descriptors and memory stay where they were across 100
// upgrades and 100 worker SIGKILLs under load.
func TestHolderFDsAndRSSStayFlat(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "4", "--", handlerBin, "version")
	l := startLoad(t, in.addr(0), 4, checkVersionReply)
	holder := in.pid()
	upgrade := func(i int) {
		swapBinary(t, exe, []string{sockholdB, sockholdBin}[i%2])
		if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
			t.Fatalf("upgrade %d: %d %q %q", i, code, out, errOut)
		}
	}
	kill := func() {
		old := in.workerPID()
		signalPID(old, syscall.SIGKILL)
		in.newWorkerServing(old, 5*time.Second)
	}
	// Warm up: the first of each leaves what stays (the binary kept to
	// restart from, a first timer).
	for i := 0; i < 4; i++ {
		upgrade(i)
		kill()
	}
	l.waitServed(t, 20, 10*time.Second)
	fds0, rss0 := settledFDs(t, holder, -1), rssKiB(holder)
	began := time.Now()
	var slowest time.Duration
	for i := 0; i < 100; i++ {
		t0 := time.Now()
		upgrade(i)
		slowest = max(slowest, time.Since(t0))
	}
	t.Logf("100 upgrades in %v (slowest %v)", time.Since(began).Round(time.Millisecond), slowest.Round(time.Millisecond))
	fdsUp, rssUp := settledFDs(t, holder, fds0), settledRSS(holder, rss0)
	began, slowest = time.Now(), 0
	for i := 0; i < 100; i++ {
		t0 := time.Now()
		kill()
		slowest = max(slowest, time.Since(t0))
	}
	t.Logf("100 worker kills in %v (slowest %v)", time.Since(began).Round(time.Millisecond), slowest.Round(time.Millisecond))
	l.waitServed(t, 20, 10*time.Second)
	fds1, rss1 := settledFDs(t, holder, fds0), settledRSS(holder, rss0)
	t.Logf("holder: %d fds, %.1f MiB RSS; after 100 upgrades %d fds, %.1f MiB; after 100 worker kills %d fds, %.1f MiB",
		fds0, mib(rss0), fdsUp, mib(rssUp), fds1, mib(rss1))
	if fdsUp != fds0 || fds1 != fds0 {
		t.Errorf("holder descriptors went from %d to %d (upgrades) and %d (kills)", fds0, fdsUp, fds1)
	}
	if grewBeyondSlack(rss0, rssUp) || grewBeyondSlack(rss0, rss1) {
		t.Errorf("holder RSS grew from %.1f MiB to %.1f (upgrades) and %.1f MiB (kills)", mib(rss0), mib(rssUp), mib(rss1))
	}
	if _, errs := l.finish(); len(errs) > 100 {
		t.Errorf("%d failed requests", len(errs))
	}
}

// settledFDs counts pid's descriptors once the count has settled: a
// control client's connection is closed an instant after it has its
// answer. With want >= 0 it waits (at most two seconds) for that count.
func settledFDs(t *testing.T, pid, want int) int {
	t.Helper()
	n := fdCount(t, pid)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n = fdCount(t, pid); want < 0 || n == want {
			break
		}
	}
	return n
}

// A new worker that cannot take all the handles the handover carries (it
// is out of descriptors: MSG_CTRUNC) says so and is replaced by the old
// worker serving on: it never undercounts --processes. The next upgrade
// works and counts every handler.
func TestTruncatedHandoverFailsTheUpgrade(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--processes", "200", "--", "/bin/cat")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", in.addr(0))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	in.waitForN(10*time.Second, 100, msgIs("START"))
	old := in.workerPID()
	slowBinary(t, exe, sockholdB, "1")
	result := make(chan string, 1)
	go func() {
		code, out, errOut := ctl(t, in, "upgrade", "--wait")
		result <- fmt.Sprint(code, " ", out, errOut)
	}()
	// The new worker, still a shell sleeping, gets a descriptor limit its
	// exec keeps: 64, fewer than the 100 pidfds coming its way.
	lim := unix.Rlimit{Cur: 64, Max: 64}
	if err := unix.Prlimit(workerChild(t, old), unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatal(err)
	}
	if r := <-result; !strings.HasPrefix(r, "1 ") || !strings.Contains(r, "could not take the handover") {
		t.Fatalf("upgrade to a worker out of descriptors: %s", r)
	}
	in.waitFor(5*time.Second, msgIs("the new worker failed; taking work again"))
	if st := statusOf(t, in); st.SlotsUsed != 100 || st.WorkerPID != old {
		t.Fatalf("after the failed handover: %+v", st)
	}
	c, err := net.Dial("tcp", in.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, c)
	in.waitForN(10*time.Second, 101, msgIs("START"))
	swapBinary(t, exe, sockholdB)
	if code, out, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatalf("upgrade: %d %q %q", code, out, errOut)
	}
	if st := statusOf(t, in); st.SlotsUsed != 101 || st.HandlersByGen["1"] != 101 {
		t.Fatalf("after the upgrade: %+v", st)
	}
	conns[0].Write([]byte("echo\n"))
	buf := make([]byte, 5)
	if _, err := readAll(conns[0], buf); err != nil || string(buf) != "echo\n" {
		t.Fatalf("a generation-1 handler after all this: %q %v", buf, err)
	}
}

// rssSlack is how much a holder's resident memory may move: the race
// detector's shadow memory is never given back, so a race build moves
// more (BenchmarkHolderMemory measures the production build).
var rssSlack = map[bool]float64{true: 1.2, false: 1.05}[raceEnabled]

// settledRSS is pid's resident memory once it is back within the slack of
// before, or after 5 s what it is then: the Go runtime returns freed pages
// to the kernel in the background, so right after a burst of work the
// resident set can stand above where it settles, while a leak never comes
// back down.
func settledRSS(pid, before int) int {
	rss := rssKiB(pid)
	for deadline := time.Now().Add(5 * time.Second); grewBeyondSlack(before, rss) && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		rss = rssKiB(pid)
	}
	return rss
}

// grewBeyondSlack: resident memory (KiB) moved from before to after by more
// than rssSlack, or 1.5 MiB if that is more. A holder re-executed by an
// upgrade is a fresh process whose resident set varies from run to run by
// up to 1.2 MiB (6.9 to 8.2 MiB seen), and one garbage collection cycle
// earlier or later moves it by 0.4 MiB; 400 worker kills measured flat
// within 0.12 MiB. A leak of 16 KiB or more per upgrade or kill still
// shows over the hundred.
func grewBeyondSlack(before, after int) bool {
	return float64(after) > max(rssSlack*float64(before), float64(before)+1536)
}

// Signals that arrive while the holder is being replaced are not lost: a
// SIGHUP while the new binary runs its check is queued and, carried across
// the holder's re-execution, makes a second upgrade; a SIGTERM then stops
// sockhold in order (the check process killed, nothing left behind).
func TestSignalsDuringHolderReplacement(t *testing.T) {
	slowCheck := func(exe, real string) {
		wrapper(t, exe, "case \"$1\" in holder-check) sleep 0.5;; esac\nexec "+real+" \"$@\"\n")
	}
	t.Run("SIGHUP", func(t *testing.T) {
		exe := installSockhold(t, sockholdBin)
		in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "version")
		slowCheck(exe, sockholdB)
		in.cmd.Process.Signal(syscall.SIGHUP)
		in.waitFor(10*time.Second, msgIs("upgrade started"))
		in.cmd.Process.Signal(syscall.SIGHUP) // during the check
		in.waitForN(20*time.Second, 2, msgIs("upgrade done"))
		if got := mustRoundTrip(t, in.addr(0), ""); got != "it-2 3\n" {
			t.Fatalf("after two SIGHUPs: %q, want generation 3", got)
		}
		if st := statusOf(t, in); st.HolderReplaced != 2 || st.UpgradesOK != 2 {
			t.Fatalf("status: %+v", st)
		}
	})
	t.Run("SIGTERM", func(t *testing.T) {
		exe := installSockhold(t, sockholdBin)
		in := startWith(t, startOpts{exe: exe}, "--listen", "tcp://127.0.0.1:0", "--", handlerBin, "version")
		slowCheck(exe, sockholdB)
		result := make(chan string, 1)
		go func() {
			code, _, errOut := ctl(t, in, "upgrade", "--wait")
			result <- fmt.Sprint(code, " ", errOut)
		}()
		in.waitFor(10*time.Second, msgIs("upgrade started"))
		var check int
		for deadline := time.Now().Add(5 * time.Second); check == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			for _, c := range childrenOf(in.pid()) {
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c)); strings.Contains(string(b), "holder-check") {
					check = c
				}
			}
		}
		if check == 0 {
			t.Fatal("the check never started")
		}
		if code := in.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Fatalf("exit status %d", code)
		}
		if r := <-result; !strings.HasPrefix(r, "1 ") || !strings.Contains(r, "stopping") {
			t.Fatalf("upgrade --wait during the stop: %s", r)
		}
		assertGone(t, "check process", check)
	})
}

// A new binary that passes its check but then cannot resume the holder (a
// bug in its restore) goes back to the binary it replaced, with the same
// state: the holder keeps its PID and sockets, traffic goes on, and
// `upgrade --wait` says the upgrade failed.
func TestNewHolderThatCannotResumeGoesBack(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe, env: []string{"SOCKHOLD_TEST_RESUME_FAIL=it-2"}},
		"--listen", "tcp://127.0.0.1:0", "--processes", "4", "--", handlerBin, "version")
	inode := listenInode(t, portOf(in.addr(0)))
	l := startLoad(t, in.addr(0), 4, checkVersionReply)
	l.waitSeen(t, "it-1 1\n", 10*time.Second)
	swapBinary(t, exe, sockholdB)
	code, _, errOut := ctl(t, in, "upgrade", "--wait")
	if code != 1 || !strings.Contains(errOut, "could not resume the holder") {
		t.Fatalf("upgrade to a binary that cannot resume: exit %d %q", code, errOut)
	}
	l.waitServed(t, 20, 10*time.Second)
	if _, errs := l.finish(); len(errs) > 0 {
		t.Fatalf("%d failed requests: %v", len(errs), errs[:min(5, len(errs))])
	}
	st := statusOf(t, in)
	if st.HolderPID != in.pid() || st.Version != "it-1" || st.Generation != 1 {
		t.Fatalf("after going back: %+v", st)
	}
	if got := listenInode(t, portOf(in.addr(0))); got != inode {
		t.Fatalf("listener inode changed from %s to %s", inode, got)
	}
	if code := in.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}
}

// A SIGTERM that arrives while the new binary fails to resume reaches the
// binary that goes on: the holder stops, in order, by itself.
func TestSignalWhileNewHolderFailsToResumeIsKept(t *testing.T) {
	exe := installSockhold(t, sockholdBin)
	in := startWith(t, startOpts{exe: exe, env: []string{"SOCKHOLD_TEST_RESUME_FAIL=it-2,SIGTERM"}},
		"--listen", "tcp://127.0.0.1:0", "--", handlerBin, "version")
	mustRoundTrip(t, in.addr(0), "")
	swapBinary(t, exe, sockholdB)
	code, _, errOut := ctl(t, in, "upgrade", "--wait")
	if code != 1 {
		t.Fatalf("upgrade to a binary that cannot resume: exit %d %q", code, errOut)
	}
	select {
	case <-in.exit:
	case <-time.After(10 * time.Second):
		t.Fatal("the SIGTERM that arrived meanwhile was lost: the holder runs on")
	}
	if st := in.state.ExitCode(); st != 0 {
		t.Fatalf("exit status %d, want an orderly stop", st)
	}
	in.waitFor(time.Second, msgIs("stopping"))
}
