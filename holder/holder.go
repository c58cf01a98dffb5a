// Package holder is sockhold's long-lived parent process, the shell around
// the lifecycle core (holder/core). It opens the listening sockets once and
// keeps them open until sockhold stops, becomes child subreaper, and runs
// the worker (a re-execution of its own binary) that accepts and spawns.
//
// Everything the holder watches goes through one epoll loop: the
// rendezvous workers dial, their links, their pidfds, the control socket
// and its clients, captured app output, signals and timers. Each kernel
// notification becomes a core event; each core action becomes a system call
// on a handle. Because nothing lives in a goroutine's stack, the whole state
// can be written down and handed to a new holder binary that the holder
// execs in place (same PID) during an upgrade.
package holder

import (
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/core"
	"github.com/sockhold/sockhold/holder/evloop"
	"github.com/sockhold/sockhold/holder/link"
)

// Holder is the shell's state. All of it is owned by the goroutine running
// Run; the signal goroutine only queues signals and wakes the loop.
type Holder struct {
	cfg     *config.Config
	log     *slog.Logger
	exe     string // the path sockhold was started as; upgrades read it
	version string
	started time.Time // wall clock, for status
	core    *core.Core

	sockets           []*listen.Socket
	control           *controlServer
	rendezvous        int
	rendezvousName    string
	rendezvousOff     time.Time // accepting paused until (accept failed)
	rendezvousBackoff time.Duration
	reportsDue        time.Time // reports wait to be read in a batch until
	notify            *notifier

	poll  *evloop.Poller
	timer *evloop.Timer
	wake  *evloop.Waker
	sigs  *signalQueue

	roles map[int]fdRole // every watched descriptor and what it is
	// unwatched are descriptors in roles the kernel would not watch yet;
	// they are offered again at watchRetryAt.
	unwatched    map[int]bool
	watchRetryAt time.Time
	recvBuf      *link.RecvBuffer
	workers      map[int]*workerHandle
	pending      map[int]link.Peer // rendezvous callers awaiting the core's word
	procs        map[int]*procHandle
	byPID        map[int][]int // proc IDs by PID, for reaping
	relays       map[int]*relay
	timers       map[core.Timer]time.Time
	timerAt      time.Time // what the timerfd is set to
	nextID       int
	selfExe      fileID // the binary this holder runs
	lastGood     int    // a descriptor of the binary crashed workers restart from
	check        *checkRun
	refusals     refusalLog

	queue      []core.Event // events waiting for the core
	reportEv   core.LinkMsg // reused for reports (see readReports)
	idScratch  []int
	feeding    bool
	execWanted bool // re-execute the checked binary at the end of this turn
	tidyMemory bool // a worker ended: give back what its handover used
	done       bool
	exitStatus int
}

// fdRole says what a watched descriptor is, and what it is watched for
// (readable, writable; neither: only a hang-up), so that a descriptor the
// kernel refused at first is watched for the right thing once it takes.
type fdRole struct {
	kind    fdKind
	id      int
	in, out bool
}

type fdKind int

const (
	fdRendezvous  fdKind = iota + 1
	fdLink               // a worker's link (id: worker)
	fdReports            // a worker's reports (id: worker), read in batches
	fdWorkerExit         // a worker's pidfd (id: worker)
	fdControl            // the control socket
	fdControlConn        // one control client (id: connection)
	fdRelay              // captured app output (id: the pipe's fd)
	fdCheckOut           // the new binary's check-mode output
	fdCheckExit          // the check process's pidfd
	fdTimer
	fdWake
)

// workerHandle is the shell's side of a worker: its pidfd and its link.
type workerHandle struct {
	id, pid    int
	pidfd      int
	conn       *link.Conn // nil until linked
	reports    *link.Conn // the worker's reports of what it started and reaped
	linkEOF    bool       // the link is dead: no longer watched
	linkDownAt time.Time  // closed: tell the core if it still runs by then
}

// procHandle is a handler or app some worker reported, by its pidfd.
type procHandle struct {
	id, pid, pidfd int
}

func (h *Holder) newID() int { h.nextID++; return h.nextID }

// watch puts fd in the loop as kind. Should the kernel refuse (ENOMEM, or
// fs.epoll.max_user_watches reached), fd keeps its role and is added again
// every watchRetry until it takes: what it carries comes late, never not
// at all.
func (h *Holder) watch(fd int, kind fdKind, id int) error {
	h.roles[fd] = fdRole{kind: kind, id: id, in: true}
	err := h.poll.Add(fd)
	if err != nil {
		if h.unwatched == nil {
			h.unwatched = make(map[int]bool)
		}
		h.unwatched[fd] = true
		if h.watchRetryAt.IsZero() {
			h.watchRetryAt = time.Now().Add(watchRetry)
		}
		h.log.Warn("cannot watch a descriptor; trying again", "fd", fd, "error", err, "retry", watchRetry.String())
	}
	return err
}

