package holder

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/holder/logs"
)

// workerProc is the holder's view of one worker process.
type workerProc struct {
	pid         int
	gen         int // assigned when adopted
	started     time.Time
	link        int // -1 until the worker has dialled in
	version     string
	adoptSent   bool
	helloed     bool
	serving     bool
	upgraded    bool // it reported a successful upgrade and is leaving
	fromUpgrade bool // started by a worker through tableflip
}

// linkMsg is a message from a worker with the descriptors it carried.
type linkMsg struct {
	link.Msg
	fds []int
}

// closeLink shuts the link down; the reader goroutine then reports
// evLinkDown, and only then is the descriptor closed, so that a reused
// descriptor number can never be read by a stale goroutine.
func (w *workerProc) closeLink() {
	if w.link >= 0 {
		unix.Shutdown(w.link, unix.SHUT_RDWR)
	}
}

func (h *Holder) openRendezvous() error {
	fd, name, err := link.Listen()
	if err != nil {
		return err
	}
	h.rendezvous, h.rendezvousName = fd, name
	go func() {
		for {
			cfd, pid, uid, err := link.Accept(fd)
			if err != nil {
				return // closed at stop
			}
			h.events <- event{kind: evLinkUp, pid: pid, uid: uid, fd: cfd}
		}
	}()
	return nil
}

// linkUp accepts a worker's link only from a process that is one: a
// worker the holder started, a child of one (a worker started by an
// upgrade), or an orphaned child of the holder that was started as a worker.
func (h *Holder) linkUp(pid, uid, fd int) {
	w := h.workers[pid]
	switch {
	case uid != os.Geteuid():
	case w != nil && w.link < 0:
	case w == nil && (h.workers[parentOf(pid)] != nil || (parentOf(pid) == os.Getpid() && isWorkerProcess(pid))):
		w = &workerProc{pid: pid, started: time.Now(), link: -1, fromUpgrade: true}
		h.workers[pid] = w
	default:
		w = nil
	}
	if w == nil {
		h.log.Warn("refused a worker link from an unknown process", "pid", pid, "uid", uid)
		unix.Close(fd)
		return
	}
	w.link = fd
	go func() {
		for {
			m, fds, err := link.Recv(fd)
			if err != nil {
				h.events <- event{kind: evLinkDown, pid: pid, fd: fd}
				return
			}
			h.events <- event{kind: evLinkMsg, pid: pid, fd: fd, msg: linkMsg{m, fds}}
		}
	}()
}

// linkDown closes a link whose worker has gone. A worker that is not the
// holder's child is reaped by someone else (tableflip in the old worker,
// for one started by an upgrade), so its link closing is the holder's only
// news of its end: it leaves the table here. That includes a serve-mode
// worker promoted while still the old worker's child. (If it lives on and
// becomes the holder's child after all, adoptOrphans recognises it again.)
func (h *Holder) linkDown(pid, fd int) {
	unix.Close(fd)
	w := h.workers[pid]
	if w == nil || w.link != fd {
		return
	}
	w.link = -1
	if parentOf(pid) != os.Getpid() {
		delete(h.workers, pid)
		if w == h.current {
			h.current = nil
			h.currentExited(w, reaped{pid: pid})
		}
	}
	h.drainIfNoWorkers()
	h.finishIfEmpty()
}

