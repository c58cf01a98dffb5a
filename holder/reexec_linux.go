package holder

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/holder/core"
	"github.com/sockhold/sockhold/holder/earlysig"
	"github.com/sockhold/sockhold/holder/logs"
)

// The holder upgrades in place: once the new binary has passed its check,
// the holder writes down everything it holds and execs that binary with the
// same PID (systemd, pid files and parent shells see nothing change). The
// child-subreaper flag, the children and every descriptor without
// close-on-exec survive execve; the state says which descriptor is what.

// save writes down the holder's state; fds are every descriptor it names.
func (h *Holder) save(nonce string) ([]byte, []int) {
	now := time.Now()
	st := savedState{
		Prev:   -1,
		Format: StateFormat, Nonce: nonce, Version: h.version, Config: json.RawMessage(h.cfg.Encode()),
		Exe: h.exe, Started: h.started, NextID: h.nextID,
		Rendezvous: h.rendezvous, RendName: h.rendezvousName, LastGood: h.lastGood,
		Notify: h.notify.addr, Refusals: h.refusals.count, Core: h.core.State,
	}
	for _, s := range h.sockets {
		st.Sockets = append(st.Sockets, s.Save())
	}
	st.Control = savedControl{Socket: h.control.sock.Save(), Path: h.control.path}
	for _, c := range h.control.conns {
		st.Control.Conns = append(st.Control.Conns, savedConn{ctlConn: *c, DeadlineIn: c.deadline.Sub(now)})
	}
	sort.Slice(st.Control.Conns, func(i, j int) bool { return st.Control.Conns[i].ID < st.Control.Conns[j].ID })
	for _, w := range h.workers {
		sw := savedWorker{ID: w.id, PID: w.pid, Pidfd: w.pidfd, Link: -1, Reports: -1, LinkEOF: w.linkEOF}
		if w.conn != nil {
			sw.Link = w.conn.FD
			sw.Queued, sw.QueuedFDs = w.conn.Waiting()
		}
		if w.reports != nil {
			sw.Reports = w.reports.FD
		}
		st.Workers = append(st.Workers, sw)
	}
	sort.Slice(st.Workers, func(i, j int) bool { return st.Workers[i].ID < st.Workers[j].ID })
	for _, p := range h.procs {
		st.Procs = append(st.Procs, savedProc{ID: p.id, PID: p.pid, Pidfd: p.pidfd})
	}
	sort.Slice(st.Procs, func(i, j int) bool { return st.Procs[i].ID < st.Procs[j].ID })
	for _, r := range h.relays {
		st.Relays = append(st.Relays, r)
	}
	for k, t := range h.timers {
		st.Timers = append(st.Timers, savedTimer{Key: k, In: t.Sub(now)})
	}
	for _, w := range h.workers {
		if !w.linkDownAt.IsZero() {
			st.LinkDowns = append(st.LinkDowns, savedTimer{Key: core.Timer{ID: w.id}, In: w.linkDownAt.Sub(now)})
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return b, st.fds()
}

// reexec execs the checked binary in this process. It returns only if
// execve failed, and then the holder goes on exactly as before.
func (h *Holder) reexec() {
	c := h.check
	if c == nil {
		h.feed(coreExecFailed("no checked binary"))
		return
	}
	// Only for the upgrade whose check this was, still waiting for it.
	if u := h.core.Upgrade; u == nil || u.Phase != core.PhaseExec || u.Seq != c.seq {
		h.releaseCheck()
		return
	}
	err := h.execWithState(c.bin, false)
	h.releaseCheck()
	h.feed(coreExecFailed(err.Error()))
}

// shedStartup re-executes a holder that has just started (its own binary,
// nothing to check) into the state it would hand to a new binary: the
// process that then runs for months carries none of the command-line
// parser's and start-up's memory (a resumed holder's resident set is about
// a fifth smaller), and the resume path runs at every start. If execve
// fails, this process simply goes on.
func (h *Holder) shedStartup() {
	bin, err := unix.FcntlInt(uintptr(h.lastGood), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return
	}
	err = h.execWithState(bin, true)
	unix.Close(bin)
	h.log.Debug("holder kept its start-up process", "error", err)
}

// execWithState writes the state to a memfd and execs bin with it; fresh
// says the new process starts the holder rather than resuming one. It
// returns only on failure, with everything as it was.
func (h *Holder) execWithState(bin int, fresh bool) error {
	// The binary running now, to go back to should the new one fail to
	// resume (not for a fresh start: that is the same binary).
	prev := -1
	if !fresh {
		if fd, err := unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			prev = fd
			defer func() { unix.Close(prev) }() // reached only if exec fails
		}
	}
	// Every line so far reaches stderr first, while signals still reach
	// the queue: nothing is logged from here to the exec.
	logs.Flush(execFlush)
	release := h.holdSignals()
	var pending []int
	var mem int
	var keep []int
	for try := 0; ; try++ {
		pending = append(pending, h.takeSignals()...)
		b, fds := h.save("")
		var st savedState
		json.Unmarshal(b, &st)
		st.Signals, st.Fresh, st.Prev = pending, fresh, prev
		b, _ = json.Marshal(st)
		var err error
		if mem, err = memfdWith(b); err != nil {
			h.requeue(pending)
			release()
			return err
		}
		// Signals taken while the state was written go in it too.
		if more := h.takeSignals(); len(more) > 0 && try < 3 {
			pending = append(pending, more...)
			unix.Close(mem)
			continue
		} else {
			pending = append(pending, more...)
		}
		keep = append(fds, mem, bin)
		if prev >= 0 {
			keep = append(keep, prev)
		}
		break
	}
	for _, fd := range keep {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
	}
	env := append(os.Environ(), fmt.Sprintf("%s=%d,%d", earlysig.Env, mem, bin))
	err := syscall.Exec(fmt.Sprintf("/proc/self/fd/%d", bin), os.Args, env)
	// Still here: execve failed and changed nothing.
	for _, fd := range keep {
		unix.CloseOnExec(fd)
	}
	unix.Close(mem)
	h.requeue(pending)
	release()
	return err
}

// holdSignals readies the holder for exec. After execve a caught signal's
// disposition is the default, which ends the process for most, so SIGHUP,
// SIGINT and SIGTERM are set to be ignored (the new Go runtime respects an
// ignored SIGHUP and SIGINT until it asks for them; SIGTERM it asks for in
// the earlysig package's init) and the holder's signals are blocked on this
// thread. What has arrived is taken (takeSignals) and handed to the new
// holder in its state. What arrives on another thread in the last
// microseconds before execve, or before the new holder asks for it, is
// lost; a SIGTERM in the new holder's first ~1.5 ms ends it (README, "What
// survives what").
func (h *Holder) holdSignals() (release func()) {
	old := holdSignalsForExec(h.cfg.ServeForward())
	return func() {
		unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
		signal.Notify(h.sigs.c, holderSignals(h.cfg.ServeForward())...)
		runtime.UnlockOSThread()
	}
}

// execFlush is how long the log may take to reach stderr before an exec;
// what a stalled reader has not taken by then is lost with the process
// image.
const execFlush = 200 * time.Millisecond

// holdSignalsForExec ignores and blocks, on this goroutine's locked
// thread, what would end a freshly exec'd process (see holdSignals), and
// returns the mask to go back to.
func holdSignalsForExec(forward []int) (old unix.Sigset_t) {
	runtime.LockOSThread()
	set := blockedAroundExec(forward)
	unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old)
	// Let signals the runtime caught just before reach the queue: once
	// ignored, one caught and not yet passed on would be dropped.
	time.Sleep(time.Millisecond)
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	return old
}

