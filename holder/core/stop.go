package core

import (
	"sort"
	"syscall"
	"time"
)

// sweepEvery is how often the kill phase looks for descendants reparented
// to the holder since the last sweep.
const sweepEvery = 100 * time.Millisecond

// stop begins (or, on a repeated signal, hurries) an orderly stop: the
// workers stop taking work and exit, then the handlers are treated as
// --on-stop says.
func (c *Core) stop(sig syscall.Signal) {
	if s := c.Stop; s != nil {
		switch {
		case len(c.Workers) == 0 && s.Phase >= StopWait && s.Phase < StopKill:
			c.log.Warn("repeated stop signal: hurrying", "signal", sig.String())
			c.enterPhase(s.Phase + 1)
		case len(c.Workers) > 0 && c.cfg.Serve:
			// The workers wait for their copies: hurry those.
			c.log.Warn("repeated stop signal: hurrying; the apps are killed", "signal", sig.String())
			for _, p := range sortedProcs(c.Procs) {
				if p.App {
					c.do(Kill{Proc: p.ID, Sig: syscall.SIGKILL})
				}
			}
		case len(c.Workers) > 0:
			c.log.Info("repeated stop signal: the workers are still stopping (each is killed after --kill-grace, serve mode's once its copies have had --drain-timeout)", "signal", sig.String())
		}
		return
	}
	c.Stop = &Stop{Signal: sig.String(), Phase: StopWorkers}
	c.do(Notify{Lines: []string{"STOPPING=1", "STATUS=stopping"}})
	c.log.Info("stopping", "signal", sig.String(), "on_stop", c.cfg.OnStop)
	c.failUpgrade("sockhold is stopping")
	for _, w := range c.sortedWorkers() {
		w.Leaving = true
		c.do(Kill{Worker: w.ID, Sig: syscall.SIGTERM})
		// A worker that does not stop within the grace is killed; its
		// handlers are then the holder's like any others.
		c.arm(TimerKillWorker, w.ID, c.workerGrace())
	}
	if len(c.Workers) == 0 {
		c.applyOnStop()
	}
}

// applyOnStop treats the handlers as --on-stop says, once every worker has
// gone. A served app is asked to stop (if its worker could not) and gets
// --drain-timeout.
func (c *Core) applyOnStop() {
	if c.Stop.Phase != StopWorkers {
		return
	}
	if c.cfg.Serve {
		for _, p := range sortedProcs(c.Procs) {
			if p.App && !p.Stopping {
				c.stopApp(p)
			}
		}
		c.enterPhase(StopWait)
		return
	}
	switch c.cfg.OnStop {
	case "leave":
		c.enterPhase(StopLeave)
	case "term":
		c.enterPhase(StopTerm)
	default:
		c.enterPhase(StopWait)
	}
}

// afterWait is the phase that follows waiting: spawn-mode handlers get
// SIGTERM and a grace; a served app already had its stop signal and
// --drain-timeout, so it is killed.
func (c *Core) afterWait() StopPhase {
	if c.cfg.Serve {
		return StopKill
	}
	return StopTerm
}

func (c *Core) enterPhase(p StopPhase) {
	if p == StopTerm && c.cfg.Serve {
		p = StopKill
	}
	c.Stop.Phase = p
	switch p {
	case StopWait:
		if c.cfg.StopTimeout > 0 {
			c.arm(TimerStopPhase, int(c.afterWait()), c.cfg.StopTimeout)
		}
		c.log.Info("waiting for handlers to finish", "live", len(c.Procs), "timeout", c.cfg.StopTimeout.String())
		c.do(CountChildren{})
	case StopTerm:
		if n := len(c.Procs); n > 0 {
			c.log.Warn("sent SIGTERM to handlers", "count", n)
		}
		c.sweep(syscall.SIGTERM)
		c.arm(TimerStopPhase, int(StopKill), c.cfg.KillGrace)
	case StopKill:
		if n := len(c.Procs); n > 0 {
			c.log.Warn("sent SIGKILL to handlers", "count", n)
		}
		c.sweep(syscall.SIGKILL)
		c.arm(TimerSweep, 0, sweepEvery)
	case StopLeave:
		if n := len(c.Procs); n > 0 {
			c.log.Warn("leaving handlers running", "count", n)
		}
		c.finish()
	}
}

// sweep signals every handler's process group (through its handle) and
// every child the holder has: descendants a handler left behind that were
// reparented to the subreaper too.
func (c *Core) sweep(sig syscall.Signal) {
	for _, p := range sortedProcs(c.Procs) {
		c.do(Kill{Proc: p.ID, Sig: sig, Group: true})
	}
	c.do(SweepChildren{Sig: sig})
}

// childrenLeft ends the stop once no worker and no child at all is left.
func (c *Core) childrenLeft(n int) {
	s := c.Stop
	if s == nil || len(c.Workers) > 0 || s.Phase == StopWorkers {
		return
	}
	if others := n - len(c.Procs); others > 0 && !s.ToldOthers {
		// Said once: a stop that seems to wait for nothing waits for these.
		s.ToldOthers = true
		c.log.Info("also waiting for processes handlers left behind (reparented to sockhold)", "count", others)
	}
	if n == 0 {
		c.finish()
	}
}

func (c *Core) finish() {
	if c.Done {
		return
	}
	c.Done = true
	c.log.Info("stopped")
	c.do(Finish{Status: c.ExitStatus})
}

func (c *Core) sortedWorkers() []*Worker {
	ws := make([]*Worker, 0, len(c.Workers))
	for _, w := range c.Workers {
		ws = append(ws, w)
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].ID < ws[j].ID })
	return ws
}
