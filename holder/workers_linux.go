package holder

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/core"
	"github.com/sockhold/sockhold/holder/link"
)

// spawnWorker starts a worker: from the binary that last served (a crashed
// worker is never restarted from a broken binary someone left on disk), or
// for an upgrade from the binary the holder runs. The worker gets the listeners at
// known descriptors; the holder keeps its pidfd from clone.
func (h *Holder) spawnWorker(a core.SpawnWorker) {
	fail := func(err error) {
		h.feed(core.WorkerSpawnFailed{Successor: a.Successor, Err: err.Error()})
	}
	bin := h.lastGood
	if a.Successor {
		// An upgrade: the binary this holder runs now, the one it checked
		// and re-executed (or found to be the same), whatever is at the
		// path since.
		fd, err := unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fail(err)
			return
		}
		defer unix.Close(fd)
		bin = fd
	}
	files := []uintptr{0, 1, 2}
	fds := config.WorkerFDs{Rendezvous: h.rendezvousName, Proto: link.Proto}
	for _, s := range h.sockets {
		fds.Listeners = append(fds.Listeners, config.ListenerFD{FD: len(files), Family: s.Family, Addr: s.Addr, Name: s.Spec.Name})
		files = append(files, uintptr(s.FD))
	}
	env := handoff.FilterEnv(os.Environ(), config.InternalEnv, config.InternalEnvPrefixes)
	env = append(env, config.ConfigEnv+"="+h.cfg.Encode(), config.FDsEnv+"="+fds.Encode())
	if a.AppRunning {
		env = append(env, config.RunningEnv+"=1")
	}
	if a.Successor {
		env = append(env, config.SuccessorEnv+"=1", config.IndicesEnv+"="+config.EncodeIndices(a.AppIndices))
	}
	pidfd := -1
	// The holder's own descriptor of the binary, by its /proc path: exec
	// opens exactly the file the holder holds, whatever is at exe now.
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), bin)
	var pid int
	var err error
	handoff.WithEmptySignalMask(func() {
		pid, err = syscall.ForkExec(path, []string{h.exe, config.WorkerArg}, &syscall.ProcAttr{
			Env:   env,
			Files: files,
			// A process group of its own: a Ctrl-C at the terminal reaches
			// the holder, which stops the worker in order.
			Sys: &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd},
		})
	})
	if err != nil {
		fail(err)
		return
	}
	if pidfd < 0 {
		// Kernels before 5.3: the child is ours and unreaped, so its PID
		// cannot have been reused yet.
		if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
			h.log.Error("no pidfd for the worker; killing it", "pid", pid, "error", err)
			syscall.Kill(pid, syscall.SIGKILL)
			fail(err)
			return
		}
	}
	w := &workerHandle{id: h.newID(), pid: pid, pidfd: pidfd}
	h.workers[w.id] = w
	h.watch(pidfd, fdWorkerExit, w.id)
	h.feed(core.WorkerSpawned{ID: w.id, PID: pid, Successor: a.Successor})
}

// acceptPeers takes the callers waiting on the rendezvous and tells the
// core what the kernel says about each. An accept error (EMFILE) pauses
// the rendezvous with backoff instead of ending it or spinning.
func (h *Holder) acceptPeers() {
	for i := 0; i < 64; i++ {
		p, err := link.Accept(h.rendezvous)
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if err != nil {
			if errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.EINTR) {
				continue
			}
			h.pauseRendezvous(err)
			return
		}
		h.rendezvousBackoff = 0
		h.peerLinked(p)
	}
}

func (h *Holder) pauseRendezvous(err error) {
	h.rendezvousBackoff = min(max(2*h.rendezvousBackoff, 10*time.Millisecond), time.Second)
	h.rendezvousOff = time.Now().Add(h.rendezvousBackoff)
	h.unwatch(h.rendezvous)
	h.log.Warn("worker rendezvous: accept failed; pausing", "error", err, "pause", h.rendezvousBackoff.String())
}

func (h *Holder) resumeRendezvous() {
	h.rendezvousOff = time.Time{}
	h.watch(h.rendezvous, fdRendezvous, 0) // refused, it is offered again
}

