package core

import (
	"fmt"
	"syscall"
	"time"

	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/holder/logs"
)

// adoptBatch is how many pidfds one adopt message carries (SCM_RIGHTS
// allows 253).
const adoptBatch = 200

func (c *Core) spawn(s SpawnWorker) { c.do(s) }

func (c *Core) workerSpawned(e WorkerSpawned) {
	w := &Worker{ID: e.ID, PID: e.PID, Started: c.now}
	c.Workers[e.ID] = w
	if e.Successor {
		if u := c.Upgrade; u != nil && u.New == 0 {
			u.New = w.ID
		} else {
			// The upgrade it was for has ended meanwhile.
			c.dismiss(w)
			return
		}
	} else {
		c.Current = w.ID
	}
	w.Deadline = c.arm(TimerServeDeadline, w.ID, c.cfg.UpgradeTimeout)
	c.log.Info("worker started", "pid", w.PID, "inherited_handlers", c.liveHandlers(0), "successor", e.Successor)
}

func (c *Core) workerSpawnFailed(e WorkerSpawnFailed) {
	if e.Successor {
		c.failUpgrade("can't start the new worker: " + e.Err)
		return
	}
	c.log.Error("cannot start worker", "error", e.Err)
	c.scheduleRestart(false)
}

// peerLinked decides, from what the kernel said about a process that
// connected to the rendezvous, whether it is a worker: one the holder
// started itself (it holds its pidfd from clone), or the successor the
// current worker's upgrade is starting, which is that worker's child
// (checked while the handles of both showed them alive) and runs the
// holder's own binary. Nothing else is ever taken for a worker.
func (c *Core) peerLinked(e PeerLinked) {
	u := c.Upgrade
	old := c.Workers[c.upgradeOld()]
	refuse := func(why string) {
		c.do(RefuseLink{Link: e.Link, Reason: why})
		if u != nil && old != nil && old.PID == e.PPID && u.Detail == "" {
			// The upgrade fails for it later: say why then.
			u.Detail = "a process the old worker started was refused: " + why
		}
	}
	switch {
	case !e.UIDOK:
		refuse("runs as another user")
	case e.Worker != 0:
		w := c.Workers[e.Worker]
		if w == nil || w.Linked || w.Leaving {
			refuse("not a worker awaiting its link")
			return
		}
		w.Linked = true
		c.do(AcceptLink{Link: e.Link, Worker: w.ID})
	default:
		switch {
		case !e.HasPidfd:
			refuse("no handle on the process")
		case u == nil || u.Phase != PhaseWorker || u.ViaHolder:
			refuse("no upgrade is starting a worker")
		case u.New != 0:
			refuse("the upgrade already has its new worker")
		case old == nil || old.PID != e.PPID:
			refuse("not a child of the worker being upgraded")
		case !e.ExeOK:
			refuse("does not run the holder's binary")
		default:
			w := &Worker{ID: e.Link, PID: e.PID, Parent: old.ID, Linked: true, Started: c.now}
			c.Workers[w.ID] = w
			u.New = w.ID
			w.Deadline = c.arm(TimerServeDeadline, w.ID, c.cfg.UpgradeTimeout)
			c.do(AcceptLink{Link: e.Link, Worker: w.ID})
			c.log.Info("new worker linked", "pid", w.PID, "parent", old.PID)
		}
	}
}

func (c *Core) upgradeOld() int {
	if c.Upgrade == nil {
		return 0
	}
	return c.Upgrade.Old
}

func (c *Core) linkMsg(e LinkMsg) {
	w := c.Workers[e.Worker]
	if w == nil {
		return
	}
	m := e.Msg
	switch m.Type {
	case link.Hello:
		c.hello(w, m)
	case link.Procs:
		c.procsReported(w, m, e.ProcIDs)
	case link.Serving:
		c.serving(w)
	case link.ChildReady:
		c.childReady(w, m.Seq)
	case link.HandedOver:
		c.handedOver(w)
	case link.UpgradeFailed:
		c.armDrains(w, m.Drain)
		c.upgradeFailedReport(w, m.Reason, m.Seq)
	case link.Drain:
		c.armDrains(w, m.Drain)
	case link.Rolled:
		c.rolled(w)
	case link.Leaving:
		c.workerLeaving(w)
	case link.Restart:
		if w.ID == c.Current && !w.Leaving {
			c.log.Info("the worker got SIGHUP (an app signalling EINHORN_MASTER_PID, say): restarting", "worker", w.PID)
			c.requestUpgrade(0, false)
		}
	case link.AdoptFailed:
		c.log.Error("worker could not take the handover; stopping it", "pid", w.PID, "reason", m.Reason)
		if u := c.Upgrade; u != nil && w.ID == u.New {
			u.Detail = "the new worker could not take the handover: " + m.Reason
		}
		c.dismiss(w)
	}
}

