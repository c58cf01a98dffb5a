package holder

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/holder/config"
)

// workerProc is the holder's view of the current worker process.
type workerProc struct {
	pid     int
	gen     int
	started time.Time
	control *os.File // the holder's end of the SOCK_SEQPACKET link
}

// startWorker re-executes sockhold's binary, as it is on disk now, as a
// worker. The worker gets fds 0-2, the link to the holder, the listeners, and
// pidfds of still-running handlers of earlier generations, which it counts
// against --processes until they exit.
func (h *Holder) startWorker() (*workerProc, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pair[1])
	gen := h.gen + 1
	files := []uintptr{0, 1, 2, uintptr(pair[1])}
	fds := config.WorkerFDs{Generation: gen, Control: 3}
	for _, s := range h.sockets {
		fds.Listeners = append(fds.Listeners, config.ListenerFD{FD: len(files), Family: s.Family, Addr: s.Addr, Name: s.Spec.Name})
		files = append(files, uintptr(s.FD))
	}
	for _, o := range h.orphans {
		fds.Handlers = append(fds.Handlers, config.HandlerFD{PIDFD: len(files), PID: o.pid, Start: o.start})
		files = append(files, uintptr(o.pidfd))
	}
	env := handoff.FilterEnv(os.Environ(), nil, []string{config.EnvPrefix})
	env = append(env,
		config.RoleEnv+"=worker",
		config.ConfigEnv+"="+h.cfg.Encode(),
		config.FDsEnv+"="+fds.Encode(),
	)
	pid, err := syscall.ForkExec(h.exe, []string{h.exe, "worker"}, &syscall.ProcAttr{
		Env:   env,
		Files: files,
		// A process group of its own: a Ctrl-C at the terminal reaches
		// the holder, which stops the worker in order.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		unix.Close(pair[0])
		return nil, err
	}
	h.gen = gen
	w := &workerProc{pid: pid, gen: gen, started: time.Now(), control: os.NewFile(uintptr(pair[0]), "worker-link")}
	go h.readWorker(w)
	return w, nil
}

// readWorker forwards the worker's messages to the holder's loop.
func (h *Holder) readWorker(w *workerProc) {
	buf := make([]byte, 512)
	for {
		n, err := w.control.Read(buf)
		if err != nil || n == 0 {
			return
		}
		h.events <- event{kind: evWorkerMsg, gen: w.gen, msg: string(buf[:n])}
	}
}
