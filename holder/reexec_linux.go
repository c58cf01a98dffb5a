package holder

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
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

// ResumeArg is argv[1] of a holder that has just re-executed itself.
const ResumeArg = "holder-resume"

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
	pending, release := h.holdSignals()
	b, fds := h.save("")
	var st savedState
	json.Unmarshal(b, &st)
	st.Signals = pending
	b, _ = json.Marshal(st)
	mem, err := memfdWith(b)
	if err != nil {
		release()
		h.releaseCheck()
		h.feed(coreExecFailed(err.Error()))
		return
	}
	keep := append(fds, mem, c.bin)
	for _, fd := range keep {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
	}
	os.Stderr.Sync()
	argv := []string{h.exe, ResumeArg, strconv.Itoa(mem), strconv.Itoa(c.bin)}
	err = syscall.Exec(fmt.Sprintf("/proc/self/fd/%d", c.bin), argv, os.Environ())
	// Still here: execve failed and changed nothing.
	for _, fd := range keep {
		unix.CloseOnExec(fd)
	}
	unix.Close(mem)
	release()
	h.releaseCheck()
	h.feed(coreExecFailed(err.Error()))
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