func (c *Core) hello(w *Worker, m link.Msg) {
	w.Helloed, w.Version, w.Proto, w.AppDir = true, m.Version, m.Proto, m.AppDir
	u := c.Upgrade
	switch {
	case w.ID == c.Current && !w.Adopted:
		c.adopt(w)
	case u != nil && w.ID == u.New:
		old := c.Workers[u.Old]
		switch {
		case c.cfg.Serve:
			// No handler budget to hand over: the new generation starts
			// its copies at once, and the old one stops its own only once
			// they are ready.
			c.adopt(w)
		case old != nil && old.Linked && !old.Leaving:
			// Only now that the new worker has linked and is set up does
			// the old one stop taking work: its final report is the
			// complete list of what the new one must count.
			c.do(Send{Worker: old.ID, Msg: link.Msg{Type: link.HandOver}})
		default:
			c.adopt(w) // the old worker has gone: nothing to wait for
		}
	}
}

// adopt gives a worker its generation number and, in spawn mode, the pidfd
// of every live handler of every other generation, so that --processes
// counts them. The worker accepts nothing before the last adopt message.
func (c *Core) adopt(w *Worker) {
	c.Gen++
	w.Gen, w.Adopted = c.Gen, true
	for _, p := range c.Procs {
		if p.Owner == w.ID && p.Gen == 0 {
			p.Gen = w.Gen
		}
	}
	if c.cfg.Serve {
		c.do(Send{Worker: w.ID, Msg: link.Msg{Type: link.Adopt, Generation: w.Gen, Indices: c.appIndices(w.ID)}})
		return
	}
	var batch []*Proc
	flush := func(more bool) {
		m := link.Msg{Type: link.Adopt, Generation: w.Gen, More: more}
		var ids []int
		for _, p := range batch {
			m.PIDs = append(m.PIDs, p.PID)
			m.Starts = append(m.Starts, p.Start.UnixNano())
			m.Gens = append(m.Gens, p.Gen)
			ids = append(ids, p.ID)
		}
		c.do(Send{Worker: w.ID, Msg: m, Procs: ids})
		batch = batch[:0]
	}
	for _, p := range sortedProcs(c.Procs) {
		if p.App || p.Owner == w.ID {
			continue
		}
		if len(batch) == adoptBatch {
			flush(true)
		}
		batch = append(batch, p)
	}
	flush(false)
}

func (c *Core) serving(w *Worker) {
	if w.Serving || w.Leaving {
		return
	}
	w.Serving, w.Served = true, true
	c.RestartFailures = 0
	c.do(RememberBinary{Worker: w.ID})
	u := c.Upgrade
	if u != nil && w.ID == u.New {
		old := c.Workers[u.Old]
		c.Current = w.ID
		c.logServing(w)
		switch {
		case c.cfg.Serve && old != nil && old.Linked:
			// The new copies are ready: only now is the old generation
			// asked to stop its own. The upgrade ends once it has.
			u.Phase = PhaseHandover
			c.do(Send{Worker: old.ID, Msg: link.Msg{Type: link.HandOver}})
		case old != nil && old.Linked:
			old.Leaving = true
			c.do(Send{Worker: old.ID, Msg: link.Msg{Type: link.Exit}})
			c.arm(TimerKillWorker, old.ID, c.cfg.KillGrace)
			c.finishUpgrade()
		default:
			c.stopReplacedApps(w)
			c.finishUpgrade()
		}
		return
	}
	if w.ID != c.Current {
		return
	}
	c.logServing(w)
	c.stopReplacedApps(w)
	c.do(Notify{Lines: []string{"READY=1", "STATUS=" + c.statusLine()}})
	if c.UpgradeQueued && c.Upgrade == nil {
		c.UpgradeQueued = false
		c.requestUpgrade(0, false)
	}
}

func (c *Core) logServing(w *Worker) {
	c.log.Info("serving", "gen", w.Gen, "worker", w.PID, "version", w.Version)
}

func (c *Core) linkDown(e LinkDown) {
	w := c.Workers[e.Worker]
	if w == nil || !w.Linked {
		return
	}
	w.Linked = false
	// A worker the holder cannot talk to can be neither counted nor
	// upgraded nor stopped in order: it goes, and its exit decides what
	// follows.
	if !w.Leaving {
		c.log.Warn("worker link lost; stopping the worker", "pid", w.PID, "why", e.Why)
	}
	c.dismiss(w)
}

