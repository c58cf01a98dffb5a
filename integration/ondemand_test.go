package integration

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func replyPID(t *testing.T, reply string) int {
	t.Helper()
	f := strings.Fields(reply)
	if len(f) != 2 {
		t.Fatalf("reply %q", reply)
	}
	pid, _ := strconv.Atoi(f[1])
	return pid
}

// No copy runs at start; the first connection starts the app, waits in the
// backlog meanwhile, and is answered by it. Over TCP and an abstract unix
// socket, which has no file for a stale-socket check to look at.
func TestOnDemandStartsOnFirstConnection(t *testing.T) {
	for _, c := range []struct{ name, listen string }{
		{"tcp", "tcp://127.0.0.1:0"},
		{"abstract", fmt.Sprintf("unix:@sockhold-od-%d", os.Getpid())},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := start(t, "serve", "--on-demand", "--idle-stop", "3s", "--listen", c.listen, "--ready", "notify",
				"--", appBin, "-dialect", "systemd")
			if n := in.count(msgIs("app started")); n != 0 {
				t.Fatalf("%d copies started before any connection", n)
			}
			pid := replyPID(t, mustRoundTrip(t, in.addr(0), ""))
			if r := in.waitFor(5*time.Second, msgIs("app started")); r.int("app_pid") != pid {
				t.Fatalf("answered by %d, started %v", pid, r)
			}
		})
	}
}

// Steady traffic (a connection every 0.5 s for 12 s) with --idle-stop 3s:
// the app is never stopped.
func TestOnDemandSteadyTrafficIsNeverStopped(t *testing.T) {
	in := start(t, "serve", "--on-demand", "--idle-stop", "3s", "--listen", "tcp://127.0.0.1:0", "--ready", "notify",
		"--", appBin, "-dialect", "systemd")
	first := replyPID(t, mustRoundTrip(t, in.addr(0), ""))
	for end := time.Now().Add(12 * time.Second); time.Now().Before(end); {
		time.Sleep(500 * time.Millisecond) // the traffic's shape, not a synchronisation
		if pid := replyPID(t, mustRoundTrip(t, in.addr(0), "")); pid != first {
			t.Fatalf("answered by %d, then by %d: the app was restarted", first, pid)
		}
	}
	if n := in.count(msgIs("idle: stopping the app")); n != 0 {
		t.Fatalf("stopped %d times under steady traffic", n)
	}
}

// Connections the app accepts before the worker has looked still count
// as activity. With the worker stopped (SIGSTOP) while the app serves a
// connection every 0.5 s for longer than --idle-stop, the worker can only
// learn of them from what the kernel recorded at arrival: once it runs
// again it must see them and keep the app, not stop it as idle.
func TestOnDemandArrivalsTheAppTookFirstStillCount(t *testing.T) {
	in := start(t, "serve", "--on-demand", "--idle-stop", "2s", "--listen", "tcp://127.0.0.1:0", "--ready", "notify",
		"--", appBin, "-dialect", "systemd")
	first := replyPID(t, mustRoundTrip(t, in.addr(0), ""))
	worker := in.workerPID()
	if err := signalPID(worker, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			signalPID(worker, syscall.SIGCONT)
		}
	}()
	for i := 0; i < 6; i++ {
		time.Sleep(500 * time.Millisecond) // the traffic's shape, not a synchronisation
		if pid := replyPID(t, mustRoundTrip(t, in.addr(0), "")); pid != first {
			t.Fatalf("answered by %d, then by %d", first, pid)
		}
	}
	verdict := func(r record) bool {
		return r.str("msg") == "idle: stopping the app" || (r.str("msg") == "idle check" && r.str("arrived") == "true")
	}
	before := in.count(verdict)
	signalPID(worker, syscall.SIGCONT)
	stopped = false
	if r, ok := in.waitForOK(5*time.Second, before, verdict); !ok {
		t.Fatal("no idle check saw the arrivals after the worker continued")
	} else if r.str("msg") != "idle check" {
		t.Fatalf("stopped as idle although it served 6 connections: %v", r)
	}
}

