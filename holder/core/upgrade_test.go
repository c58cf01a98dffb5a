package core

import (
	"strings"
	"syscall"
	"testing"

	"github.com/sockhold/sockhold/holder/link"
)

// The whole spawn-mode upgrade, holder re-execution included: the old
// worker stops taking work only once its successor has linked, the
// successor is handed every live handler (the old worker's included) and
// the old worker exits only once the successor serves.
func TestUpgradeHandsOverOnlyToALinkedSuccessor(t *testing.T) {
	r := newRig(t, spawnSettings)
	old := r.running()
	h := r.started(old, false, 500, 501)
	r.upgradeToWorkerPhase(7)
	if !r.c.Upgrade.HolderReplaced || r.c.HolderReplaced != 1 {
		t.Fatalf("holder re-execution not recorded: %+v", r.c.Upgrade)
	}
	// tableflip's child links: a child of the old worker, the holder's binary.
	nw := r.id()
	a := r.ev(PeerLinked{Link: nw, PID: 20, PPID: 10, UIDOK: true, ExeOK: true, HasPidfd: true})
	mustHave(t, a, AcceptLink{Link: nw, Worker: nw})
	mustNot(t, a, "handed over before the successor was set up", func(a Action) bool {
		s, ok := a.(Send)
		return ok && s.Msg.Type == link.HandOver
	})
	mustHave(t, r.msg(nw, link2Hello()), Send{Worker: old, Msg: link.Msg{Type: link.HandOver}})
	// The old worker's last report comes before it says it handed over.
	h2 := r.started(old, false, 502)
	r.msg(old, link.Msg{Type: link.Procs, Exited: []int{500}})
	a = r.msg(old, link.Msg{Type: link.HandedOver})
	var adopt *Send
	for _, x := range a {
		if s, ok := x.(Send); ok && s.Msg.Type == link.Adopt {
			adopt = &s
		}
	}
	if adopt == nil || adopt.Worker != nw || adopt.Msg.Generation != 2 {
		t.Fatalf("no adopt for the successor: %s", show(a))
	}
	if want := []int{h[1], h2[0]}; len(adopt.Procs) != 2 || adopt.Procs[0] != want[0] || adopt.Procs[1] != want[1] {
		t.Fatalf("adopt carries %v, want the live handlers %v (501, 502; 500 exited)", adopt.Procs, want)
	}
	mustNot(t, a, "old worker told to exit before its successor serves", func(a Action) bool {
		s, ok := a.(Send)
		return ok && s.Msg.Type == link.Exit
	})
	a = r.msg(nw, link.Msg{Type: link.Serving})
	mustHave(t, a, Send{Worker: old, Msg: link.Msg{Type: link.Exit}})
	rep, ok := replyOf(a, 7)
	if !ok || !rep.OK || rep.Generation != 2 || !rep.HolderReplaced {
		t.Fatalf("upgrade --wait answer %+v (%v)", rep, ok)
	}
	if r.c.Current != nw || r.c.Upgrade != nil || r.c.Totals.UpgradesOK != 1 {
		t.Fatalf("after the upgrade: current %d, upgrade %+v", r.c.Current, r.c.Upgrade)
	}
	// The old worker exits; its live handlers are the holder's now and stay
	// in the ledger, counted.
	r.ev(WorkerExited{Worker: old})
	if r.c.liveHandlers(0) != 2 || r.c.Procs[h[1]].Owner != 0 {
		t.Fatalf("handlers after the old worker exited: %d", r.c.liveHandlers(0))
	}
}

