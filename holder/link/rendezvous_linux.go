package link

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"

	"golang.org/x/sys/unix"
)

// Listen opens the holder's rendezvous: an abstract SOCK_SEQPACKET socket
// with a random name, so that no other process is likely to hold the name
// already (if one does, another is drawn). The name need not be secret:
// the holder checks every caller's uid and parentage (see Accept's callers).
func Listen() (fd int, name string, err error) {
	for try := 0; try < 5; try++ {
		name = fmt.Sprintf("@sockhold/%d/%016x", os.Getpid(), rand.Uint64())
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, "", err
		}
		if err = unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
			unix.Close(fd)
			if errors.Is(err, unix.EADDRINUSE) {
				continue
			}
			return -1, "", err
		}
		if err = unix.Listen(fd, 64); err != nil {
			unix.Close(fd)
			return -1, "", err
		}
		return fd, name, nil
	}
	return -1, "", err
}

// Accept takes the next caller and reports its PID and UID as the kernel
// recorded them at connect time.
func Accept(listener int) (fd, pid, uid int, err error) {
	for {
		fd, _, err = unix.Accept4(listener, unix.SOCK_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return -1, 0, 0, err
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		unix.Close(fd)
		return -1, 0, 0, err
	}
	return fd, int(cred.Pid), int(cred.Uid), nil
}

// Dial connects a worker to the holder's rendezvous.
func Dial(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect to holder %s: %v", name, err)
	}
	return fd, nil
}