// watchRetry is how often descriptors the kernel would not watch are
// offered again.
const watchRetry = 100 * time.Millisecond

// retryWatches offers the kernel every descriptor it refused again.
func (h *Holder) retryWatches() {
	h.watchRetryAt = time.Time{}
	for fd := range h.unwatched {
		if err := h.poll.Add(fd); err != nil {
			continue
		}
		delete(h.unwatched, fd)
		h.log.Info("descriptor watched", "fd", fd)
		if r := h.roles[fd]; !r.in || r.out {
			h.poll.Watch(fd, r.in, r.out)
		}
	}
	if len(h.unwatched) > 0 {
		h.watchRetryAt = time.Now().Add(watchRetry)
	}
}

// setWatch changes what a watched descriptor is watched for.
func (h *Holder) setWatch(fd int, in, out bool) {
	r, ok := h.roles[fd]
	if !ok {
		return
	}
	r.in, r.out = in, out
	h.roles[fd] = r
	if !h.unwatched[fd] {
		h.poll.Watch(fd, in, out)
	}
}

func (h *Holder) unwatch(fd int) {
	if _, ok := h.roles[fd]; !ok {
		return
	}
	if h.unwatched[fd] {
		delete(h.unwatched, fd)
	} else {
		h.poll.Del(fd)
	}
	delete(h.roles, fd)
}

// feed hands events to the core in order and carries out its actions. An
// action that produces an event (a spawn, say) queues it behind the rest.
func (h *Holder) feed(ev core.Event) {
	h.queue = append(h.queue, ev)
	if h.feeding {
		return
	}
	h.feeding = true
	for len(h.queue) > 0 {
		ev := h.queue[0]
		h.queue = h.queue[1:]
		for _, a := range h.core.Handle(time.Now(), ev) {
			h.do(a)
		}
	}
	h.queue = nil
	h.feeding = false
}

// Run serves until stopped and returns the exit status. first is the
// event that begins the run: Started, or Resumed after a re-execution.
func (h *Holder) run(first core.Event, pendingSignals []int) int {
	h.feed(first)
	h.reapChildren() // anything that ended while this process started
	for _, s := range pendingSignals {
		h.onSignal(sigOf(s))
	}
	for !h.done {
		h.armTimer()
		ready, err := h.poll.Wait()
		if err != nil {
			h.log.Error("epoll", "error", err)
			return 1
		}
		for _, r := range ready {
			if h.done {
				break
			}
			h.dispatch(r)
		}
		h.flushLinks()
		if !h.watchRetryAt.IsZero() && !h.watchRetryAt.After(time.Now()) {
			// After any event, not only the timer's: the timerfd may be
			// the descriptor that was refused.
			h.retryWatches()
		}
		if h.tidyMemory {
			// A worker's end (a crash, an upgrade) is rare and costs
			// garbage; returned at once, resident memory stays where it
			// was however many workers come and go.
			h.tidyMemory = false
			debug.FreeOSMemory()
		}
		if h.execWanted && !h.done {
			h.execWanted = false
			h.reexec()
		}
	}
	return h.exitStatus
}

func (h *Holder) dispatch(r evloop.Ready) {
	role, ok := h.roles[r.FD]
	if !ok {
		return
	}
	switch role.kind {
	case fdRendezvous:
		h.acceptPeers()
	case fdReports:
		if w := h.workers[role.id]; w != nil {
			h.reportsReady(w, r.HangUp)
		}
	case fdLink:
		if w := h.workers[role.id]; w != nil {
			if r.Writable {
				h.flushLink(w)
			}
			if r.Readable {
				h.readLink(w, 64)
			}
		}
	case fdWorkerExit:
		if w := h.workers[role.id]; w != nil {
			h.workerGone(w)
		}
	case fdControl:
		h.acceptControl()
	case fdControlConn:
		h.controlReady(role.id, r)
	case fdRelay:
		h.relayReady(role.id)
	case fdCheckOut:
		h.checkOutput()
	case fdCheckExit:
		h.checkExited()
	case fdTimer:
		h.timer.Fired()
		h.timersDue()
	case fdWake:
		h.wake.Drain()
		for _, s := range h.sigs.take() {
			h.onSignal(s)
		}
	}
}

// finish ends the holder: every socket sockhold opened is closed (its unix
// socket file removed), and Run returns status.
func (h *Holder) finish(status int) {
	if h.done {
		return
	}
	h.refusals.flush(h.log)
	for _, s := range h.sockets {
		s.Close()
	}
	h.sockets = nil
	h.closeControl()
	h.done, h.exitStatus = true, status

}
