package worker

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// killStrays ends this worker's children that are neither handlers nor app
// copies: what tableflip started when the holder says it is no successor.
// This worker is the only process that can reap them, and the loop that
// starts handlers is this one, so every child it does not hold a pidfd for
// is one tableflip started. Each is taken by a pidfd and checked to be
// this worker's own child (waitid says so) before it is killed.
func (w *Worker) killStrays() int {
	known := map[int]bool{}
	for _, h := range w.handlers {
		known[h.pid] = true
	}
	if w.serve != nil {
		for _, a := range w.serve.apps {
			if a != nil {
				known[a.pid] = true
			}
		}
	}
	n := 0
	for _, pid := range ownChildren() {
		if known[pid] {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		var info unix.Siginfo
		if unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil) == nil {
			if unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil {
				n++
			}
		}
		unix.Close(fd)
	}
	return n
}

// ownChildren lists this process's children (every thread's).
func ownChildren() []int {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var pids []int
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range bytes.Fields(b) {
			if pid, err := strconv.Atoi(string(f)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
