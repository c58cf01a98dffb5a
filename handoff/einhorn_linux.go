package handoff

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// EinhornSocket is the command socket einhorn apps find at
// EINHORN_SOCK_PATH, where they send "worker:ack" once ready. It lives in a
// private directory (0700) of its own.
type EinhornSocket struct {
	FD   int
	Path string
	dir  string
}

// ListenEinhorn creates the socket, non-blocking, for the worker's poller.
func ListenEinhorn() (*EinhornSocket, error) {
	dir, err := os.MkdirTemp("", "sockhold-einhorn-")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		os.RemoveAll(dir)
		return nil, err
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		os.RemoveAll(dir)
		return nil, err
	}
	return &EinhornSocket{FD: fd, Path: path, dir: dir}, nil
}

// Accept takes one waiting client, non-blocking; -1 when none waits.
func (e *EinhornSocket) Accept() int {
	fd, _, err := unix.Accept4(e.FD, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
	if err != nil {
		return -1
	}
	return fd
}

// Close closes the socket and removes its directory.
func (e *EinhornSocket) Close() {
	unix.Close(e.FD)
	os.RemoveAll(e.dir)
}