// peerLinked gathers the facts about a caller, all through handles: its
// uid (SO_PEERCRED), whether the holder started it (the pidfd from clone
// is that child's), else its parent and its binary, read from /proc and
// trusted only because its pidfd showed it alive afterwards.
func (h *Holder) peerLinked(p link.Peer) {
	ev := core.PeerLinked{Link: h.newID(), PID: p.PID, UIDOK: p.UID == os.Geteuid()}
	// Kernels before 6.5 give no SO_PEERPIDFD: such a caller can only be
	// a worker the holder started itself (its PID is that of the holder's
	// own unreaped child), never a successor (see peerPidfdWorks).
	ev.HasPidfd = p.Pidfd >= 0
	for _, w := range h.workers {
		if w.pid == p.PID && w.conn == nil && alive(w.pidfd) {
			ev.Worker = w.id
		}
	}
	if ev.Worker == 0 && ev.HasPidfd {
		ppid := parentOf(p.PID)
		exe, err := exeOf(p.PID)
		if alive(p.Pidfd) {
			ev.PPID = ppid
			ev.ExeOK = err == nil && exe == h.selfExe
		}
	}
	h.pending[ev.Link] = p
	h.feed(ev)
}

func (h *Holder) acceptLink(a core.AcceptLink) {
	p, ok := h.pending[a.Link]
	if !ok {
		return
	}
	delete(h.pending, a.Link)
	w := h.workers[a.Worker]
	if w == nil {
		// A successor: the kernel's handle on it becomes the holder's.
		w = &workerHandle{id: a.Worker, pid: p.PID, pidfd: p.Pidfd}
		h.workers[w.id] = w
		h.watch(w.pidfd, fdWorkerExit, w.id)
	} else if p.Pidfd >= 0 {
		unix.Close(p.Pidfd) // the holder has its own, from clone
	}
	conn, err := link.NewConn(p.FD, h.recvBuf)
	if err != nil {
		unix.Close(p.FD)
		h.feed(core.LinkDown{Worker: w.id, Why: err.Error()})
		return
	}
	w.conn = conn
	h.watch(conn.FD, fdLink, w.id)
}

func (h *Holder) refuseLink(a core.RefuseLink) {
	p, ok := h.pending[a.Link]
	if !ok {
		return
	}
	delete(h.pending, a.Link)
	if c, err := link.NewConn(p.FD, h.recvBuf); err == nil {
		c.Send(link.Msg{Type: link.Refused, Reason: a.Reason})
		c.Close()
	} else {
		unix.Close(p.FD)
	}
	if p.Pidfd >= 0 {
		unix.Close(p.Pidfd)
	}
	h.refusals.note(h.log, p.PID, a.Reason)
}

