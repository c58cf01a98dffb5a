package core

import (
	"slices"
	"sort"
	"syscall"
	"time"

	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/holder/logs"
)

// ownedKey finds a proc by the worker that reports it and its PID: a PID
// is unique among one worker's unreaped children.
type ownedKey struct{ owner, pid int }

func (c *Core) index() map[ownedKey]int {
	if c.byOwner == nil {
		c.byOwner = map[ownedKey]int{}
		for _, p := range c.Procs {
			if p.Owner != 0 {
				c.byOwner[ownedKey{p.Owner, p.PID}] = p.ID
			}
		}
	}
	return c.byOwner
}

// procsReported records what a worker started (each with the pidfd the
// shell holds as ProcIDs[i]) and what it reaped.
//
// Exits first: within one report an exit always came first (a process just
// started cannot be reaped before the worker's next wait), and a PID the
// worker reaped may have been given to a handler it then started.
func (c *Core) procsReported(w *Worker, m link.Msg, ids []int) {
	idx := c.index()
	for _, pid := range m.Exited {
		if id, ok := idx[ownedKey{w.ID, pid}]; ok {
			c.dropProc(id)
		}
	}
	if c.Stop != nil {
		// A serve worker reaps its own copies, through a stop too.
		for _, a := range m.AppExits {
			c.noteAppExit(syscall.WaitStatus(a.Status))
		}
	}
	for i, s := range m.Started {
		if i >= len(ids) {
			break
		}
		p := &Proc{ID: ids[i], Owner: w.ID, PID: s.PID, Gen: w.Gen, App: s.App, Slot: s.Slot,
			Start: time.Unix(0, s.Start), Peer: s.Peer}
		c.Procs[p.ID] = p
		idx[ownedKey{w.ID, s.PID}] = p.ID
	}
	if k := m.Counts; k != nil {
		c.Totals.Accepted += k.Accepted
		c.Totals.Rejected += k.Rejected
		c.Totals.SpawnFailures += k.SpawnFailures
	}
}

// appIndices is the sorted EINHORN_CHILD_INDEX values that live app copies
// hold, except those of worker except.
func (c *Core) appIndices(except int) []int {
	seen := map[int]bool{}
	var out []int
	for _, p := range c.Procs {
		if p.App && (except == 0 || p.Owner != except) && !seen[p.Slot] {
			seen[p.Slot] = true
			out = append(out, p.Slot)
		}
	}
	sort.Ints(out)
	return out
}

// orphan makes the holder p's parent (its worker has gone).
func (c *Core) orphan(p *Proc) {
	if c.byOwner != nil {
		delete(c.byOwner, ownedKey{p.Owner, p.PID})
	}
	p.Owner = 0
}

func (c *Core) dropProc(id int) {
	p := c.Procs[id]
	if p == nil {
		return
	}
	delete(c.Procs, id)
	if p.Owner != 0 && c.byOwner != nil {
		delete(c.byOwner, ownedKey{p.Owner, p.PID})
	}
	c.do(Forget{Proc: id})
}

func (c *Core) procReaped(e ProcReaped) {
	p := c.Procs[e.Proc]
	if p == nil {
		return
	}
	attrs := append([]any{"pid", p.PID}, logs.WaitAttrs(e.Status)...)
	attrs = append(attrs, "gen", p.Gen, "duration", c.now.Sub(p.Start).Round(time.Millisecond).String(), "reaped_by", "holder")
	if p.App {
		attrs = append(attrs, "app", true, "copy", p.Slot)
	}
	c.log.Info("EXIT", attrs...)
	if c.Stop != nil && p.App {
		c.noteAppExit(e.Status)
	}
	c.dropProc(p.ID)
}

func (c *Core) procGone(id int) {
	if p := c.Procs[id]; p != nil {
		c.log.Debug("handle of a process reaped by its dead worker released", "pid", p.PID, "gen", p.Gen)
		c.dropProc(id)
	}
}

// noteAppExit records how an app ended during a serve-mode stop: sockhold
// then exits 0 if the app stopped cleanly (status 0, or the stop signal),
// its status if it failed, 128+signal if something else killed it.
func (c *Core) noteAppExit(ws syscall.WaitStatus) {
	switch {
	case ws.Exited():
		if ws.ExitStatus() != 0 && !slices.Contains(c.cfg.SuccessCodes, ws.ExitStatus()) {
			c.ExitStatus = ws.ExitStatus()
		}
	case ws.Signaled():
		if ws.Signal() != c.cfg.StopSignal && !slices.Contains(c.cfg.SuccessSigs, int(ws.Signal())) {
			c.ExitStatus = 128 + int(ws.Signal())
		}
	}
}

// armDrains gives apps a worker asked to stop until --drain-timeout; then
// they are killed through the handles the holder has held since they
// started, so the kill can never reach a process that reused a PID.
func (c *Core) armDrains(w *Worker, pids []int) {
	idx := c.index()
	for _, pid := range pids {
		if id, ok := idx[ownedKey{w.ID, pid}]; ok {
			c.draining(c.Procs[id])
		}
	}
}

func (c *Core) draining(p *Proc) {
	if p == nil || p.Stopping {
		return
	}
	p.Stopping = true
	c.arm(TimerDrain, p.ID, c.cfg.DrainTimeout)
}

// stopApp asks an app whose worker has gone to stop, as its worker would.
func (c *Core) stopApp(p *Proc) {
	c.log.Info("app asked to stop", "app_pid", p.PID, "copy", p.Slot, "gen", p.Gen,
		"signal", logs.SignalName(c.cfg.StopSignal))
	c.do(Kill{Proc: p.ID, Sig: c.cfg.StopSignal})
	c.draining(p)
}

// stopReplacedApps: serve mode, w serves now; copies of older generations
// whose worker died (so nobody else will ask them) are asked to stop.
func (c *Core) stopReplacedApps(w *Worker) {
	for _, p := range sortedProcs(c.Procs) {
		if p.App && p.Owner == 0 && !p.Stopping && p.Gen < w.Gen {
			c.stopApp(p)
		}
	}
}

// rolled: one more new copy is ready in a rolling restart, so one old copy
// stops: its worker stops it, or, if that worker has died, the holder.
func (c *Core) rolled(w *Worker) {
	u := c.Upgrade
	if u == nil || w.ID != u.New {
		return
	}
	if old := c.Workers[u.Old]; old != nil && old.Linked {
		c.do(Send{Worker: old.ID, Msg: link.Msg{Type: link.StopOne}})
		return
	}
	for _, p := range sortedProcs(c.Procs) {
		if p.App && p.Owner == 0 && !p.Stopping && p.Gen < w.Gen {
			c.stopApp(p)
			return
		}
	}
}

// anyAppRunning: an app copy of any generation runs and was not asked to
// stop (so a worker started now replaces it rather than starting idle).
func (c *Core) anyAppRunning() bool {
	for _, p := range c.Procs {
		if p.App && !p.Stopping {
			return true
		}
	}
	return false
}

// sortedProcs orders procs by ID, so that what the core does never depends
// on map order.
func sortedProcs(m map[int]*Proc) []*Proc {
	out := make([]*Proc, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
