package core

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockhold/sockhold/holder/link"
)

// A stop during an upgrade abandons it (its successor killed, waiters told
// why) and stops every worker; an upgrade asked during a stop is refused.
func TestStopDuringUpgradeAndUpgradeDuringStop(t *testing.T) {
	r := newRig(t, spawnSettings)
	old := r.running()
	r.upgradeToWorkerPhase(7)
	nw := r.id()
	r.ev(PeerLinked{Link: nw, PID: 20, PPID: 10, UIDOK: true, ExeOK: true, HasPidfd: true})
	a := r.ev(Signal{Sig: syscall.SIGTERM})
	rep, _ := replyOf(a, 7)
	if rep.OK || !strings.Contains(rep.Error, "stopping") {
		t.Fatalf("waiter told %+v", rep)
	}
	mustHave(t, a, Kill{Worker: nw, Sig: syscall.SIGTERM}, Kill{Worker: old, Sig: syscall.SIGTERM})
	if rep, _ := replyOf(r.ev(ControlAsk{Ctl: 9, Verb: "upgrade"}), 9); rep.OK || !strings.Contains(rep.Error, "stopping") {
		t.Fatalf("upgrade during stop: %+v", rep)
	}
	mustNot(t, r.ev(Signal{Sig: syscall.SIGHUP}), "SIGHUP during a stop started something", func(a Action) bool {
		_, ok := a.(CheckHolder)
		return ok
	})
	r.ev(WorkerExited{Worker: nw})
	if r.c.Stop.Phase != StopWorkers {
		t.Fatal("on-stop applied with a worker still running")
	}
	r.ev(WorkerExited{Worker: old})
	if r.c.Stop.Phase != StopWait {
		t.Fatalf("phase %d, want wait", r.c.Stop.Phase)
	}
	mustHave(t, r.ev(ChildrenLeft{N: 0}), Finish{Status: 0})
}

// --on-stop term with a descendant reparented to the holder after the
// first SIGKILL sweep: the kill phase sweeps again until nothing is left,
// and only then does the stop finish.
func TestKillPhaseSweepsUntilEmpty(t *testing.T) {
	cfg := spawnSettings
	cfg.OnStop = "term"
	r := newRig(t, cfg)
	w := r.running()
	h := r.started(w, false, 500)
	r.ev(Signal{Sig: syscall.SIGTERM})
	a := r.ev(WorkerExited{Worker: w})
	mustHave(t, a, Kill{Proc: h[0], Sig: syscall.SIGTERM, Group: true}, SweepChildren{Sig: syscall.SIGTERM})
	mustHave(t, r.fire(TimerStopPhase), SweepChildren{Sig: syscall.SIGKILL})
	r.ev(ProcReaped{Proc: h[0], Status: syscall.WaitStatus(9)})
	// A descendant (trap "" TERM; sleep &) reached the holder meanwhile.
	r.ev(ChildrenLeft{N: 1})
	if r.c.Done {
		t.Fatal("finished with a child left")
	}
	mustHave(t, r.fire(TimerSweep), SweepChildren{Sig: syscall.SIGKILL})
	r.ev(OtherReaped{PID: 777, Status: syscall.WaitStatus(9)})
	mustHave(t, r.ev(ChildrenLeft{N: 0}), Finish{})
	if a := r.ev(Signal{Sig: syscall.SIGTERM}); len(a) != 0 {
		t.Fatalf("a signal after the end did something: %s", show(a))
	}
}

// A repeated stop signal hurries: wait -> term -> kill.
func TestRepeatedStopSignalHurries(t *testing.T) {
	r := newRig(t, spawnSettings)
	w := r.running()
	h := r.started(w, false, 500)
	r.ev(Signal{Sig: syscall.SIGTERM})
	r.ev(WorkerExited{Worker: w})
	mustHave(t, r.ev(Signal{Sig: syscall.SIGINT}), Kill{Proc: h[0], Sig: syscall.SIGTERM, Group: true})
	mustHave(t, r.ev(Signal{Sig: syscall.SIGINT}), Kill{Proc: h[0], Sig: syscall.SIGKILL, Group: true})
	if r.c.Stop.Phase != StopKill {
		t.Fatalf("phase %d", r.c.Stop.Phase)
	}
}

// Serve mode: the exit status reflects how the app ended on stop.
func TestServeStopStatus(t *testing.T) {
	r := newRig(t, serveSettings)
	w := r.running()
	app := r.started(w, true, 600)
	r.ev(Signal{Sig: syscall.SIGTERM})
	r.ev(WorkerExited{Worker: w})
	r.ev(ProcReaped{Proc: app[0], Status: syscall.WaitStatus(syscall.SIGKILL)})
	mustHave(t, r.ev(ChildrenLeft{N: 0}), Finish{Status: 128 + 9})
}

