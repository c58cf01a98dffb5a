package worker

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/holder/link"
)

// report is what this worker tells the holder at the end of each loop
// turn: every process it started (with its pidfd, so the holder knows it by
// handle from then on, whatever happens to this worker), every one it
// reaped, and what it counted. Reports travel on a socket of their own
// (sent to the holder with the hello): the holder reads them in batches, a
// few milliseconds late, and always before any other message of this
// worker's, so a report costs the spawn path one send and the holder no
// wake-up per connection. Once sent, a report is the kernel's: it reaches
// the holder even if this worker dies the next instant.
type report struct {
	started []link.Proc
	fds     []int
	exited  []int
	apps    []link.AppExit
	counts  link.Counts
}

func (r *report) empty() bool {
	return len(r.started) == 0 && len(r.exited) == 0 && r.counts.Zero()
}

// startedProc records a process this worker started; its pidfd stays open
// at least until the report is sent (reports go out before the loop waits,
// and a process just started cannot be reported gone before the next wait).
func (w *Worker) startedProc(pid, pidfd int, start time.Time, peer string, app bool, slot int) {
	r := &w.report
	r.started = append(r.started, link.Proc{PID: pid, Start: start.UnixNano(), Peer: peer, App: app, Slot: slot})
	r.fds = append(r.fds, pidfd)
	if len(r.fds) == link.MaxFDs {
		w.flushReport()
	}
}

// reapedProc records a child this worker reaped.
func (w *Worker) reapedProc(pid int) { w.report.exited = append(w.report.exited, pid) }

// reapedApp reports an app copy reaped, with how it ended.
func (w *Worker) reapedApp(pid int, ws syscall.WaitStatus) {
	w.reapedProc(pid)
	w.report.apps = append(w.report.apps, link.AppExit{PID: pid, Status: int(ws)})
}

// flushReport sends what the turn gathered.
func (w *Worker) flushReport() {
	r := &w.report
	if r.empty() {
		return
	}
	m := link.Msg{Type: link.Procs, Started: r.started, Exited: r.exited, AppExits: r.apps}
	if !r.counts.Zero() {
		c := r.counts
		m.Counts = &c
	}
	w.send(m, r.fds...)
	r.started, r.fds, r.exited, r.apps, r.counts = r.started[:0], r.fds[:0], r.exited[:0], r.apps[:0], link.Counts{}
}

// send sends to the holder without ever blocking the loop; what the
// socket will not take now is queued and sent when it has room. A holder
// that lets the queue fill is wedged or gone: the worker stops.
// Every other message goes after the report so far, so that the holder
// knows every process a message may name.
func (w *Worker) send(m link.Msg, fds ...int) {
	if w.holder == nil {
		return
	}
	c, out, in := w.holder, &w.holderOut, true
	if m.Type == link.Procs {
		c, out, in = w.reports, &w.reportsOut, false
	} else {
		w.flushReport()
		if w.reports.Pending() || len(w.held) > 0 {
			// Reports wait for room: this message must not overtake them
			// on the other socket. It goes once they have gone.
			w.hold(m, fds)
			return
		}
	}
	if err := c.Send(m, fds...); err != nil {
		w.log.Error("cannot reach the holder; worker stopping", "error", err)
		w.holderGone()
		return
	}
	if c.Pending() && !*out {
		*out = true
		w.poll.Watch(c.FD, in, true)
	}
}

// flushLink sends what waits on a link to the holder (the main one, or the
// reports'), once it has room; once the reports have all gone, so do the
// messages held behind them.
func (w *Worker) flushLink(c *link.Conn, out *bool, in bool) {
	if c == nil {
		return
	}
	if err := c.Flush(); err != nil {
		w.log.Error("cannot reach the holder; worker stopping", "error", err)
		w.holderGone()
		return
	}
	if !c.Pending() && *out {
		*out = false
		w.poll.Watch(c.FD, in, false)
	}
	if c == w.reports && !c.Pending() {
		w.releaseHeld()
	}
}

// heldMsg is a main-link message waiting for the reports before it.
type heldMsg struct {
	m   link.Msg
	fds []int // duplicates, closed once sent
}

func (w *Worker) hold(m link.Msg, fds []int) {
	h := heldMsg{m: m}
	for _, fd := range fds {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			closeFDs(h.fds)
			w.log.Error("cannot keep a message for the holder; worker stopping", "error", err)
			w.holderGone()
			return
		}
		h.fds = append(h.fds, d)
	}
	w.held = append(w.held, h)
}

func (w *Worker) releaseHeld() {
	held := w.held
	w.held = nil
	for i, h := range held {
		if w.holder != nil {
			w.send(h.m, h.fds...)
		}
		closeFDs(h.fds)
		if len(w.held) > 0 { // the reports filled up again: keep the order
			w.held = append(w.held, held[i+1:]...)
			return
		}
	}
}

// openReports makes the reports' socket; the holder gets its other end
// with the hello.
func (w *Worker) openReports() (int, error) {
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	// Room for bursts while the holder reads in batches.
	unix.SetsockoptInt(p[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	if w.reports, err = link.NewConn(p[0], nil); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return -1, err
	}
	if err := w.watch(p[0], kindReports); err != nil {
		unix.Close(p[1])
		return -1, err
	}
	w.poll.Watch(p[0], false, false) // only room to send (and a hang-up) matter
	return p[1], nil
}

// backlogged: the holder has not taken what this worker sent; it takes no
// new work until it has (every handler must reach the holder's ledger).
func (w *Worker) backlogged() bool {
	return w.holder != nil && (w.holder.Pending() || w.reports.Pending() || len(w.held) > 0)
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
