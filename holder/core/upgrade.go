package core

import (
	"fmt"
	"syscall"
	"time"

	"github.com/sockhold/sockhold/holder/link"
)

// upgradeSlack is the holder's own bound on an upgrade beyond
// --upgrade-timeout: the check of the new binary and the holder's
// re-execution come first, and tableflip's own timeout should fire first.
const upgradeSlack = 15 * time.Second

// requestUpgrade starts an upgrade: the holder first checks the binary now
// on disk and re-executes it in place (the same PID), then the worker is
// replaced. ctl is the control request asking (0 for SIGHUP). Requests are
// serialised: a SIGHUP during an upgrade is queued (one is enough: the next
// upgrade picks up whatever is on disk then); a control request is answered
// at once.
func (c *Core) requestUpgrade(ctl int, wait bool) {
	fail := func(msg string) {
		if ctl != 0 {
			c.do(Reply{Ctl: ctl, Rep: ControlReply{Error: msg}})
		}
	}
	cur := c.current()
	switch {
	case c.Stop != nil:
		fail("sockhold is stopping")
		return
	case c.Upgrade != nil || cur == nil || !cur.Serving || !cur.Linked:
		if ctl == 0 {
			c.UpgradeQueued = true
			c.log.Info("upgrade requested while another is under way or no worker serves yet; queued")
			return
		}
		if c.Upgrade != nil {
			fail("upgrade already in progress")
		} else {
			fail("no worker is serving yet")
		}
		return
	}
	c.UpgradeSeq++
	u := &Upgrade{Seq: c.UpgradeSeq, Start: c.now, FromGen: cur.Gen, Phase: PhaseCheck, Old: cur.ID}
	c.Upgrade = u
	switch {
	case ctl != 0 && wait:
		u.Waiters = append(u.Waiters, ctl)
	case ctl != 0:
		c.do(Reply{Ctl: ctl, Rep: ControlReply{OK: true, Message: "upgrade started"}})
	}
	c.log.Info("upgrade started", "from_gen", u.FromGen, "worker", cur.PID)
	c.do(Notify{Lines: []string{"RELOADING=1", "STATUS=upgrading"}})
	c.arm(TimerUpgrade, u.Seq, c.cfg.UpgradeTimeout+upgradeSlack)
	c.do(CheckHolder{Seq: u.Seq})
}

// holderChecked: the new binary read the holder's state in check mode. The
// holder then re-executes it (or, if it is the very binary already
// running, goes straight on to the worker).
func (c *Core) holderChecked(e HolderChecked) {
	u := c.Upgrade
	if u == nil || u.Seq != e.Seq || u.Phase != PhaseCheck {
		return
	}
	switch {
	case e.Err != "":
		c.failUpgrade("the new binary cannot take over the holder: " + e.Err)
	case e.Same:
		c.startWorkerUpgrade()
	default:
		u.Phase = PhaseExec
		c.do(ExecHolder{})
	}
}

// resumed: this is the new holder binary, with the old one's state.
func (c *Core) resumed() {
	c.HolderReplaced++
	if u := c.Upgrade; u != nil && u.Phase == PhaseExec {
		u.HolderReplaced = true
		c.startWorkerUpgrade()
	}
}

// startWorkerUpgrade asks the current worker to start its successor through
// tableflip, or, if its tableflip has been used up, starts the successor
// from the binary on disk itself.
func (c *Core) startWorkerUpgrade() {
	u := c.Upgrade
	u.Phase = PhaseWorker
	u.HolderTook = c.now.Sub(u.Start)
	cur := c.Workers[u.Old]
	if cur == nil || !cur.Linked {
		c.failUpgrade("the worker exited during the upgrade")
		return
	}
	// Serve mode: a worker whose own tableflip parent is still draining
	// its copies cannot pass the sockets on through tableflip until that
	// parent has exited (which may take --drain-timeout), so the holder,
	// which holds them too, starts the successor instead.
	parentDraining := c.cfg.Serve && cur.Parent != 0 && c.Workers[cur.Parent] != nil
	if cur.Spent || c.cfg.HolderSpawnsSuccessors || parentDraining {
		u.ViaHolder = true
		c.spawn(SpawnWorker{Successor: true, AppRunning: c.anyAppRunning(), AppIndices: c.appIndices(0)})
		return
	}
	c.do(Send{Worker: cur.ID, Msg: link.Msg{Type: link.Upgrade, Seq: u.Seq, Indices: c.appIndices(0)}})
}

