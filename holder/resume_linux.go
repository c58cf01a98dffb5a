package holder

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/core"
	"github.com/sockhold/sockhold/holder/earlysig"
	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/holder/logs"
)

// Resume is a holder that has just re-executed itself: it takes back every
// descriptor the state names and goes on where the old binary left off. If
// the new binary cannot (an error, a panic in its restore), it execs the
// binary it replaced, with the same state, and that one goes on and
// reports the upgrade failed: the sockets never close for a bad build.
func Resume(version string) int {
	defer logs.Flush(time.Second)
	resumeFDs, earlySignals, _ := earlysig.Resume()
	var stateFD, binFD int
	fallback := strings.HasSuffix(resumeFDs, ",fallback")
	if _, err := fmt.Sscanf(resumeFDs, "%d,%d", &stateFD, &binFD); err != nil {
		return fail(ExitUsage, fmt.Errorf("%s=%q: want the state and binary descriptors", earlysig.Env, resumeFDs))
	}
	b, err := readAllAt(stateFD)
	var st *savedState
	if err == nil {
		st, err = decodeState(b)
	}
	var cfg *config.Config
	if err == nil {
		cfg, err = decodeConfig(st)
	}
	if err != nil {
		// The check mode read this very state: this cannot happen short
		// of memory corruption. The sockets close with this process.
		return fail(ExitFailure, fmt.Errorf("resume the holder: %v", err))
	}
	handoff.CloseOnExecFrom(3)
	handoff.SetProcessName(st.Exe)
	h, err := resumeHolder(st, cfg, version, earlySignals, fallback)
	if err != nil {
		log := logs.New(os.Stderr, cfg.LogFormat, cfg.LogLevel).With("role", "holder")
		log.Error("this binary cannot resume the holder", "version", version, "error", err)
		if st.Prev >= 0 && !fallback {
			backToPrevious(st, b, stateFD, earlySignals, cfg.ServeForward(), log)
		}
		return ExitFailure
	}
	unix.Close(stateFD)
	unix.Close(binFD)
	if st.Prev >= 0 && st.Prev != binFD { // after a fall-back, they are one
		unix.Close(st.Prev)
	}
	switch {
	case st.Fresh:
		return h.run(core.Started{}, st.Signals)
	case fallback:
		h.log.Error("the new binary could not resume the holder; this one, which it replaced, goes on", "version", version)
		return h.run(core.HolderExecFailed{Err: "the new binary could not resume the holder (its error is logged)"}, st.Signals)
	}
	h.log.Info("holder resumed", "pid", os.Getpid(), "binary", h.exe, "version", version, "from_version", st.Version,
		"handles", len(h.procs), "workers", len(h.workers))
	return h.run(core.Resumed{}, st.Signals)
}