// One long-lived connection held for 10 s, nothing else: the app is not
// stopped while it is open (the app has accepted it, so a watch on the
// listening socket would see nothing), and is stopped within --idle-stop +
// 1 s after it closes.
func longConnectionCase(t *testing.T, listenURI string) {
	in := start(t, "serve", "--on-demand", "--idle-stop", "3s", "--listen", listenURI, "--ready", "notify",
		"--", appBin, "-dialect", "systemd", "-hold")
	c, err := net.Dial(network(in.addr(0)), in.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	replyPID(t, line)
	held := time.Now()
	// Held for 10 s: the app must still be running then.
	if _, ok := in.waitForOK(10*time.Second, 0, msgIs("idle: stopping the app")); ok {
		t.Fatalf("stopped after %v with a connection open", time.Since(held))
	}
	closed := time.Now()
	c.Close()
	in.waitFor(6*time.Second, msgIs("idle: stopping the app"))
	if d := time.Since(closed); d > 4*time.Second {
		t.Fatalf("stopped %v after the connection closed, want within 3s + 1s", d)
	}
	in.waitFor(5*time.Second, msgIs("idle: waiting for a connection"))
}

func TestOnDemandLongConnectionKeepsTheAppTCP(t *testing.T) {
	longConnectionCase(t, "tcp://127.0.0.1:0")
}

// The same over a unix socket.
func TestOnDemandLongConnectionKeepsTheAppUnix(t *testing.T) {
	longConnectionCase(t, "unix://"+filepath.Join(t.TempDir(), "od.sock")+"?mode=0660")
}

// A connection made while the app is stopping stays in the backlog and is
// served by the next copy.
func TestOnDemandConnectionWhileStopping(t *testing.T) {
	events := filepath.Join(t.TempDir(), "events")
	in := start(t, "serve", "--on-demand", "--idle-stop", "500ms", "--listen", "tcp://127.0.0.1:0", "--ready", "notify",
		"--", appBin, "-dialect", "systemd", "-drain-delay", "1s", "-events", events)
	first := replyPID(t, mustRoundTrip(t, in.addr(0), ""))
	in.waitFor(5*time.Second, msgIs("idle: stopping the app"))
	// Once the old copy says it has closed its listeners (it then drains
	// for a second before exiting), connect.
	waitAppEvent(t, events, first, "closed", 5*time.Second)
	second := replyPID(t, mustRoundTrip(t, in.addr(0), ""))
	if second == first {
		t.Fatalf("answered by the stopping copy %d", first)
	}
}

// A copy that cannot start: the waiting client gets the message and EOF,
// start attempts are bounded, and the next connection tries again.
func TestOnDemandStartFailureIsBounded(t *testing.T) {
	in := start(t, "serve", "--on-demand", "--idle-stop", "3s", "--listen", "tcp://127.0.0.1:0", "--ready", "notify",
		"--reject-message", "unavailable", "--", appBin, "-exit-at-start", "1")
	begin := time.Now()
	if got := mustRoundTrip(t, in.addr(0), ""); got != "unavailable\n" {
		t.Fatalf("waiting client got %q", got)
	}
	t.Logf("answered after %v, %d start attempts", time.Since(begin), in.count(msgIs("app started")))
	if n := in.count(msgIs("app started")); n != 3 {
		t.Fatalf("%d start attempts for one waiting connection, want 3", n)
	}
	// Clients keep coming every 50 ms for 2 s: answered at once during the
	// backoff, and at most a few more attempts, never a busy loop.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		if got, err := roundTrip(t, in.addr(0), ""); err != nil || got != "unavailable\n" {
			t.Fatalf("client during failures got %q %v", got, err)
		}
		time.Sleep(50 * time.Millisecond) // the clients' pace
	}
	n := in.count(msgIs("app started"))
	t.Logf("%d start attempts in all", n)
	if n > 9 {
		t.Fatalf("%d start attempts in 2 s: no backoff", n)
	}
}

// Upgrades: while the app is stopped, the new worker stays idle and
// listening; while it runs, the usual readiness-gated restart.
func TestOnDemandUpgrades(t *testing.T) {
	in := start(t, "serve", "--on-demand", "--idle-stop", "30s", "--listen", "tcp://127.0.0.1:0", "--ready", "notify",
		"--", appBin, "-dialect", "systemd")
	if code, _, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatalf("upgrade while idle: %s", errOut)
	}
	if n := in.count(msgIs("app started")); n != 0 {
		t.Fatalf("an idle upgrade started %d copies", n)
	}
	first := replyPID(t, mustRoundTrip(t, in.addr(0), ""))
	if code, _, errOut := ctl(t, in, "upgrade", "--wait"); code != 0 {
		t.Fatalf("upgrade while running: %s", errOut)
	}
	second := replyPID(t, mustRoundTrip(t, in.addr(0), ""))
	if second == first {
		t.Fatal("the running app was not replaced by the upgrade")
	}
	r := in.waitFor(5*time.Second, func(r record) bool { return r.str("msg") == "app ready" && r.int("app_pid") == second })
	if r.int("gen") != 3 {
		t.Fatalf("new copy ready in generation %v, want 3", r["gen"])
	}
	// Idle time starts again with the new generation: its first looks
	// (a stop needs two in a row) must not find the app idle for long.
	in.waitForN(5*time.Second, 2, func(r record) bool { return r.str("msg") == "idle check" && r.int("gen") == 3 })
	if n := in.count(msgIs("idle: stopping the app")); n != 0 {
		t.Fatalf("the restarted app was stopped as idle at once; log:\n%s", in.dump())
	}
}