// childReady: tableflip in the old worker says its child is ready. From a
// real successor that comes only after the holder has handed it the work
// (spawn) or once it serves (serve); a binary that says so without having
// linked is not one, and the old worker, whose tableflip is now used up,
// keeps serving.
func (c *Core) childReady(w *Worker, seq int) {
	w.Spent = true
	u := c.Upgrade
	if u == nil || w.ID != u.Old || seq != u.Seq {
		return
	}
	nw := c.Workers[u.New]
	switch {
	case nw == nil:
		// Not a successor: whatever it is, it holds the listeners and
		// nobody knows it but the worker that started it.
		c.failUpgrade("the new binary told tableflip it was ready but never linked to the holder")
		c.do(Send{Worker: w.ID, Msg: link.Msg{Type: link.KillChild}})
	case !c.cfg.Serve && !w.HandedOver:
		c.failUpgrade("the new worker told tableflip it was ready before it was handed the work")
	}
}

// handedOver: the old worker takes no more work and has reported every
// process it started. Spawn: the new worker now gets the complete count.
// Serve: the old copies have been asked to stop, so the upgrade is done.
func (c *Core) handedOver(w *Worker) {
	w.HandedOver = true
	u := c.Upgrade
	if u == nil || w.ID != u.Old {
		if !c.cfg.Serve && w.ID == c.Current && !w.Leaving {
			// The upgrade failed while the message was on its way.
			w.HandedOver = false
			c.do(Send{Worker: w.ID, Msg: link.Msg{Type: link.Resume}})
		}
		return
	}
	if c.cfg.Serve {
		w.Leaving = true
		c.arm(TimerKillWorker, w.ID, c.workerGrace())
		c.finishUpgrade()
		return
	}
	if nw := c.Workers[u.New]; nw != nil && nw.Helloed && !nw.Adopted {
		c.adopt(nw)
	}
}

func (c *Core) upgradeFailedReport(w *Worker, reason string, seq int) {
	u := c.Upgrade
	switch {
	case u == nil, w.ID == u.Old && seq != u.Seq:
		// An upgrade that has already ended, as the holder saw it.
		c.log.Info("worker reports a failed upgrade", "pid", w.PID, "reason", reason)
	case w.ID == u.New && c.cfg.Serve:
		// Final: the new worker stops what it started and leaves, and a
		// serve worker stays until its copies have drained; the answer
		// must not wait for that.
		c.failUpgrade(reason)
	case w.ID == u.New:
		// The new worker's own account says more than tableflip's
		// "child exited".
		u.Detail = reason
	case w.ID == u.Old:
		c.failUpgrade(reason)
	}
}

// upgradeWorkerExited: the old worker or its successor ended mid-upgrade.
func (c *Core) upgradeWorkerExited(w *Worker, e WorkerExited, attrs []any) {
	u := c.Upgrade
	if w.ID == u.New {
		reason := fmt.Sprintf("new worker %d exited", w.PID)
		if e.HaveStatus {
			reason += " (" + describeStatus(e.Status) + ")"
		}
		c.failUpgrade(reason)
		return
	}
	nw := c.Workers[u.New]
	if nw != nil && nw.Linked && !nw.Leaving {
		if !w.Leaving {
			c.log.Warn("worker exited during an upgrade; the new worker takes over", append([]any{"pid", w.PID}, attrs...)...)
		}
		c.Current = nw.ID
		if !c.cfg.Serve && nw.Helloed && !nw.Adopted {
			c.adopt(nw)
		}
		if nw.Serving {
			c.stopReplacedApps(nw)
			c.finishUpgrade()
		}
		return
	}
	c.Current = 0
	c.failUpgrade("the worker exited during the upgrade")
	c.Totals.WorkerRestarts++
	c.log.Warn("worker exited unexpectedly; starting another", append([]any{"pid", w.PID, "served", w.Served}, attrs...)...)
	c.scheduleRestart(w.Served)
}