// A worker killed every 100 ms after it served never drives the restart
// backoff up; one that dies before serving does.
func TestRestartBackoffCountsOnlyFailuresToStart(t *testing.T) {
	r := newRig(t, spawnSettings)
	w := r.running()
	for i := 0; i < 20; i++ {
		r.after(100 * time.Millisecond)
		r.ev(WorkerExited{Worker: w, HaveStatus: true, Status: syscall.WaitStatus(9)})
		a := r.fire(TimerRestart)
		if arm := lastArm(r.got, TimerRestart); arm.After != spawnSettings.RestartMin {
			t.Fatalf("crash %d after serving: restart in %v, want %v", i, arm.After, spawnSettings.RestartMin)
		}
		mustHave(t, a, SpawnWorker{})
		w = r.spawned(11+i, false)
		r.msg(w, link.Msg{Type: link.Serving})
	}
	var delays []time.Duration
	for i := 0; i < 4; i++ {
		r.ev(WorkerExited{Worker: w})
		delays = append(delays, lastArm(r.got, TimerRestart).After)
		r.fire(TimerRestart)
		w = r.spawned(100+i, false) // never serves
	}
	if delays[0] != 50*time.Millisecond || delays[1] != 100*time.Millisecond || delays[3] != 400*time.Millisecond {
		t.Fatalf("restart delays for workers that never served: %v", delays)
	}
}

func lastArm(acts []Action, kind TimerKind) Arm {
	for i := len(acts) - 1; i >= 0; i-- {
		if a, ok := acts[i].(Arm); ok && a.Key.Kind == kind {
			return a
		}
	}
	return Arm{}
}

// A worker that said hello and never serves (its adopt could not be sent,
// say) is killed at its deadline and replaced: never a permanent outage.
func TestWorkerThatNeverServesIsReplaced(t *testing.T) {
	r := newRig(t, spawnSettings)
	r.ev(Started{})
	w := r.spawned(10, false)
	mustHave(t, r.fire(TimerServeDeadline), Kill{Worker: w, Sig: syscall.SIGTERM})
	mustHave(t, r.fire(TimerKillWorker), Kill{Worker: w, Sig: syscall.SIGKILL})
	// A wedged one (its link full) is killed at once.
	mustHave(t, r.ev(SendFailed{Worker: w, Err: "EPIPE"}), Kill{Worker: w, Sig: syscall.SIGKILL})
	// Every later send fails too: one kill, not one per message.
	if a := r.ev(SendFailed{Worker: w, Err: "EPIPE"}); len(a) != 0 {
		t.Fatalf("a second failed send: %s", show(a))
	}
	r.ev(WorkerExited{Worker: w})
	mustHave(t, r.fire(TimerRestart), SpawnWorker{})
}

// Exit seen before the link closes, then the link: nothing twice.
func TestExitThenLinkDown(t *testing.T) {
	r := newRig(t, spawnSettings)
	w := r.running()
	r.ev(WorkerExited{Worker: w, HaveStatus: true, Status: syscall.WaitStatus(9)})
	if a := r.ev(LinkDown{Worker: w}); len(a) != 0 {
		t.Fatalf("link down after the exit did something: %s", show(a))
	}
	if r.c.Totals.WorkerRestarts != 1 || !r.c.RestartPending {
		t.Fatal("crash not handled once")
	}
}

// Handlers a worker reports are counted whatever happens to the worker; a
// process it never reported (a daemonised descendant) never is.
func TestLedgerCountsOnlyReportedHandlers(t *testing.T) {
	r := newRig(t, spawnSettings)
	w := r.running()
	r.started(w, false, 500, 501)
	r.msg(w, link.Msg{Type: link.Procs, Exited: []int{501}, Counts: &link.Counts{Accepted: 2}})
	r.ev(WorkerExited{Worker: w})
	r.ev(OtherReaped{PID: 900})
	if n := r.c.liveHandlers(0); n != 1 {
		t.Fatalf("%d handlers counted, want 1", n)
	}
	if r.c.Totals.Accepted != 2 {
		t.Fatalf("counters of the dead worker lost: %+v", r.c.Totals)
	}
	r.fire(TimerRestart)
	nw := r.spawned(11, false)
	for _, a := range r.got {
		if s, ok := a.(Send); ok && s.Worker == nw && s.Msg.Type == link.Adopt {
			if len(s.Procs) != 1 || s.Msg.PIDs[0] != 500 {
				t.Fatalf("adopt %+v", s)
			}
			return
		}
	}
	t.Fatal("no adopt")
}

// One report in which a handler was reaped and its PID given to a new one:
// the dead one leaves the ledger, the live one stays.
func TestReportWithAReusedPID(t *testing.T) {
	r := newRig(t, spawnSettings)
	w := r.running()
	old := r.started(w, false, 4242)
	id := r.id()
	r.msg(w, link.Msg{Type: link.Procs, Exited: []int{4242}, Started: []link.Proc{{PID: 4242}}}, id)
	if r.c.Procs[old[0]] != nil || r.c.Procs[id] == nil {
		t.Fatalf("ledger after a reused PID: %+v", r.c.Procs)
	}
	// The worker dies: the live handler is the holder's, and its index
	// entry under the dead worker is gone.
	r.ev(WorkerExited{Worker: w})
	if r.c.Procs[id].Owner != 0 || len(r.c.index()) != 0 {
		t.Fatalf("after the worker's exit: %+v, index %v", r.c.Procs[id], r.c.index())
	}
}
