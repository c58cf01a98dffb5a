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
	pending, release := h.holdSignals()
	b, fds := h.save("")
	var st savedState
	json.Unmarshal(b, &st)
	st.Signals, st.Fresh = pending, fresh
	b, _ = json.Marshal(st)
	mem, err := memfdWith(b)
	if err != nil {
		release()
		return err
	}
	keep := append(fds, mem, bin)
	for _, fd := range keep {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
	}
	os.Stderr.Sync()
	env := append(os.Environ(), fmt.Sprintf("%s=%d,%d", ResumeEnv, mem, bin))
	err = syscall.Exec(fmt.Sprintf("/proc/self/fd/%d", bin), os.Args, env)
	// Still here: execve failed and changed nothing.
	for _, fd := range keep {
		unix.CloseOnExec(fd)
	}
	unix.Close(mem)
	release()
	return err
}

// holdSignals keeps the signals that arrive around exec from ending the
// new process or being lost. After execve a caught signal's disposition is
// the default, which ends the process for most: so SIGHUP, SIGINT and
// SIGTERM are set to be ignored (the new Go runtime respects an ignored
// SIGHUP and SIGINT until it asks for them), and every signal the holder
// takes is blocked on every thread, then what is pending is taken out and
// handed to the new holder in its state. Blocked signals stay pending
// across execve; the new holder asks for its signals at once.
func (h *Holder) holdSignals() (pending []int, release func()) {
	runtime.LockOSThread()
	set := blockedAroundExec(h.cfg.ServeForward())
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	var old unix.Sigset_t
	allThreads := true
	// Every thread: the Go runtime lets any of them take a signal.
	// (Not where cgo runs, such as under the race detector: this thread
	// only, and a signal other threads take in the next instants is lost.)
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_BLOCK, uintptr(unsafe.Pointer(&set)), 0, 8, 0, 0); e != 0 {
		allThreads = false
	}
	unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old)
	// Let signals the runtime caught before this reach the queue.
	time.Sleep(time.Millisecond)
	for _, s := range h.sigs.take() {
		pending = append(pending, int(s))
	}
	for {
		s := takePending(&set)
		if s == 0 {
			break
		}
		pending = append(pending, s)
	}
	release = func() {
		if allThreads {
			syscall.AllThreadsSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_UNBLOCK, uintptr(unsafe.Pointer(&set)), 0, 8, 0, 0)
		}
		unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
		signal.Notify(h.sigs.c, holderSignals(h.cfg.ServeForward())...)
		runtime.UnlockOSThread()
		for _, s := range pending {
			h.sigs.push(syscall.Signal(s))
		}
	}
	return pending, release
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
