package worker

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/link"
)

// fromHolder handles the messages waiting from the holder.
func (w *Worker) fromHolder() {
	for i := 0; i < 64 && w.holder != nil; i++ {
		m, fds, err := w.holder.Recv()
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if errors.Is(err, link.ErrTruncated) {
			// Descriptors were lost (this process is out of them): what
			// the holder sent cannot be counted on. It must start another.
			w.log.Error("handover arrived incomplete; worker exiting", "error", err)
			w.send(link.Msg{Type: link.AdoptFailed, Reason: err.Error()})
			if w.serve != nil {
				w.send(link.Msg{Type: link.Drain, Drain: w.stopAll(), DrainMS: w.serve.cfg.DrainTimeout.Milliseconds()})
			}
			w.stopping, w.exitCode = true, 1
			return
		}
		if err != nil {
			// Without a holder nobody reaps or counts: stop taking work.
			w.log.Warn("holder is gone; worker stopping", "error", err)
			w.holderGone()
			return
		}
		w.fromHolderMsg(m, fds)
	}
}

func (w *Worker) fromHolderMsg(m link.Msg, fds []int) {
	switch m.Type {
	case link.Adopt:
		w.adopt(m, fds)
		return
	case link.Upgrade:
		if w.serve != nil {
			// tableflip gives the new worker this process's environment.
			os.Setenv(config.IndicesEnv, config.EncodeIndices(m.Indices))
		}
		w.startUpgrade(m.Seq)
	case link.HandOver:
		w.handOver()
	case link.KillChild:
		w.log.Warn("what tableflip started is no successor; ended it", "killed", w.killStrays())
	case link.Resume:
		if w.upgrade.resume() {
			w.log.Info("the new worker failed; taking work again")
		}
		if w.serve != nil {
			w.restartFailed()
		}
	case link.Exit:
		w.upgrade.exit()
		w.log.Info("the new worker serves; exiting", "handlers_left", len(w.handlers))
		w.stopping = true
	case link.Refused:
		w.log.Error("the holder refused this worker", "reason", m.Reason)
		w.stopping, w.exitCode = true, 1
		w.holderGone()
	case link.Signal:
		if w.serve != nil {
			w.signalAll(unix.Signal(m.Signo))
		}
	case link.StopOne:
		if w.serve != nil {
			w.stopOne()
		}
	default:
		w.log.Warn("unexpected message from holder", "type", m.Type)
	}
	closeFDs(fds)
}

// adopt takes the generation number and the handlers still alive from
// earlier generations; they count against --processes until they exit.
// Only then does the worker start accepting, and only then does it tell
// tableflip (and so the previous worker) that it is ready.
func (w *Worker) adopt(m link.Msg, fds []int) {
	if w.serve != nil {
		// Serve mode has no handler budget: the old apps are the
		// holder's to drain.
		closeFDs(fds)
		if !w.adopted {
			// Fresher than what this worker started with.
			w.serve.othersIdx = map[int]bool{}
			for _, i := range m.Indices {
				w.serve.othersIdx[i] = true
			}
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
	w.inheritedCount += len(fds)
	if w.adopted || m.More {
		return
	}
	w.gen = m.Generation
	w.log = w.log.With("gen", w.gen)
	w.cmd.BaseEnv = w.handlerEnv()
	w.adopted = true
	if err := w.upg.Ready(); err != nil {
		// The previous worker died mid-upgrade: the holder, not
		// tableflip, decided that this worker takes over.
		w.log.Warn("tableflip could not tell the previous worker", "error", err)
	}
	w.send(link.Msg{Type: link.Serving, Generation: w.gen, Version: w.version})
	w.log.Info("worker serving", "listeners", len(w.listeners), "inherited_handlers", w.inheritedCount,
		"processes", w.cfg.Processes, "version", w.version)
}

// handOver: the holder has this worker's successor linked. Spawn mode: take
// no more work, report everything, and wait to be told to exit (or, if the
// successor fails, to resume). Serve mode: the new copies are ready: stop
// this generation's, and exit.
func (w *Worker) handOver() {
	if w.serve != nil {
		if w.onDemand() {
			// Nothing of this generation starts or stops an app again.
			w.unwatchDemand()
			w.serve.demand.arrivals.stop()
		}
		drain := w.stopAll()
		w.flushReport()
		w.send(link.Msg{Type: link.Drain, Drain: drain, DrainMS: w.serve.cfg.DrainTimeout.Milliseconds()})
		w.send(link.Msg{Type: link.HandedOver})
		w.log.Info("upgrade: the new generation is ready; this one stopped its copies and exits once they have")
		w.stopping = true
		return
	}
	w.upgrade.handOver()
	w.rearm() // stop watching the listeners before saying so
	w.flushReport()
	w.send(link.Msg{Type: link.HandedOver})
	w.log.Info("upgrade: handed over to the new worker", "handlers_left", len(w.handlers))
}
