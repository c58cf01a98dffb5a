package handoff

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// StartApp starts a served app with fds 0-2 inherited (or, when out >= 0,
// out as its stdout and stderr) and listeners at 3, 4, ... in the order
// given; nothing else crosses the exec. The app gets a process group of its
// own, so a Ctrl-C at the terminal reaches sockhold, which stops it in
// order. It returns the PID and a pidfd.
func StartApp(path string, argv, env []string, listeners []int, as *RunAs, out int) (pid, pidfd int, err error) {
	files := []uintptr{0, 1, 2}
	if out >= 0 {
		files = []uintptr{0, uintptr(out), uintptr(out)}
	}
	for _, fd := range listeners {
		files = append(files, uintptr(fd))
	}
	pidfd = -1
	WithEmptySignalMask(func() {
		pid, err = syscall.ForkExec(path, argv, &syscall.ProcAttr{
			Dir:   as.dir(),
			Env:   env,
			Files: files,
			Sys:   &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd, Credential: as.credential()},
		})
	})
	if err != nil {
		return 0, -1, err
	}
	if pidfd < 0 {
		if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
			return pid, -1, fmt.Errorf("pidfd for app %d: %v", pid, err)
		}
	}
	return pid, pidfd, nil
}