// finishUpgrade ends the upgrade in progress successfully.
func (c *Core) finishUpgrade() {
	u := c.Upgrade
	if u == nil {
		return
	}
	c.Upgrade = nil
	took := c.now.Sub(u.Start)
	c.Totals.UpgradesOK++
	cur := c.current()
	rep := ControlReply{OK: true, Message: "upgraded", TookMS: ms(took), HolderMS: ms(u.HolderTook), HolderReplaced: u.HolderReplaced}
	if cur != nil {
		rep.Generation, rep.Version = cur.Gen, cur.Version
	}
	c.LastUpgrade = &UpgradeResult{OK: true, Gen: rep.Generation, Took: took, At: c.now}
	c.log.Info("upgrade done", "gen", rep.Generation, "version", rep.Version, "took", took.String(),
		"holder_replaced", u.HolderReplaced, "holder_took", u.HolderTook.String())
	c.answer(u, rep)
}

// failUpgrade ends the upgrade in progress: its successor is killed (the
// holder then stops any copies it started), an old worker that had already
// stopped taking work takes it again, and everyone waiting hears why.
func (c *Core) failUpgrade(reason string) {
	u := c.Upgrade
	if u == nil {
		return
	}
	c.Upgrade = nil
	if u.Phase == PhaseCheck || u.Phase == PhaseExec {
		c.do(AbortCheck{}) // and no re-execution for it
	}
	if nw := c.Workers[u.New]; nw != nil {
		c.dismiss(nw)
	}
	if old := c.Workers[u.Old]; old != nil && old.HandedOver && !old.Leaving && !c.cfg.Serve {
		old.HandedOver = false
		c.do(Send{Worker: old.ID, Msg: link.Msg{Type: link.Resume}})
	}
	if old := c.Workers[u.Old]; c.cfg.Serve && old != nil && old.Linked && !old.Leaving && u.Phase >= PhaseWorker {
		// It starts again the copies a rolling restart had stopped (its
		// tableflip says so too when it started the new worker; when the
		// holder did, only this does).
		c.do(Send{Worker: old.ID, Msg: link.Msg{Type: link.Resume}})
	}
	if u.Detail != "" {
		reason = u.Detail + " (" + reason + ")"
	}
	took := c.now.Sub(u.Start)
	c.Totals.UpgradesFailed++
	c.LastUpgrade = &UpgradeResult{Reason: reason, Took: took, At: c.now}
	if cur := c.current(); cur != nil && cur.Serving {
		c.log.Warn("upgrade failed; the previous generation keeps serving", "reason", reason, "took", took.String(), "gen", cur.Gen)
	} else {
		c.log.Warn("upgrade failed; no generation serves, a new worker is being started", "reason", reason, "took", took.String())
	}
	c.answer(u, ControlReply{Error: reason, HolderReplaced: u.HolderReplaced})
}

func (c *Core) answer(u *Upgrade, rep ControlReply) {
	for _, ctl := range u.Waiters {
		c.do(Reply{Ctl: ctl, Rep: rep})
	}
	c.do(Notify{Lines: []string{"READY=1", "STATUS=" + c.statusLine()}})
	if cur := c.current(); c.UpgradeQueued && cur != nil && cur.Serving {
		c.UpgradeQueued = false
		c.requestUpgrade(0, false)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func describeStatus(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("wait status %d", int(ws))
}
