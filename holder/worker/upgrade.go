package worker

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/holder/config"
)

// upgradeState is the worker's side of one upgrade: tableflip runs in a
// goroutine (it blocks until the new worker is ready or has failed) and
// hands its result to the event loop.
type upgradeState struct {
	handover
	seq    int // the holder's number for the upgrade under way
	result chan error
}

// inheritListeners finds the listening sockets: from tableflip, by name,
// in a worker started by an upgrade; from the descriptors the holder placed,
// in a worker the holder started, which then registers them with tableflip
// so that every later generation inherits them.
func inheritListeners(upg *tableflip.Upgrader, given []config.ListenerFD) ([]config.ListenerFD, error) {
	out := make([]config.ListenerFD, len(given))
	for i, l := range given {
		name := config.TableflipName(i)
		if upg.HasParent() {
			f, err := upg.Fds.File(name)
			if err != nil || f == nil {
				return nil, fmt.Errorf("listener %s (%s) not passed by the previous worker: %v", name, l.Addr, err)
			}
			fd, err := rawDup(f)
			f.Close()
			if err != nil {
				return nil, err
			}
			l.FD = fd
		} else {
			// AddFile duplicates the descriptor; the os.File wrapper is
			// only borrowed for that and must not close l.FD.
			dup, err := unix.FcntlInt(uintptr(l.FD), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return nil, err
			}
			f := os.NewFile(uintptr(dup), name)
			err = upg.Fds.AddFile(name, f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("tableflip: %v", err)
			}
		}
		out[i] = l
	}
	return out, nil
}

// rawDup duplicates f's descriptor without (*os.File).Fd, which would switch
// the shared socket to blocking mode for every process holding it.
func rawDup(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	err = rc.Control(func(raw uintptr) {
		fd, dupErr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil {
		return -1, err
	}
	return fd, dupErr
}

// startUpgrade asks tableflip to start the binary now on disk. The loop
// keeps serving meanwhile; the result arrives through upgradeFinished.
func (w *Worker) startUpgrade(seq int) {
	if start, refusal := w.upgrade.upgradeAsked(); !start {
		refusal.Seq = seq
		w.send(refusal)
		return
	}
	w.upgrade.seq = seq
	w.upgrade.result = make(chan error, 1)
	if w.onDemand() {
		// tableflip gives the new worker this process's environment:
		// tell it whether an app runs, so it starts one only then.
		running := "0"
		if w.serve.anyRunning() {
			running = "1"
		}
		os.Setenv(config.RunningEnv, running)
	}
	w.log.Info("upgrade: starting the binary on disk")
	go func(res chan<- error) {
		// A worker that was itself started by an upgrade may only pass
		// the sockets on once its own parent has gone; that parent exits
		// promptly, so this wait is short.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.upg.WaitForParent(ctx); err != nil {
			res <- fmt.Errorf("previous worker still running: %v", err)
		} else {
			res <- upgradeOnceParentGone(w.upg)
		}
		w.wake.Wake()
	}(w.upgrade.result)
}

// upgradeOnceParentGone runs tableflip's Upgrade. tableflip's own loop
// learns that the parent has exited a moment after WaitForParent does (two
// ready cases of one select), and meanwhile refuses with "parent hasn't
// exited": so that answer is retried, for at most 100 ms.
func upgradeOnceParentGone(upg *tableflip.Upgrader) error {
	for i := 0; ; i++ {
		err := upg.Upgrade()
		if err == nil || err.Error() != "parent hasn't exited" || i == 100 {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// upgradeFinished collects tableflip's answer, if there is one. Success
// alone proves nothing (any binary can write tableflip's ready byte): the
// worker says so and goes on serving until the holder, which knows whether
// the successor linked, hands over.
func (w *Worker) upgradeFinished() {
	if !w.upgrade.running {
		return
	}
	var err error
	select {
	case err = <-w.upgrade.result:
	default:
		return
	}
	report := w.upgrade.tableflipDone(err)
	switch {
	case err == nil:
		w.log.Info("upgrade: tableflip says the new worker is ready")
	case w.upgrade.handedOver:
		w.log.Warn("upgrade failed after the handover", "error", err)
	default:
		w.log.Warn("upgrade failed; still serving", "error", err)
	}
	if err != nil && w.serve != nil {
		w.restartFailed()
	}
	report.Seq = w.upgrade.seq
	w.send(report)
}
