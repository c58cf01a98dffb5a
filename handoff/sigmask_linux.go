package handoff

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// WithEmptySignalMask runs start (a fork+exec) on a thread that blocks no
// signal, so the child starts with none blocked. Children inherit the
// forking thread's mask, and a Go program keeps for its threads whatever
// mask it was started with: a parent that blocked SIGALRM would otherwise
// leave every handler deaf to alarm(), and git-daemon --timeout or an inetd
// tool's timer would never fire.
func WithEmptySignalMask(start func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, none unix.Sigset_t
	if unix.PthreadSigmask(unix.SIG_SETMASK, &none, &old) != nil {
		start()
		return
	}
	start()
	unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
}