// A binary that writes tableflip's ready byte but never links to the
// holder is no successor: the upgrade fails, the old worker (whose
// tableflip is now used up) keeps serving, and the next upgrade starts its
// successor from the holder instead.
func TestReadyWithoutLinkFailsAndNextUpgradeGoesThroughTheHolder(t *testing.T) {
	r := newRig(t, spawnSettings)
	old := r.running()
	r.upgradeToWorkerPhase(7)
	a := r.msg(old, link.Msg{Type: link.ChildReady, Seq: r.c.UpgradeSeq})
	rep, ok := replyOf(a, 7)
	if !ok || rep.OK || !strings.Contains(rep.Error, "never linked") {
		t.Fatalf("reply %+v", rep)
	}
	mustNot(t, a, "the old worker was told to go", func(a Action) bool {
		s, ok := a.(Send)
		return ok && (s.Msg.Type == link.Exit || s.Msg.Type == link.HandOver)
	})
	mustHave(t, a, Send{Worker: old, Msg: link.Msg{Type: link.KillChild}})
	if r.c.Current != old || !r.c.Workers[old].Spent {
		t.Fatal("old worker not kept serving, or not marked spent")
	}
	// Next upgrade: the binary on disk is the one running (nothing to
	// re-execute), the worker's tableflip is spent: the holder spawns.
	mustHave(t, r.ev(ControlAsk{Ctl: 8, Verb: "upgrade", Wait: true}), CheckHolder{Seq: 2})
	mustHave(t, r.ev(HolderChecked{Seq: 2, Same: true}), SpawnWorker{Successor: true})
	nw := r.spawned(30, true)
	mustHave(t, r.got, Send{Worker: old, Msg: link.Msg{Type: link.HandOver}})
	r.msg(old, link.Msg{Type: link.HandedOver})
	a = r.msg(nw, link.Msg{Type: link.Serving})
	if rep, _ := replyOf(a, 8); !rep.OK {
		t.Fatalf("second upgrade: %+v", rep)
	}
}

// The old worker's child was refused (here: another binary). The upgrade
// fails once the old worker reports it ready, and the reply says why.
func TestRefusedSuccessorIsTheUpgradesReason(t *testing.T) {
	r := newRig(t, spawnSettings)
	old := r.running()
	r.upgradeToWorkerPhase(7)
	l := r.id()
	a := r.ev(PeerLinked{Link: l, PID: 20, PPID: r.c.Workers[old].PID, UIDOK: true, HasPidfd: true})
	mustHave(t, a, RefuseLink{Link: l, Reason: "does not run the holder's binary"})
	a = r.msg(old, link.Msg{Type: link.ChildReady, Seq: r.c.UpgradeSeq})
	rep, ok := replyOf(a, 7)
	if !ok || rep.OK || !strings.Contains(rep.Error, "was refused: does not run the holder's binary") {
		t.Fatalf("reply %+v", rep)
	}
}

// Only the upgrading worker's own child, running the holder's binary as
// the holder's user, is ever taken for a successor; nothing is taken when
// no upgrade is starting one.
func TestOnlyTheUpgradingWorkersChildIsASuccessor(t *testing.T) {
	r := newRig(t, spawnSettings)
	r.running()
	peer := func(pid, ppid int, uid, exe bool) []Action {
		return r.ev(PeerLinked{Link: r.id(), PID: pid, PPID: ppid, UIDOK: uid, ExeOK: exe, HasPidfd: true})
	}
	refused := func(a []Action) bool {
		_, ok := a[0].(RefuseLink)
		return len(a) == 1 && ok
	}
	if a := peer(20, 10, true, true); !refused(a) {
		t.Fatalf("a worker's child taken with no upgrade under way: %s", show(a))
	}
	r.upgradeToWorkerPhase(0)
	for name, a := range map[string][]Action{
		"another parent (a handler's child, the holder's orphan)": peer(21, 1, true, true),
		"another binary":  peer(22, 10, true, false),
		"another user":    peer(23, 10, false, true),
		"a holder orphan": peer(24, 99, true, true),
	} {
		if !refused(a) {
			t.Errorf("%s accepted: %s", name, show(a))
		}
	}
	if a := peer(25, 10, true, true); refused(a) {
		t.Fatalf("the real successor refused: %s", show(a))
	}
	if a := peer(26, 10, true, true); !refused(a) {
		t.Fatalf("a second successor accepted: %s", show(a))
	}
}

