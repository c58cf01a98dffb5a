package holder

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// kernelProbes are the kernel features the holder cannot do without,
// behind a seam so that their absence can be tested.
type kernelProbes struct {
	pidfdOpen func() error // pidfd_open(2) on this process: Linux 5.3
	children  func() error // /proc/self/task/TID/children: CONFIG_PROC_CHILDREN
}

var realKernel = kernelProbes{
	pidfdOpen: func() error {
		fd, err := unix.PidfdOpen(os.Getpid(), 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	},
	children: func() error {
		_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d/children", unix.Gettid()))
		return err
	},
}

// checkKernel says, in one line, what this kernel lacks that sockhold
// needs: without pidfds no process can be known by a handle, and without
// the children files a stop cannot find what handlers left behind. Found
// at start, rather than as miscounted processes later.
func checkKernel(p kernelProbes) error {
	if err := p.pidfdOpen(); err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("this kernel has no pidfd_open (Linux 5.3 or later is needed): sockhold knows every process by a pidfd")
		}
		return fmt.Errorf("pidfd_open: %v (sockhold knows every process by a pidfd)", err)
	}
	if err := p.children(); err != nil {
		return fmt.Errorf("this kernel has no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN): sockhold finds the processes handlers leave behind there: %v", err)
	}
	return nil
}
