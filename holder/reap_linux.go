package holder

import (
	"github.com/sockhold/sockhold/holder/core"
)

// maxReapsPerSignal bounds one reaping pass; SIGCHLD comes again for the rest.
const maxReapsPerSignal = 4096

// reapChildren collects every child that has exited, each by its handle
// when the holder has one: a zombie is looked at without being reaped
// (WNOWAIT), then reaped through the pidfd of the worker, proc or check
// process with that PID, whose waitid succeeds only if the pidfd is that
// very process. A zombie no handle claims is a descendant that was never
// a handler: reaped and otherwise left alone. Looping until none is left
// means coalesced signals lose nothing.
func (h *Holder) reapChildren() {
	// Every report first: a zombie a worker reported is reaped as the
	// handler it is.
	h.readAllReports()
	for i := 0; i < maxReapsPerSignal; i++ {
		pid, ok := peekZombie()
		if !ok {
			break
		}
		if !h.reapHandled(pid) {
			ws := reapPID(pid)
			h.feed(core.OtherReaped{PID: pid, Status: ws})
		}
	}
	if h.core.Stop != nil {
		h.feed(core.ChildrenLeft{N: len(childPIDs())})
	}
}

// reapHandled reaps pid through a handle, if one is the holder's.
func (h *Holder) reapHandled(pid int) bool {
	if c := h.check; c != nil && c.pid == pid && c.pidfd >= 0 {
		if ws, reaped, _ := reapHandle(c.pidfd); reaped {
			h.checkReaped(ws)
			return true
		}
	}
	for _, w := range h.workers {
		if w.pid == pid {
			if ws, reaped, _ := reapHandle(w.pidfd); reaped {
				h.workerReaped(w, ws)
				return true
			}
		}
	}
	for _, id := range h.byPID[pid] {
		p := h.procs[id]
		if ws, reaped, _ := reapHandle(p.pidfd); reaped {
			h.feed(core.ProcReaped{Proc: id, Status: ws})
			return true
		}
	}
	return false
}