// The old worker dies mid-upgrade. With its successor linked, the
// successor takes over and is handed the dead worker's handlers; without,
// the upgrade fails and a fresh worker is started.
func TestWorkerCrashDuringUpgrade(t *testing.T) {
	t.Run("successor linked", func(t *testing.T) {
		r := newRig(t, spawnSettings)
		old := r.running()
		h := r.started(old, false, 500)
		r.upgradeToWorkerPhase(7)
		nw := r.id()
		r.ev(PeerLinked{Link: nw, PID: 20, PPID: 10, UIDOK: true, ExeOK: true, HasPidfd: true})
		// Link down before the exit is seen: the worker is killed, the exit
		// decides the rest.
		mustHave(t, r.ev(LinkDown{Worker: old, Why: "EOF"}), Kill{Worker: old, Sig: syscall.SIGTERM})
		if r.c.Current != old {
			t.Fatal("link down alone changed the current worker")
		}
		a := r.ev(WorkerExited{Worker: old, HaveStatus: true, Status: syscall.WaitStatus(9)})
		mustHave(t, a, Audit{Procs: h})
		a = r.msg(nw, link2Hello())
		var adopted bool
		for _, x := range a {
			if s, ok := x.(Send); ok && s.Msg.Type == link.Adopt && s.Worker == nw && len(s.Procs) == 1 && s.Procs[0] == h[0] {
				adopted = true
			}
		}
		if !adopted || r.c.Current != nw {
			t.Fatalf("successor not promoted with the orphan: %s", show(a))
		}
		if rep, _ := replyOf(r.msg(nw, link.Msg{Type: link.Serving}), 7); !rep.OK {
			t.Fatalf("upgrade: %+v", rep)
		}
	})
	t.Run("no successor yet", func(t *testing.T) {
		r := newRig(t, spawnSettings)
		old := r.running()
		r.upgradeToWorkerPhase(7)
		a := r.ev(WorkerExited{Worker: old})
		rep, _ := replyOf(a, 7)
		if rep.OK || !strings.Contains(rep.Error, "exited during the upgrade") || !r.c.RestartPending {
			t.Fatalf("reply %+v, restart pending %v", rep, r.c.RestartPending)
		}
		// The successor links too late: its parent is gone, it is refused.
		a = r.ev(PeerLinked{Link: r.id(), PID: 20, PPID: 1, UIDOK: true, ExeOK: true, HasPidfd: true})
		if _, ok := a[0].(RefuseLink); !ok {
			t.Fatalf("late successor: %s", show(a))
		}
		mustHave(t, r.fire(TimerRestart), SpawnWorker{})
	})
}

// The successor dies after the old worker stopped taking work: the old
// worker resumes, nobody is left without a worker.
func TestSuccessorDiesAfterHandoverOldResumes(t *testing.T) {
	r := newRig(t, spawnSettings)
	old := r.running()
	r.upgradeToWorkerPhase(7)
	nw := r.id()
	r.ev(PeerLinked{Link: nw, PID: 20, PPID: 10, UIDOK: true, ExeOK: true, HasPidfd: true})
	r.msg(nw, link2Hello())
	r.msg(old, link.Msg{Type: link.HandedOver})
	// The adopt could not be taken whole (MSG_CTRUNC in the worker).
	mustHave(t, r.msg(nw, link.Msg{Type: link.AdoptFailed, Reason: "EMFILE"}), Kill{Worker: nw, Sig: syscall.SIGTERM})
	a := r.ev(WorkerExited{Worker: nw})
	mustHave(t, a, Send{Worker: old, Msg: link.Msg{Type: link.Resume}})
	if rep, _ := replyOf(a, 7); rep.OK {
		t.Fatal("upgrade reported ok")
	}
	if r.c.Current != old || r.c.Workers[old].HandedOver {
		t.Fatal("old worker not serving again")
	}
	// A handed-over report that crossed the failure resumes it too.
	r.upgradeToWorkerPhase(8)
	r.ev(TimerFired{Key: Timer{Kind: TimerUpgrade, ID: r.c.UpgradeSeq}})
	mustHave(t, r.msg(old, link.Msg{Type: link.HandedOver}), Send{Worker: old, Msg: link.Msg{Type: link.Resume}})
}

