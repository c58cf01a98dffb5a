package handoff

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// AppSockets are the sockets a generation's app copies talk back on, in a
// private directory of their own: NOTIFY_SOCKET (sd_notify datagrams) and
// EINHORN_SOCK_PATH (einhorn commands). Both are paths, as systemd's are,
// since some sd_notify clients (Ruby's sd_notify, used by puma and
// Sidekiq) cannot reach an abstract name. Only the app's user can connect:
// the sockets are that user's, mode 0600, in a directory of sockhold's
// (0711: the app's user can pass through it but neither list nor change
// it). Who sent a message is still taken from the kernel (SO_PASSCRED,
// SO_PEERCRED), never from what the message claims.
type AppSockets struct {
	Dir     string
	Notify  *NotifySocket
	Einhorn *EinhornSocket
}

// EinhornSocket is the command socket einhorn apps find at
// EINHORN_SOCK_PATH, where they send "worker:ack" once ready.
type EinhornSocket struct {
	FD   int
	Path string
}

// OpenAppSockets creates the directory and both sockets, non-blocking,
// for the worker's poller; as is the app's identity (nil: sockhold's).
func OpenAppSockets(as *RunAs) (*AppSockets, error) {
	dir, err := os.MkdirTemp("", "sockhold-app-")
	if err != nil {
		return nil, fmt.Errorf("app sockets: %v", err)
	}
	a := &AppSockets{Dir: dir, Notify: &NotifySocket{FD: -1}, Einhorn: &EinhornSocket{FD: -1}}
	if err := a.open(as); err != nil {
		a.Close()
		return nil, fmt.Errorf("app sockets in %s: %v", dir, err)
	}
	return a, nil
}

func (a *AppSockets) open(as *RunAs) error {
	var err error
	a.Notify.Addr = filepath.Join(a.Dir, "notify")
	if a.Notify.FD, err = bindUnix(unix.SOCK_DGRAM, a.Notify.Addr, as); err != nil {
		return err
	}
	// Every datagram then carries its sender's PID as the kernel saw it.
	if err := unix.SetsockoptInt(a.Notify.FD, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return err
	}
	a.Einhorn.Path = filepath.Join(a.Dir, "einhorn")
	if a.Einhorn.FD, err = bindUnix(unix.SOCK_STREAM, a.Einhorn.Path, as); err != nil {
		return err
	}
	if err := unix.Listen(a.Einhorn.FD, 16); err != nil {
		return err
	}
	// Opened for passage only once both sockets have their final owner
	// and mode: until here the directory is sockhold's alone (0700).
	if as != nil && as.UID != os.Geteuid() {
		return unix.Chmod(a.Dir, 0o711)
	}
	return nil
}

// bindUnix binds a new socket at path and gives the file to the app's user.
func bindUnix(typ int, path string, as *RunAs) (int, error) {
	if len(path) > 107 {
		return -1, fmt.Errorf("%s is %d bytes, the kernel allows 107 for a socket path (set TMPDIR to a shorter directory)", path, len(path))
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Chmod(path, 0o600); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if as != nil && as.UID != os.Geteuid() {
		if err := unix.Lchown(path, as.UID, as.GID); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

// Accept takes one waiting einhorn client, non-blocking, and the PID the
// kernel recorded for it when it connected; fd -1 when none waits.
func (e *EinhornSocket) Accept() (fd, pid int) {
	fd, _, err := unix.Accept4(e.FD, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
	if err != nil {
		return -1, 0
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fd, 0
	}
	return fd, int(cred.Pid)
}

// Close closes both sockets and removes the directory.
func (a *AppSockets) Close() {
	for _, fd := range []int{a.Notify.FD, a.Einhorn.FD} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	a.Notify.FD, a.Einhorn.FD = -1, -1
	os.RemoveAll(a.Dir)
}
