package holder

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/holder/config"
)

// armDrain gives apps an old serve-mode worker asked to stop until
// --drain-timeout; then they are killed. The pidfd is taken now, so the
// kill can never reach a process that reused the PID meanwhile.
func (h *Holder) armDrain(pids []int, timeout time.Duration) {
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // already gone
		}
		h.after(timeout, event{kind: evDrainKill, pid: pid, fd: fd})
	}
}

func (h *Holder) drainDeadline(pidfd, pid int) {
	defer unix.Close(pidfd)
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err == nil {
		h.log.Warn("app did not stop within --drain-timeout; killed", "app_pid", pid)
	}
}

// noteAppExit records how an app ended during a serve-mode stop: sockhold
// then exits 0 if the app stopped cleanly (status 0, or the stop signal),
// its status if it failed, 128+signal if something else killed it.
func (h *Holder) noteAppExit(ws syscall.WaitStatus) {
	switch {
	case ws.Exited():
		if ws.ExitStatus() != 0 {
			h.exitStatus = ws.ExitStatus()
		}
	case ws.Signaled():
		if int(ws.Signal()) != h.cfg.Serve.StopSignal {
			h.exitStatus = 128 + int(ws.Signal())
		}
	}
}

// afterWait is the stop phase that follows waiting: spawn-mode handlers get
// SIGTERM and a grace; a served app already had its stop signal and
// --drain-timeout, so it is killed.
func (h *Holder) afterWait() stopPhase {
	if h.cfg.Mode == config.ModeServe {
		return phaseKill
	}
	return phaseTerm
}
