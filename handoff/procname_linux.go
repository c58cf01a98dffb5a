package handoff

import (
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SetProcessName names this process for ps, pidof and pkill after the
// holder started it through a /proc/PID/fd/N path (the kernel names a
// process after the file it executes, here "N"): it is named after the
// binary's path as sockhold was started, as it would have been.
func SetProcessName(path string) {
	name := []byte(filepath.Base(path))
	if len(name) > 15 {
		name = name[:15] // TASK_COMM_LEN
	}
	name = append(name, 0)
	unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0)
}