func (c *Core) sendFailed(e SendFailed) {
	w := c.Workers[e.Worker]
	if w == nil || w.Killed {
		return // every later send to it fails too: one kill, one line
	}
	w.Killed = true
	c.log.Error("cannot send to the worker; killing it", "pid", w.PID, "error", e.Err)
	c.do(Kill{Worker: w.ID, Sig: syscall.SIGKILL})
}

// workerExited decides what follows the end of a worker: another is
// started, the upgrade's successor takes over, or the stop goes on.
func (c *Core) workerExited(e WorkerExited) {
	w := c.Workers[e.Worker]
	if w == nil {
		return
	}
	delete(c.Workers, w.ID)
	c.do(Forget{Worker: w.ID})
	if w.AppDir != "" {
		c.do(RemoveAppDir{Path: w.AppDir})
	}
	var attrs []any
	if e.HaveStatus {
		attrs = logs.WaitAttrs(e.Status)
	}
	// Its children are the holder's now (or were reaped by it before it
	// died): the shell checks every handle.
	var orphans []int
	for _, p := range sortedProcs(c.Procs) {
		if p.Owner == w.ID {
			c.orphan(p)
			orphans = append(orphans, p.ID)
		}
	}
	if len(orphans) > 0 {
		c.do(Audit{Procs: orphans})
	}
	if w.ID != c.Current && c.Stop == nil {
		// A successor that failed, or an old generation already replaced:
		// nobody else will ask its copies to stop.
		for _, id := range orphans {
			if p := c.Procs[id]; p.App && !p.Stopping {
				c.stopApp(p)
			}
		}
	}
	if c.Stop != nil {
		c.log.Info("worker stopped", append([]any{"pid", w.PID, "handlers_left", c.liveHandlers(0)}, attrs...)...)
		if len(c.Workers) == 0 {
			c.applyOnStop()
		}
		return
	}
	if u := c.Upgrade; u != nil && (w.ID == u.New || w.ID == u.Old) {
		c.upgradeWorkerExited(w, e, attrs)
		return
	}
	if w.ID != c.Current {
		c.log.Info("worker exited", append([]any{"pid", w.PID, "gen", w.Gen}, attrs...)...)
		return
	}
	c.Current = 0
	c.Totals.WorkerRestarts++
	c.log.Warn("worker exited unexpectedly; starting another", append([]any{"pid", w.PID,
		"lived", c.now.Sub(w.Started).Round(time.Millisecond).String(), "served", w.Served,
		"handlers_left", c.liveHandlers(0)}, attrs...)...)
	c.scheduleRestart(w.Served)
}

// workerLeaving: a serve worker was signalled to stop by someone else than
// the holder; it stays while its copies drain. If it was the current one,
// another is started now rather than once it has exited.
func (c *Core) workerLeaving(w *Worker) {
	if w.Leaving || c.Stop != nil || w.ID != c.Current || c.Upgrade != nil {
		return // the holder's own doing, or the upgrade's exit path decides
	}
	w.Leaving = true
	c.arm(TimerKillWorker, w.ID, c.workerGrace())
	c.Current = 0
	c.Totals.WorkerRestarts++
	c.log.Warn("worker told to stop by someone else; starting another while its copies drain", "pid", w.PID)
	c.scheduleRestart(w.Served)
}

// scheduleRestart starts another worker after a backoff. A worker that
// served before it crashed did not fail to start: the backoff starts over.
func (c *Core) scheduleRestart(served bool) {
	if c.RestartPending || c.Stop != nil {
		return
	}
	if served {
		c.RestartFailures = 0
	}
	d := c.cfg.RestartMin << min(c.RestartFailures, 20)
	if d > c.cfg.RestartMax || d <= 0 {
		d = c.cfg.RestartMax
	}
	c.RestartFailures++
	c.RestartPending = true
	c.arm(TimerRestart, 0, d)
	c.log.Info("worker restart scheduled", "in", d.String())
}

// liveHandlers counts the handlers in the ledger, but for those of worker
// except (0: none excepted).
func (c *Core) liveHandlers(except int) int {
	n := 0
	for _, p := range c.Procs {
		if !p.App && (except == 0 || p.Owner != except) {
			n++
		}
	}
	return n
}

func msgSignal(sig syscall.Signal) link.Msg {
	return link.Msg{Type: link.Signal, Signo: int(sig)}
}

func (c *Core) statusLine() string {
	w := c.current()
	if w == nil {
		return "no worker"
	}
	return fmt.Sprintf("gen %d (%s) serving; %d upgrades ok, %d failed",
		w.Gen, w.Version, c.Totals.UpgradesOK, c.Totals.UpgradesFailed)
}