func (h *Holder) linkMessage(pid int, m linkMsg) {
	w := h.workers[pid]
	if w == nil {
		for _, fd := range m.fds {
			unix.Close(fd)
		}
		return
	}
	switch m.Type {
	case link.Hello:
		w.version, w.helloed = m.Version, true
		// Serve mode has no handler budget to hand over, so a worker
		// started by an upgrade gets its generation at once and can
		// take over the moment its app is ready.
		if (w == h.current || (h.cfg.Mode == config.ModeServe && w.fromUpgrade)) && !w.adoptSent {
			h.sendAdopt(w)
		}
	case link.Serving:
		w.serving = true
		if w != h.current {
			if h.cfg.Mode != config.ModeServe || h.upgrade == nil || !w.fromUpgrade {
				return
			}
			// Serve mode: the new copy is ready, so the new generation
			// serves; the old worker is on its way out.
			h.current = w
		}
		h.log.Info("serving", "gen", w.gen, "worker", w.pid, "version", w.version)
		h.notify.ready(h.statusLine())
		if h.upgrade != nil {
			h.finishUpgrade(true, "")
		} else if h.upgradeQueued {
			h.upgradeQueued = false
			h.requestUpgrade(nil)
		}
	case link.Upgraded:
		w.upgraded = true
		h.addTotals(m.Stats)
		h.armDrain(m.Drain, time.Duration(m.DrainMS)*time.Millisecond)
	case link.Rolled:
		// Rolling restart: one more new copy is ready, so the old
		// generation stops one of its copies.
		if h.upgrade != nil && w.fromUpgrade && h.current != nil && h.current != w && h.current.link >= 0 {
			link.Send(h.current.link, link.Msg{Type: link.StopOne})
		}
	case link.Drain:
		h.armDrain(m.Drain, time.Duration(m.DrainMS)*time.Millisecond)
	case link.Output:
		if len(m.fds) == 1 && len(m.PIDs) == 1 {
			go h.relayOutput(m.fds[0], m.PIDs[0], w.gen)
			return
		}
	case link.UpgradeFailed:
		h.armDrain(m.Drain, time.Duration(m.DrainMS)*time.Millisecond)
		switch {
		case h.upgrade == nil:
		case w == h.current:
			h.finishUpgrade(false, m.Reason)
		default:
			// The new worker's own account (its app never got ready)
			// says more than tableflip's "child exited".
			h.upgrade.detail = m.Reason
		}
	case link.StatusReply:
		h.answerStatus(m.Stats)
	}
}

// sendAdopt gives a new worker its generation number and the pidfds of
// every handler still alive from earlier generations. The worker accepts
// nothing before this, so --processes holds across the handover.
func (h *Holder) sendAdopt(w *workerProc) {
	h.gen++
	w.gen = h.gen
	w.adoptSent = true
	var batch []*orphan
	flush := func(more bool) {
		m := link.Msg{Type: link.Adopt, Generation: w.gen, More: more}
		var fds []int
		for _, o := range batch {
			m.PIDs = append(m.PIDs, o.pid)
			m.Starts = append(m.Starts, o.start.UnixNano())
			m.Gens = append(m.Gens, o.gen)
			fds = append(fds, o.pidfd)
		}
		if err := link.Send(w.link, m, fds...); err != nil {
			h.log.Error("cannot hand over to the new worker", "pid", w.pid, "error", err)
		}
		batch = batch[:0]
	}
	// SCM_RIGHTS carries at most 253 descriptors: large handovers go in
	// several messages, and the worker starts accepting after the last.
	for _, o := range h.orphans {
		if len(batch) == 200 {
			flush(true)
		}
		batch = append(batch, o)
	}
	flush(false)
}

// spawnWorker starts a worker, as a fresh process of the binary on disk,
// or schedules another try.
func (h *Holder) spawnWorker() {
	w, err := h.startWorker()
	if err != nil {
		h.log.Error("cannot start worker", "binary", h.exe, "error", err)
		h.scheduleRestart()
		return
	}
	h.workers[w.pid] = w
	h.current = w
	h.after(h.cfg.UpgradeTimeout, event{kind: evServeDeadline, pid: w.pid})
	h.log.Info("worker started", "pid", w.pid, "inherited_handlers", len(h.orphans))
}