// takeSignals takes the signals queued and those pending for this thread.
func (h *Holder) takeSignals() []int {
	var out []int
	for _, s := range h.sigs.take() {
		out = append(out, int(s))
	}
	return append(out, pendingOnThread(h.cfg.ServeForward())...)
}

// pendingOnThread takes the signals pending for this (blocking) thread.
func pendingOnThread(forward []int) []int {
	var out []int
	set := blockedAroundExec(forward)
	for i := 0; i < 64; i++ {
		s := takePending(&set)
		if s == 0 {
			break
		}
		out = append(out, s)
	}
	return out
}

// requeue puts signals taken for an exec that failed back in the queue.
func (h *Holder) requeue(sigs []int) {
	for _, s := range sigs {
		h.sigs.push(syscall.Signal(s))
	}
}

// blockedAroundExec: the signals the holder takes, and those whose default
// action ends a process and that the Go runtime leaves blocked until asked
// for them.
func blockedAroundExec(forward []int) unix.Sigset_t {
	var set unix.Sigset_t
	sigs := []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD, syscall.SIGPIPE,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGIO, syscall.SIGVTALRM, syscall.SIGXCPU,
		syscall.SIGXFSZ, syscall.SIGPWR, syscall.SIGSTKFLT, syscall.SIGWINCH}
	for _, s := range forward {
		sigs = append(sigs, syscall.Signal(s))
	}
	for _, s := range sigs {
		set.Val[(s-1)/64] |= 1 << (uint(s-1) % 64)
	}
	return set
}

// takePending removes one pending signal of set without waiting (0: none).
func takePending(set *unix.Sigset_t) int {
	ts := unix.Timespec{}
	r, _, e := unix.Syscall6(unix.SYS_RT_SIGTIMEDWAIT, uintptr(unsafe.Pointer(set)), 0, uintptr(unsafe.Pointer(&ts)), 8, 0, 0)
	if e != 0 {
		return 0
	}
	return int(r)
}