// A SIGHUP storm during an upgrade queues one more upgrade, no more.
func TestSIGHUPStormQueuesOneUpgrade(t *testing.T) {
	r := newRig(t, spawnSettings)
	old := r.running()
	r.upgradeToWorkerPhase(0)
	for i := 0; i < 50; i++ {
		mustNot(t, r.ev(Signal{Sig: syscall.SIGHUP}), "a second upgrade started", func(a Action) bool {
			_, ok := a.(CheckHolder)
			return ok
		})
	}
	nw := r.id()
	r.ev(PeerLinked{Link: nw, PID: 20, PPID: 10, UIDOK: true, ExeOK: true, HasPidfd: true})
	r.msg(nw, link2Hello())
	r.msg(old, link.Msg{Type: link.HandedOver})
	a := r.msg(nw, link.Msg{Type: link.Serving})
	mustHave(t, a, CheckHolder{Seq: 2})
	if r.c.UpgradeQueued {
		t.Fatal("still queued after starting the queued upgrade")
	}
	if n := r.c.Totals.UpgradesOK; n != 1 {
		t.Fatalf("%d upgrades done", n)
	}
}

// The holder re-executes itself with a worker upgrade pending (a SIGHUP
// queued, waiters listening): everything carries over.
func TestReexecCarriesPendingWork(t *testing.T) {
	r := newRig(t, spawnSettings)
	r.running()
	mustHave(t, r.ev(ControlAsk{Ctl: 7, Verb: "upgrade", Wait: true}), CheckHolder{Seq: 1})
	r.ev(Signal{Sig: syscall.SIGHUP}) // queued during the check
	mustHave(t, r.ev(HolderChecked{Seq: 1}), ExecHolder{})
	r.reexec()
	if !r.c.UpgradeQueued || r.c.Upgrade == nil || r.c.Upgrade.Waiters[0] != 7 {
		t.Fatalf("lost across re-execution: %+v", r.c.State)
	}
	a := r.ev(Resumed{})
	mustHave(t, a, Send{Worker: r.c.Current, Msg: link.Msg{Type: link.Upgrade, Seq: 1}})
}

// A broken binary: the check fails, the old holder and worker serve on,
// and the failure's reason is answered.
func TestCheckFailureKeepsEverything(t *testing.T) {
	r := newRig(t, spawnSettings)
	old := r.running()
	r.ev(ControlAsk{Ctl: 7, Verb: "upgrade", Wait: true})
	a := r.ev(HolderChecked{Seq: 1, Err: "exit status 1"})
	rep, _ := replyOf(a, 7)
	if rep.OK || !strings.Contains(rep.Error, "cannot take over the holder: exit status 1") {
		t.Fatalf("reply %+v", rep)
	}
	mustNot(t, a, "something was stopped", func(a Action) bool { _, ok := a.(Kill); return ok })
	if r.c.Current != old || r.c.Totals.UpgradesFailed != 1 {
		t.Fatal("state changed")
	}
	// So does a failed execve.
	r.ev(ControlAsk{Ctl: 8, Verb: "upgrade", Wait: true})
	r.ev(HolderChecked{Seq: 2})
	if rep, _ := replyOf(r.ev(HolderExecFailed{Err: "ENOEXEC"}), 8); rep.OK {
		t.Fatal("exec failure reported ok")
	}
}