// startWorker re-executes sockhold's binary, as it is on disk now, as a
// worker with the listeners at known descriptors.
func (h *Holder) startWorker() (*workerProc, error) {
	files := []uintptr{0, 1, 2}
	fds := config.WorkerFDs{Rendezvous: h.rendezvousName}
	for _, s := range h.sockets {
		fds.Listeners = append(fds.Listeners, config.ListenerFD{FD: len(files), Family: s.Family, Addr: s.Addr, Name: s.Spec.Name})
		files = append(files, uintptr(s.FD))
	}
	env := handoff.FilterEnv(os.Environ(), config.InternalEnv, config.InternalEnvPrefixes)
	env = append(env,
		config.RoleEnv+"=worker",
		config.ConfigEnv+"="+h.cfg.Encode(),
		config.FDsEnv+"="+fds.Encode(),
	)
	pid, err := syscall.ForkExec(h.exe, []string{h.exe, "worker"}, &syscall.ProcAttr{
		Env:   env,
		Files: files,
		// A process group of its own: a Ctrl-C at the terminal reaches
		// the holder, which stops the worker in order.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return nil, err
	}
	return &workerProc{pid: pid, started: time.Now(), link: -1}, nil
}

func (h *Holder) scheduleRestart() {
	if h.restartPending || h.stopping {
		return
	}
	d := h.restartBackoff.Fail()
	h.restartPending = true
	h.after(d, event{kind: evRestart})
	h.log.Info("worker restart scheduled", "in", d.String())
}

// childExited handles one reaped child: a worker, or a handler a worker left.
func (h *Holder) childExited(r reaped) {
	if w := h.workers[r.pid]; w != nil {
		delete(h.workers, r.pid)
		w.closeLink()
		if w == h.current {
			h.current = nil
			h.currentExited(w, r)
		} else {
			// A generation already replaced (serve mode hands over
			// before the old worker has gone): its app is an orphan now.
			h.adoptOrphans(w.gen)
			h.log.Info("worker exited", append([]any{"pid", r.pid}, logs.WaitAttrs(r.status)...)...)
		}
		return
	}
	attrs := append([]any{"pid", r.pid}, logs.WaitAttrs(r.status)...)
	if h.stopping && h.cfg.Mode == config.ModeServe {
		h.noteAppExit(r.status)
	}
	if o, ok := h.orphans[r.pid]; ok {
		delete(h.orphans, r.pid)
		unix.Close(o.pidfd)
		attrs = append(attrs, "gen", o.gen)
		if !o.start.IsZero() {
			attrs = append(attrs, "duration", time.Since(o.start).Round(time.Millisecond).String())
		}
	}
	h.log.Info("EXIT", append(attrs, "reaped_by", "holder")...)
}

// currentExited decides what follows the serving worker's exit: its
// successor from an upgrade takes over, or a fresh worker is started.
func (h *Holder) currentExited(old *workerProc, r reaped) {
	h.adoptOrphans(old.gen)
	if h.stopping {
		h.log.Info("worker stopped", "pid", r.pid, "handlers_left", len(h.orphans))
		// A worker an interrupted upgrade left behind stops too.
		for pid := range h.workers {
			syscall.Kill(pid, syscall.SIGTERM)
			h.after(h.cfg.KillGrace, event{kind: evKillWorker, pid: pid})
		}
		return
	}
	if next := h.successor(); next != nil {
		if !old.upgraded {
			h.log.Warn("worker exited during an upgrade; the new worker takes over",
				append([]any{"pid", r.pid}, logs.WaitAttrs(r.status)...)...)
		}
		h.current = next
		if next.link >= 0 && !next.adoptSent {
			h.sendAdopt(next)
		}
		h.after(h.cfg.UpgradeTimeout, event{kind: evServeDeadline, pid: next.pid})
		return
	}
	lived := time.Since(old.started)
	if lived > 10*time.Second {
		h.restartBackoff.Reset()
	}
	h.log.Warn("worker exited unexpectedly; starting another",
		append([]any{"pid", r.pid, "lived", lived.Round(time.Millisecond).String(), "handlers_left", len(h.orphans)}, logs.WaitAttrs(r.status)...)...)
	if h.upgrade != nil {
		h.finishUpgrade(false, "the worker exited during the upgrade")
	}
	h.scheduleRestart()
}

// successor is the worker an upgrade started, now the holder's child.
// If there are several (should not happen), the newest wins.
func (h *Holder) successor() *workerProc {
	var best *workerProc
	for _, w := range h.workers {
		if w.fromUpgrade && (best == nil || w.pid > best.pid) {
			best = w
		}
	}
	for _, w := range h.workers {
		if w != best && w.fromUpgrade {
			syscall.Kill(w.pid, syscall.SIGKILL)
		}
	}
	return best
}

// adoptOrphans records every child of the holder that is not a worker: the
// handlers a worker left behind. A worker started by an upgrade that has
// not dialled in yet is recognised by its environment. A pidfd taken while
// the child is still unreaped cannot refer to a reused PID.
func (h *Holder) adoptOrphans(gen int) {
	for _, pid := range childPIDs() {
		if _, known := h.orphans[pid]; known || h.workers[pid] != nil {
			continue
		}
		if isWorkerProcess(pid) {
			h.workers[pid] = &workerProc{pid: pid, started: time.Now(), link: -1, fromUpgrade: true}
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // already gone: the next reap collects it
		}
		start, _ := processStart(pid)
		h.orphans[pid] = &orphan{pid: pid, pidfd: fd, gen: gen, start: start}
	}
}
