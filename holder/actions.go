package holder

import (
	"syscall"

	"github.com/sockhold/sockhold/holder/core"
)

func coreSignal(s syscall.Signal) core.Event { return core.Signal{Sig: s} }

// do carries out one core action.
func (h *Holder) do(a core.Action) {
	switch a := a.(type) {
	case core.SpawnWorker:
		h.spawnWorker(a)
	case core.AcceptLink:
		h.acceptLink(a)
	case core.RefuseLink:
		h.refuseLink(a)
	case core.Send:
		h.send(a)
	case core.Kill:
		h.kill(a)
	case core.SweepChildren:
		h.sweepChildren(a.Sig)
	case core.CountChildren:
		h.feed(core.ChildrenLeft{N: len(childPIDs())})
	case core.Audit:
		h.audit(a.Procs)
	case core.Forget:
		if a.Worker != 0 {
			h.forgetWorker(a.Worker)
		}
		if a.Proc != 0 {
			h.forgetProc(a.Proc)
		}
	case core.RemoveAppDir:
		removeAppDir(h.log, a.Path)
	case core.RememberBinary:
		h.rememberBinary(a.Worker)
	case core.Arm:
		h.arm(a.Key, a.After)
	case core.Reply:
		h.reply(a.Ctl, a.Rep)
	case core.Notify:
		h.notify.send(a.Lines...)
	case core.CheckHolder:
		h.startCheck(a.Seq)
	case core.AbortCheck:
		h.abortCheck()
	case core.ExecHolder:
		// At the end of this loop turn, once every event has been handled
		// and every link flushed: nothing is left half done.
		h.execWanted = true
	case core.Finish:
		h.finish(a.Status)
	}
}

// sweepChildren signals every child of the holder, at the end of a stop:
// a PID /proc lists as the holder's child is its own unreaped child, which
// no other process can have.
func (h *Holder) sweepChildren(sig syscall.Signal) {
	pids := childPIDs()
	for _, pid := range pids {
		syscall.Kill(pid, sig)
	}
	h.feed(core.ChildrenLeft{N: len(pids)})
}

func coreExecFailed(err string) core.Event { return core.HolderExecFailed{Err: err} }
