package holder

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/core"
	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/holder/logs"
)

// Resume is a holder that has just re-executed itself: it takes back every
// descriptor the state names and goes on where the old binary left off.
func Resume(version string) int {
	var stateFD, binFD int
	if _, err := fmt.Sscanf(resumeFDs, "%d,%d", &stateFD, &binFD); err != nil {
		return fail(ExitUsage, fmt.Errorf("%s=%q: want the state and binary descriptors", ResumeEnv, resumeFDs))
	}
	unix.Close(binFD)
	b, err := readAllAt(stateFD)
	unix.Close(stateFD)
	if err == nil {
		handoff.CloseOnExecFrom(3)
	}
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
	handoff.SetProcessName(st.Exe)
	log := logs.New(os.Stderr, cfg.LogFormat, cfg.LogLevel).With("role", "holder")
	h, err := newHolder(cfg, log, st.Exe, version, st.Core)
	if err != nil {
		return fail(ExitFailure, err)
	}
	h.restore(st)
	h.sigs = newSignalQueue(earlySignals, holderSignals(cfg.ServeForward()), h.wake)
	if err := h.watchAll(); err != nil {
		return fail(ExitFailure, err)
	}
	h.watchRestored()
	if st.Fresh {
		return h.run(core.Started{}, st.Signals)
	}
	log.Info("holder resumed", "pid", os.Getpid(), "binary", h.exe, "version", version, "from_version", st.Version,
		"handles", len(h.procs), "workers", len(h.workers))
	return h.run(core.Resumed{}, st.Signals)
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
	return config.Decode(string(st.Config))
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
				conn.Requeue(sw.Queued, sw.QueuedFDs)
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
				h.poll.Watch(w.conn.FD, true, true)
			}
		}
	}
	for _, c := range h.control.conns {
		h.watch(c.FD, fdControlConn, c.ID)
		switch c.Phase {
		case ctlWaiting:
			h.poll.Watch(c.FD, false, false)
		case ctlWriting:
			h.poll.Watch(c.FD, false, true)
		}
	}
}
