package holder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Process handles: every process the holder acts on is known by a pidfd,
// taken while the process was certainly its own unreaped child (clone's
// CLONE_PIDFD), passed by the worker that started it, or given by the
// kernel for a link peer (SO_PEERPIDFD). A pidfd cannot come to mean
// another process; a PID can.

// becomeSubreaper makes handlers orphaned by a dead worker (and anything
// they leave behind) children of the holder rather than of init, so the
// holder can reap them, count them and apply --on-stop to them.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// alive reports whether the process behind a pidfd exists (a zombie still
// does: it cannot be reused until reaped).
func alive(pidfd int) bool { return unix.PidfdSendSignal(pidfd, 0, nil, 0) == nil }

// exited reports whether the process behind a pidfd has ended (its pidfd
// is readable), whoever its parent is.
func exited(pidfd int) bool {
	p := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	return err == nil && n == 1 && p[0].Revents&unix.POLLIN != 0
}

// signalHandle sends sig through a pidfd; group sends it to the process
// group the process leads (handlers and apps lead their own), which needs
// Linux 6.9: on older kernels groupFallback, if not 0, is used as the
// process group ID of a leader that is the holder's own unreaped child
// (so the ID cannot have been reused).
func signalHandle(pidfd int, sig syscall.Signal, group bool, groupFallback int) error {
	if !group {
		return unix.PidfdSendSignal(pidfd, sig, nil, 0)
	}
	err := unix.PidfdSendSignal(pidfd, sig, nil, unix.PIDFD_SIGNAL_PROCESS_GROUP)
	if errors.Is(err, unix.EINVAL) {
		if groupFallback > 0 {
			return unix.Kill(-groupFallback, sig)
		}
		return unix.PidfdSendSignal(pidfd, sig, nil, 0)
	}
	return err
}

// reapHandle reaps the process behind pidfd if it is the holder's child
// and has exited. reaped is false while it runs; err is ECHILD when it is
// not the holder's child (another process reaps it).
func reapHandle(pidfd int) (ws syscall.WaitStatus, reaped bool, err error) {
	var info unix.Siginfo
	for {
		err = unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOHANG, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return 0, false, err
	}
	pid, status := childInfo(&info)
	if pid == 0 {
		return 0, false, nil
	}
	return status, true, nil
}

// peekZombie names a child that has exited, without reaping it.
func peekZombie() (int, bool) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, false
		}
		pid, _ := childInfo(&info)
		return pid, pid > 0
	}
}

// reapPID reaps a child the holder holds no handle on. Only a PID that
// peekZombie just named is passed: the holder's own zombie, whose PID no
// other process can have.
func reapPID(pid int) syscall.WaitStatus {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if err != syscall.EINTR {
			return ws
		}
	}
}

// childInfo reads the PID and the wait status from a SIGCHLD siginfo.
func childInfo(info *unix.Siginfo) (int, syscall.WaitStatus) {
	raw := (*[unsafe.Sizeof(*info)]byte)(unsafe.Pointer(info))
	const fields = 16 // si_signo, si_errno, si_code and padding
	pid := int(int32(binary.NativeEndian.Uint32(raw[fields:])))
	st := int32(binary.NativeEndian.Uint32(raw[fields+8:]))
	var ws syscall.WaitStatus
	switch info.Code {
	case 1: // CLD_EXITED
		ws = syscall.WaitStatus(st&0xff) << 8
	case 2: // CLD_KILLED
		ws = syscall.WaitStatus(st & 0x7f)
	case 3: // CLD_DUMPED
		ws = syscall.WaitStatus(st&0x7f) | 0x80
	}
	return pid, ws
}

// childPIDs lists the holder's children from /proc/self/task/*/children. A
// reparented orphan may be attached to any thread, so every thread is read.
// Only ever used to signal them at the end of a stop: a PID listed here is
// the holder's own unreaped child, which only the holder can reap.
func childPIDs() []int {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var pids []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range bytes.Fields(b) {
			if pid, err := strconv.Atoi(string(f)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// fileID identifies a file by device and inode.
type fileID struct{ Dev, Ino uint64 }

func fileIDOf(fd int) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileID{}, err
	}
	return fileID{uint64(st.Dev), st.Ino}, nil
}

// exeOf is the binary pid runs. The caller checks afterwards that its
// handle on pid still shows it alive, so /proc/PID was that process.
func exeOf(pid int) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/exe", &st); err != nil {
		return fileID{}, err
	}
	return fileID{uint64(st.Dev), st.Ino}, nil
}

// parentOf reads pid's parent from /proc (0 if unknown); like exeOf, only
// trusted once the handle shows pid still alive.
func parentOf(pid int) int {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}

// peerPidfdWorks reports whether the kernel gives a handle on a unix
// socket's peer (SO_PEERPIDFD, Linux 6.5).
func peerPidfdWorks() bool {
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	fd, err := unix.GetsockoptInt(p[0], unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}