// readLink takes up to max messages from a worker's link (level-triggered
// epoll reports the rest): captured output goes to a relay, the rest to the
// core. Before each, the worker's reports so far are read: the core knows
// every process a message may name.
func (h *Holder) readLink(w *workerHandle, max int) {
	for i := 0; i < max && w.conn != nil && !w.linkEOF; i++ {
		h.readReports(w)
		m, fds, err := w.conn.Recv()
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if err != nil {
			w.linkEOF = true
			w.conn.Drop() // nothing waiting can be sent now
			h.unwatch(w.conn.FD)
			if errors.Is(err, link.ErrClosed) {
				// A worker's link closes as it exits: its pidfd says so an
				// instant later. Only one still running after linkGrace
				// closed its link while alive.
				w.linkDownAt = time.Now().Add(linkGrace)
				return
			}
			h.feed(core.LinkDown{Worker: w.id, Why: err.Error()})
			return
		}
		switch m.Type {
		case link.Output:
			h.relayFromLink(m, fds, w.id)
			continue
		case link.Hello:
			if len(fds) == 1 && w.reports == nil {
				h.takeReports(w, fds[0])
				fds = nil
			}
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		h.feed(core.LinkMsg{Worker: w.id, Msg: m})
	}
}

// linkGrace is how long a worker whose link closed may take to be seen
// exiting before the holder takes it for one that lost its link alive.
const linkGrace = time.Second

// linkDeadlines reports workers whose link closed and who still run.
func (h *Holder) linkDeadlines(now time.Time) {
	for _, w := range h.workers {
		if !w.linkDownAt.IsZero() && !w.linkDownAt.After(now) {
			w.linkDownAt = time.Time{}
			h.feed(core.LinkDown{Worker: w.id, Why: "link closed"})
		}
	}
}

// reportDelay is how long a worker's reports may wait in the kernel to be
// read in one batch: reading each as it comes would wake the holder once
// per connection.
const reportDelay = 20 * time.Millisecond

func (h *Holder) takeReports(w *workerHandle, fd int) {
	c, err := link.NewConn(fd, h.recvBuf)
	if err != nil {
		unix.Close(fd)
		return
	}
	w.reports = c
	h.watch(fd, fdReports, w.id)
}

// reportsReady: reports are waiting. They are read a little later, in a
// batch with whatever else comes meanwhile; a dead worker's are read now.
func (h *Holder) reportsReady(w *workerHandle, hangUp bool) {
	if hangUp {
		h.readReports(w)
		if w.reports != nil {
			h.unwatch(w.reports.FD)
		}
		return
	}
	h.setWatch(w.reports.FD, false, false)
	if h.reportsDue.IsZero() {
		h.reportsDue = time.Now().Add(reportDelay)
	}
}

// reportsDeadline reads every worker's waiting reports.
func (h *Holder) reportsDeadline() {
	h.reportsDue = time.Time{}
	h.readAllReports()
	for _, w := range h.workers {
		if w.reports != nil {
			if _, ok := h.roles[w.reports.FD]; ok {
				h.setWatch(w.reports.FD, true, false)
			}
		}
	}
}

func (h *Holder) readAllReports() {
	for _, w := range h.workers {
		h.readReports(w)
	}
}

// readReports takes every report waiting from a worker: the pidfds it
// reports become proc handles.
func (h *Holder) readReports(w *workerHandle) {
	for i := 0; w.reports != nil && i < 1<<16; i++ {
		m, fds, err := w.reports.Recv()
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if err != nil {
			if !errors.Is(err, link.ErrClosed) {
				h.log.Warn("worker reports unreadable", "pid", w.pid, "error", err)
			}
			h.unwatch(w.reports.FD)
			w.reports.Close()
			w.reports = nil
			if !errors.Is(err, link.ErrClosed) {
				h.feed(core.LinkDown{Worker: w.id, Why: err.Error()})
			}
			return
		}
		if m.Type != link.Procs {
			closeFDs(fds)
			continue
		}
		ids := h.newProcs(m.Started, fds)
		if h.feeding {
			h.feed(core.LinkMsg{Worker: w.id, Msg: m, ProcIDs: ids})
			continue
		}
		// Handled before feed returns (nothing else is queued): one event
		// value serves every report, rather than one allocated for each.
		h.reportEv = core.LinkMsg{Worker: w.id, Msg: m, ProcIDs: ids}
		h.feed(&h.reportEv)
	}
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// newProcs keeps the pidfd of every process a worker reports starting.
func (h *Holder) newProcs(started []link.Proc, fds []int) []int {
	ids := h.idScratch[:0]
	defer func() { h.idScratch = ids }()
	for i, fd := range fds {
		if i >= len(started) {
			unix.Close(fd)
			continue
		}
		p := &procHandle{id: h.newID(), pid: started[i].PID, pidfd: fd}
		h.procs[p.id] = p
		h.byPID[p.pid] = append(h.byPID[p.pid], p.id)
		ids = append(ids, p.id)
	}
	return ids
}

// workerGone: a worker's pidfd says it has exited. Everything it sent
// before it died is read first (its last report, its drain list), then it
// is reaped if it is the holder's child.
func (h *Holder) workerGone(w *workerHandle) {
	ws, reaped, err := reapHandle(w.pidfd)
	if !reaped && (err == nil || !exited(w.pidfd)) {
		// Still running: the event was for the descriptor number's
		// previous owner, closed and reused earlier in this turn.
		return
	}
	if !reaped {
		ws = 0
	}
	h.workerEnded(w, ws, reaped)
}

// workerReaped: the SIGCHLD pass reaped worker w.
func (h *Holder) workerReaped(w *workerHandle, ws syscall.WaitStatus) { h.workerEnded(w, ws, true) }

func (h *Holder) workerEnded(w *workerHandle, ws syscall.WaitStatus, have bool) {
	if w.conn != nil && !w.linkEOF {
		h.readLink(w, 1<<16)
	}
	h.readReports(w)
	h.unwatch(w.pidfd)
	h.feed(core.WorkerExited{Worker: w.id, Status: ws, HaveStatus: have})
	h.tidyMemory = true
}

func (h *Holder) forgetWorker(id int) {
	w := h.workers[id]
	if w == nil {
		return
	}
	delete(h.workers, id)
	h.unwatch(w.pidfd)
	unix.Close(w.pidfd)
	if w.conn != nil {
		h.unwatch(w.conn.FD)
		w.conn.Close()
		w.conn = nil
	}
	if w.reports != nil {
		h.unwatch(w.reports.FD)
		w.reports.Close()
		w.reports = nil
	}
}

// send carries out a core Send: the message, with the pidfds of the named
// procs, now or queued for when the link has room.
func (h *Holder) send(a core.Send) {
	w := h.workers[a.Worker]
	if w != nil && w.linkEOF {
		// The link closed: nothing more reaches this worker, and whether
		// it still runs is the link-down check's to say (it is dismissed,
		// SIGTERM first, if it does), not a kill's here.
		h.log.Debug("not sent: the worker's link has closed", "pid", w.pid, "type", a.Msg.Type)
		return
	}
	if w == nil || w.conn == nil {
		h.feed(core.SendFailed{Worker: a.Worker, Err: "no link"})
		return
	}
	var fds []int
	for _, id := range a.Procs {
		if p := h.procs[id]; p != nil {
			fds = append(fds, p.pidfd)
		}
	}
	if len(fds) != len(a.Procs) {
		h.log.Warn("a handle vanished before it was sent", "worker", w.pid)
	}
	if err := w.conn.Send(a.Msg, fds...); err != nil {
		h.feed(core.SendFailed{Worker: a.Worker, Err: err.Error()})
		return
	}
	if w.conn.Pending() {
		h.setWatch(w.conn.FD, true, true)
	}
}

func (h *Holder) flushLink(w *workerHandle) {
	if w.conn == nil || !w.conn.Pending() {
		return
	}
	if err := w.conn.Flush(); err != nil {
		// What still waits cannot go either; the link is read on, for
		// what the worker sent before it failed.
		w.conn.Drop()
		if !w.linkEOF {
			h.setWatch(w.conn.FD, true, false)
		}
		h.feed(core.SendFailed{Worker: w.id, Err: err.Error()})
		return
	}
	if !w.conn.Pending() && !w.linkEOF {
		h.setWatch(w.conn.FD, true, false)
	}
}

// flushLinks sends what waits on every link, once per loop turn.
func (h *Holder) flushLinks() {
	for _, w := range h.workers {
		if w.conn != nil && w.conn.Pending() {
			h.flushLink(w)
		}
	}
}

// kill carries out a core Kill through the handle.
func (h *Holder) kill(a core.Kill) {
	if a.Worker != 0 {
		if w := h.workers[a.Worker]; w != nil {
			signalHandle(w.pidfd, a.Sig, false, 0)
		}
		return
	}
	p := h.procs[a.Proc]
	if p == nil {
		return
	}
	fallback := 0
	if cp := h.core.Procs[a.Proc]; cp != nil && cp.Owner == 0 {
		fallback = p.pid // the holder's own unreaped child leads this group
	}
	signalHandle(p.pidfd, a.Sig, a.Group, fallback)
}

func (h *Holder) forgetProc(id int) {
	p := h.procs[id]
	if p == nil {
		return
	}
	delete(h.procs, id)
	ids := h.byPID[p.pid]
	for i, x := range ids {
		if x == id {
			ids = append(ids[:i], ids[i+1:]...)
			break
		}
	}
	if len(ids) == 0 {
		delete(h.byPID, p.pid)
	} else {
		h.byPID[p.pid] = ids
	}
	unix.Close(p.pidfd)
}

// audit releases the handles of procs whose worker died before reporting
// that it had reaped them: their pidfd says the process is gone.
func (h *Holder) audit(ids []int) {
	for _, id := range ids {
		if p := h.procs[id]; p != nil && !alive(p.pidfd) {
			h.feed(core.ProcGone{Proc: id})
		}
	}
}

// rememberBinary keeps a descriptor of the binary a serving worker runs:
// crashed workers restart from it, whatever has been put on disk since.
func (h *Holder) rememberBinary(id int) {
	w := h.workers[id]
	if w == nil {
		return
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/exe", w.pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	if !alive(w.pidfd) {
		unix.Close(fd) // /proc/PID may not have been that worker
		return
	}
	old, _ := fileIDOf(h.lastGood)
	now, err := fileIDOf(fd)
	if err != nil || now == old {
		unix.Close(fd)
		return
	}
	unix.Close(h.lastGood)
	h.lastGood = fd
}
