package worker

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/link"
)

// fromHolder handles one message from the holder.
func (w *Worker) fromHolder() {
	m, fds, err := link.Recv(w.holder)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		// Without a holder nobody reaps or counts: stop taking work.
		w.log.Warn("holder is gone; worker stopping", "error", err)
		w.poll.del(w.holder)
		w.holderGone()
		return
	}
	switch m.Type {
	case link.Adopt:
		w.adopt(m, fds)
	case link.Upgrade:
		w.startUpgrade()
	case link.Signal:
		if w.serve != nil {
			w.signalAll(unix.Signal(m.Signo))
		}
	case link.StopOne:
		if w.serve != nil {
			w.stopOne()
		}
	case link.StatusAsk:
		st := w.stats()
		link.Send(w.holder, link.Msg{Type: link.StatusReply, Stats: &st})
	default:
		for _, fd := range fds {
			unix.Close(fd)
		}
		w.log.Warn("unexpected message from holder", "type", m.Type)
	}
}

// adopt takes the generation number and the handlers still alive from
// earlier generations; they count against --processes until they exit.
// Only then does the worker start accepting.
func (w *Worker) adopt(m link.Msg, fds []int) {
	if w.serve != nil {
		// Serve mode has no handler budget: the old apps are the
		// holder's to drain.
		for _, fd := range fds {
			unix.Close(fd)
		}
		if !w.adopted && !m.More {
			w.gen, w.adopted = m.Generation, true
			w.log = w.log.With("gen", w.gen)
			w.sayServing()
		}
		return
	}
	for i, fd := range fds {
		h := &handler{pidfd: fd, inherited: true}
		if i < len(m.PIDs) {
			h.pid = m.PIDs[i]
		}
		if i < len(m.Starts) {
			h.start = time.Unix(0, m.Starts[i])
		}
		if i < len(m.Gens) {
			h.gen = m.Gens[i]
		}
		w.track(h)
	}
	if w.adopted || m.More {
		return
	}
	w.gen = m.Generation
	w.log = w.log.With("gen", w.gen)
	w.cmd.BaseEnv = w.handlerEnv()
	w.adopted = true
	link.Send(w.holder, link.Msg{Type: link.Serving, Generation: w.gen, Version: w.version})
	w.log.Info("worker serving", "listeners", len(w.listeners), "inherited_handlers", len(fds),
		"processes", w.cfg.Processes, "version", w.version)
}

func (w *Worker) stats() link.Stats {
	st := link.Stats{
		Generation: w.gen, PID: unix.Getpid(), Version: w.version,
		SlotsUsed: w.adm.Slots.Used(), SlotsLimit: w.adm.Slots.Limit(),
		Accepted: w.counters.accepted, Rejected: w.counters.rejected, SpawnFailures: w.counters.spawnFailures,
		Accepting: w.armed,
	}
	for _, h := range w.handlers {
		if h.inherited {
			if st.Inherited == nil {
				st.Inherited = map[int]int{}
			}
			st.Inherited[h.gen]++
		} else {
			st.OwnHandlers++
		}
	}
	for _, l := range w.listeners {
		if q, err := listen.ReadQueue(l.FD); err == nil {
			st.Queues = append(st.Queues, link.QueueStats{Listener: l.Addr, Depth: q.Depth, Max: q.Max})
		}
	}
	return st
}