// Serve mode: the new copies start at once (adopt at hello); only when the
// new generation serves is the old one asked to stop its copies, and the
// upgrade is done once it says it has (their drain deadlines armed).
func TestServeUpgradeStopsOldCopiesOnlyOnceNewServes(t *testing.T) {
	r := newRig(t, serveSettings)
	old := r.running()
	oldApp := r.started(old, true, 600)
	r.upgradeToWorkerPhase(7)
	nw := r.id()
	r.ev(PeerLinked{Link: nw, PID: 20, PPID: 10, UIDOK: true, ExeOK: true, HasPidfd: true})
	a := r.msg(nw, link2Hello())
	mustHave(t, a, Send{Worker: nw, Msg: link.Msg{Type: link.Adopt, Generation: 2, Indices: []int{0}}}) // the old copy still holds EINHORN_CHILD_INDEX 0
	mustNot(t, a, "hand-over before the new copies are ready", func(a Action) bool {
		s, ok := a.(Send)
		return ok && s.Msg.Type == link.HandOver
	})
	r.started(nw, true, 700)
	a = r.msg(nw, link.Msg{Type: link.Serving})
	mustHave(t, a, Send{Worker: old, Msg: link.Msg{Type: link.HandOver}})
	if _, ok := replyOf(a, 7); ok {
		t.Fatal("answered before the old copies were asked to stop")
	}
	r.msg(old, link.Msg{Type: link.Drain, Drain: []int{600}, DrainMS: 30000})
	a = r.msg(old, link.Msg{Type: link.HandedOver})
	if rep, _ := replyOf(a, 7); !rep.OK {
		t.Fatalf("upgrade: %+v", rep)
	}
	r.ev(WorkerExited{Worker: old})
	// The drain deadline kills through the handle.
	mustHave(t, r.fire(TimerDrain), Kill{Proc: oldApp[0], Sig: syscall.SIGKILL})
	// Reaped first: a late deadline does nothing.
	r.ev(ProcReaped{Proc: oldApp[0], Status: syscall.WaitStatus(9)})
	if a := r.ev(TimerFired{Key: Timer{Kind: TimerDrain, ID: oldApp[0]}}); len(a) != 0 {
		t.Fatalf("drain after reaping: %s", show(a))
	}
}

// Serve mode, worker SIGKILLed: its copies keep serving until the new
// worker's copies are ready; then they get --stop-signal and a drain.
func TestServeWorkerCrashStopsOldCopiesOnceNewServe(t *testing.T) {
	r := newRig(t, serveSettings)
	old := r.running()
	apps := r.started(old, true, 600, 601)
	a := r.ev(WorkerExited{Worker: old, HaveStatus: true, Status: syscall.WaitStatus(9)})
	mustNot(t, a, "copies stopped with nothing to replace them", func(a Action) bool { k, ok := a.(Kill); return ok && k.Proc != 0 })
	mustHave(t, r.fire(TimerRestart), SpawnWorker{AppRunning: true})
	nw := r.spawned(30, false)
	r.started(nw, true, 700, 701)
	a = r.msg(nw, link.Msg{Type: link.Serving})
	mustHave(t, a, Kill{Proc: apps[0], Sig: syscall.SIGTERM}, Kill{Proc: apps[1], Sig: syscall.SIGTERM})
	for _, x := range a {
		if k, ok := x.(Kill); ok && k.Proc != apps[0] && k.Proc != apps[1] {
			t.Fatalf("a new copy was stopped: %#v", k)
		}
	}
}

// A late word from an upgrade that has already ended (tableflip's child
// exited after the holder gave up) does not fail the next one; a failed
// upgrade never lets the holder re-execute for it.
func TestStaleUpgradeResultsAreIgnored(t *testing.T) {
	r := newRig(t, spawnSettings)
	old := r.running()
	r.upgradeToWorkerPhase(7)
	r.ev(TimerFired{Key: Timer{Kind: TimerUpgrade, ID: 1}}) // upgrade 1 gives up
	mustHave(t, r.ev(ControlAsk{Ctl: 8, Verb: "upgrade", Wait: true}), CheckHolder{Seq: 2})
	mustHave(t, r.ev(HolderChecked{Seq: 2}), ExecHolder{})
	a := r.msg(old, link.Msg{Type: link.UpgradeFailed, Reason: "child exited", Seq: 1})
	if _, ok := replyOf(a, 8); ok || r.c.Upgrade == nil {
		t.Fatalf("upgrade 2 failed by upgrade 1's late result: %s", show(a))
	}
	// Failing now, between the check and the exec: the exec is called off.
	mustHave(t, r.ev(Signal{Sig: syscall.SIGTERM}), AbortCheck{})
}