// resumeHolder builds the holder from the state; a panic is an error too.
func resumeHolder(st *savedState, cfg *config.Config, version string, sigs chan os.Signal, fallback bool) (h *Holder, err error) {
	defer func() {
		if r := recover(); r != nil {
			h, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	if v, sig, _ := strings.Cut(os.Getenv(resumeFailEnv), ","); v != "" && v == version && !fallback {
		if n := unix.SignalNum(sig); n != 0 {
			// As if it arrived while this binary failed: it must reach
			// the binary that goes on. (Time for the runtime to pass it
			// to the channel it waits in.)
			unix.Kill(os.Getpid(), n)
			time.Sleep(20 * time.Millisecond)
		}
		return nil, fmt.Errorf("%s=%s", resumeFailEnv, v)
	}
	log := logs.New(os.Stderr, cfg.LogFormat, cfg.LogLevel).With("role", "holder")
	if h, err = newHolder(cfg, log, st.Exe, version, st.Core); err != nil {
		return nil, err
	}
	h.restore(st)
	h.watchAll() // a refusal is retried, never a reason to drop the sockets
	h.watchRestored()
	// Last: until now the signals wait in sigs, for backToPrevious to take
	// should this fail.
	h.sigs = newSignalQueue(sigs, holderSignals(cfg.ServeForward()), h.wake)
	return h, nil
}

// resumeFailEnv is a test-only setting, "VERSION[,SIGNAL]": a holder of
// this version fails to resume (having sent itself SIGNAL), so the
// integration tests can see the fall-back to the binary it replaced and
// the signal carried to it. It has no use in production.
const resumeFailEnv = "SOCKHOLD_TEST_RESUME_FAIL"

// backToPrevious execs the binary this one replaced with the same state
// (raw, as it came) and the signals that have arrived since (in sigs, not
// yet taken by anything: resumeHolder starts the signal queue last), with
// signals held across the exec as for an upgrade's.
func backToPrevious(st *savedState, raw []byte, stateFD int, sigs chan os.Signal, forward []int, log *slog.Logger) {
	logs.Flush(execFlush)
	old := holdSignalsForExec(forward)
	taken := append([]int(nil), st.Signals...)
	for more := true; more; {
		select {
		case s := <-sigs:
			if s != syscall.SIGPIPE {
				taken = append(taken, int(s.(syscall.Signal)))
			}
		default:
			more = false
		}
	}
	taken = append(taken, pendingOnThread(forward)...)
	mem, err := stateWithSignals(raw, taken)
	if err == nil {
		keep := append(st.fds(), mem, st.Prev)
		for _, fd := range keep {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
		}
		unix.Close(stateFD)
		env := append(os.Environ(), fmt.Sprintf("%s=%d,%d,fallback", earlysig.Env, mem, st.Prev))
		err = syscall.Exec(fmt.Sprintf("/proc/self/fd/%d", st.Prev), os.Args, env)
	}
	unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	log.Error("cannot go back to the previous binary", "error", err)
}

// stateWithSignals is raw with its pending signals replaced, every other
// field kept as the writer wrote it, in a new memfd.
func stateWithSignals(raw []byte, sigs []int) (int, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return -1, err
	}
	b, err := json.Marshal(sigs)
	if err != nil {
		return -1, err
	}
	doc["signals"] = b
	if raw, err = json.Marshal(doc); err != nil {
		return -1, err
	}
	return memfdWith(raw)
}

func readAllAt(fd int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Pread(fd, buf, int64(len(out)))
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

func decodeConfig(st *savedState) (*config.Config, error) {
	cfg, err := config.Decode(string(st.Config))
	if err == nil {
		for i := range cfg.Listen {
			cfg.Listen[i].RenameFromURI()
		}
	}
	return cfg, err
}

// restore takes back what st names.
func (h *Holder) restore(st *savedState) {
	now := time.Now()
	h.started, h.nextID = st.Started, st.NextID
	h.rendezvous, h.rendezvousName = st.Rendezvous, st.RendName
	// Crashed workers restart from the binary that last served, which may
	// be the previous one if the worker upgrade fails.
	unix.Close(h.lastGood)
	h.lastGood = st.LastGood
	h.notify = newNotifier(st.Notify, h.log)
	h.refusals.count = st.Refusals
	for _, s := range st.Sockets {
		h.sockets = append(h.sockets, listen.Restore(s))
	}
	h.control = &controlServer{path: st.Control.Path, sock: listen.Restore(st.Control.Socket), conns: map[int]*ctlConn{}}
	for _, sc := range st.Control.Conns {
		c := sc.ctlConn
		c.deadline = now.Add(sc.DeadlineIn)
		h.control.conns[c.ID] = &c
	}
	for _, sw := range st.Workers {
		w := &workerHandle{id: sw.ID, pid: sw.PID, pidfd: sw.Pidfd, linkEOF: sw.LinkEOF}
		if sw.Link >= 0 {
			if conn, err := link.NewConn(sw.Link, h.recvBuf); err == nil {
				if !sw.LinkEOF {
					conn.Requeue(sw.Queued, sw.QueuedFDs)
				} else {
					for _, fds := range sw.QueuedFDs {
						closeFDs(fds)
					}
				}
				w.conn = conn
			}
		}
		if sw.Reports >= 0 {
			if c, err := link.NewConn(sw.Reports, h.recvBuf); err == nil {
				w.reports = c
			}
		}
		h.workers[w.id] = w
	}
	for _, sp := range st.Procs {
		p := &procHandle{id: sp.ID, pid: sp.PID, pidfd: sp.Pidfd}
		h.procs[p.id] = p
		h.byPID[p.pid] = append(h.byPID[p.pid], p.id)
	}
	for _, r := range st.Relays {
		h.addRelay(r)
	}
	for _, t := range st.Timers {
		h.timers[t.Key] = now.Add(t.In)
	}
	for _, t := range st.LinkDowns {
		if w := h.workers[t.Key.ID]; w != nil {
			w.linkDownAt = now.Add(t.In)
		}
	}
}

// watchRestored puts the restored descriptors back in the loop, each
// watched for what it was waiting for.
func (h *Holder) watchRestored() {
	for _, w := range h.workers {
		h.watch(w.pidfd, fdWorkerExit, w.id)
		if w.reports != nil {
			h.watch(w.reports.FD, fdReports, w.id)
		}
		if w.conn != nil && !w.linkEOF {
			h.watch(w.conn.FD, fdLink, w.id)
			if w.conn.Pending() {
				h.setWatch(w.conn.FD, true, true)
			}
		}
	}
	for _, c := range h.control.conns {
		h.watch(c.FD, fdControlConn, c.ID)
		switch c.Phase {
		case ctlWaiting:
			h.setWatch(c.FD, false, false)
		case ctlWriting:
			h.setWatch(c.FD, false, true)
		}
	}
}
