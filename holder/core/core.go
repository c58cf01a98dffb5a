package core

import (
	"log/slog"
	"syscall"
	"time"
)

// Settings are the parts of the configuration the lifecycle needs.
type Settings struct {
	Serve          bool
	OnStop         string // wait, term or leave (spawn mode)
	StopTimeout    time.Duration
	KillGrace      time.Duration
	UpgradeTimeout time.Duration
	DrainTimeout   time.Duration // serve
	StopSignal     syscall.Signal
	SuccessCodes   []int         // serve: exit statuses that count as a clean stop (--success-exit-status)
	SuccessSigs    []int         // and signals
	RestartMin     time.Duration // a crashed worker is restarted after this, doubling
	RestartMax     time.Duration // up to this while it keeps failing to serve
	// HolderSpawnsSuccessors: the kernel gives no handle on a process that
	// connects (SO_PEERPIDFD, Linux 6.5), so tableflip's child cannot be
	// told from another process by the kernel's word; the holder starts
	// every upgrade's new worker itself.
	HolderSpawnsSuccessors bool
}

// Core is the lifecycle. Handle is its only entry point; it is not safe for
// concurrent use (the holder's one loop owns it).
type Core struct {
	State
	cfg Settings
	log *slog.Logger

	now     time.Time
	out     []Action
	byOwner map[ownedKey]int // procs by reporting worker and PID; rebuilt from State
}

// New returns a core with state st (NewState for a fresh holder).
func New(cfg Settings, st State, log *slog.Logger) *Core {
	if st.Workers == nil {
		st.Workers = map[int]*Worker{}
	}
	if st.Procs == nil {
		st.Procs = map[int]*Proc{}
	}
	return &Core{State: st, cfg: cfg, log: log}
}

// Handle applies one event at time now and returns what to do.
func (c *Core) Handle(now time.Time, ev Event) []Action {
	c.now, c.out = now, nil
	switch e := ev.(type) {
	case Started:
		c.spawn(SpawnWorker{AppRunning: false})
	case Resumed:
		c.resumed()
	case WorkerSpawned:
		c.workerSpawned(e)
	case WorkerSpawnFailed:
		c.workerSpawnFailed(e)
	case PeerLinked:
		c.peerLinked(e)
	case LinkMsg:
		c.linkMsg(e)
	case *LinkMsg:
		c.linkMsg(*e) // the shell's reused one: reports come by the thousand
	case LinkDown:
		c.linkDown(e)
	case SendFailed:
		c.sendFailed(e)
	case WorkerExited:
		c.workerExited(e)
	case ProcReaped:
		c.procReaped(e)
	case ProcGone:
		c.procGone(e.Proc)
	case OtherReaped:
		c.log.Debug("reaped a descendant that was never a handler", "pid", e.PID)
	case ChildrenLeft:
		c.childrenLeft(e.N)
	case Signal:
		c.signal(e.Sig)
	case TimerFired:
		c.timer(e.Key)
	case ControlAsk:
		c.control(e)
	case HolderChecked:
		c.holderChecked(e)
	case HolderExecFailed:
		c.failUpgrade("cannot re-execute the holder: " + e.Err)
	}
	return c.out
}

func (c *Core) do(a ...Action) { c.out = append(c.out, a...) }

// arm sets a timer that a later arm of the same kind and ID makes stale.
func (c *Core) arm(kind TimerKind, id int, after time.Duration) int {
	c.Seq++
	c.do(Arm{Key: Timer{Kind: kind, ID: id, Seq: c.Seq}, After: after})
	return c.Seq
}

func (c *Core) signal(sig syscall.Signal) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		c.stop(sig)
	case syscall.SIGHUP:
		c.requestUpgrade(0, false)
	default:
		// --forward-signals: to the current copies, through their worker.
		if w := c.current(); w != nil && w.Linked {
			c.do(Send{Worker: w.ID, Msg: msgSignal(sig)})
		}
	}
}

func (c *Core) timer(k Timer) {
	switch k.Kind {
	case TimerRestart:
		c.RestartPending = false
		if c.Stop == nil && c.Current == 0 {
			c.spawn(SpawnWorker{AppRunning: c.anyAppRunning()})
		}
	case TimerServeDeadline:
		if w := c.Workers[k.ID]; w != nil && w.Deadline == k.Seq && !w.Serving && !w.Leaving {
			c.log.Warn("worker did not start serving within --upgrade-timeout; stopping it", "pid", w.PID)
			c.dismiss(w)
		}
	case TimerUpgrade:
		if u := c.Upgrade; u != nil && u.Seq == k.ID {
			c.failUpgrade("no answer within --upgrade-timeout")
		}
	case TimerKillWorker:
		if w := c.Workers[k.ID]; w != nil {
			c.log.Warn("worker did not exit in time; killing it", "pid", w.PID)
			c.do(Kill{Worker: w.ID, Sig: syscall.SIGKILL})
		}
	case TimerDrain:
		if p := c.Procs[k.ID]; p != nil && p.Stopping {
			c.log.Warn("app did not stop within --drain-timeout; killed", "app_pid", p.PID, "gen", p.Gen)
			c.do(Kill{Proc: p.ID, Sig: syscall.SIGKILL})
		}
	case TimerStopPhase:
		if c.Stop != nil && c.Stop.Phase < StopPhase(k.ID) && c.Stop.Phase != StopWorkers {
			c.enterPhase(StopPhase(k.ID))
		}
	case TimerSweep:
		if c.Stop != nil && c.Stop.Phase == StopKill && !c.Done {
			c.sweep(syscall.SIGKILL)
			c.arm(TimerSweep, 0, sweepEvery)
		}
	}
}

func (c *Core) control(e ControlAsk) {
	switch e.Verb {
	case "upgrade":
		c.requestUpgrade(e.Ctl, e.Wait)
	case "stop":
		c.do(Reply{Ctl: e.Ctl, Rep: ControlReply{OK: true, Message: "stopping"}})
		c.stop(syscall.SIGTERM)
	}
}

func (c *Core) current() *Worker { return c.Workers[c.Current] }

// workerGrace is how long a leaving worker has to exit before it is
// killed. A serve worker stays until its copies have drained, which the
// holder bounds with --drain-timeout, so it has that as well.
func (c *Core) workerGrace() time.Duration {
	if c.cfg.Serve {
		return c.cfg.DrainTimeout + c.cfg.KillGrace
	}
	return c.cfg.KillGrace
}

// dismiss stops a worker that will not serve: SIGTERM first, so that it
// stops and reports whatever it started (serve mode: its copies), SIGKILL
// after --kill-grace.
func (c *Core) dismiss(w *Worker) {
	if w.Leaving {
		return
	}
	w.Leaving = true
	c.do(Kill{Worker: w.ID, Sig: syscall.SIGTERM})
	c.arm(TimerKillWorker, w.ID, c.workerGrace())
}
