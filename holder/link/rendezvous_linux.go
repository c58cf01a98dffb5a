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
// the holder checks every caller by the kernel's word (see Peer).
func Listen() (fd int, name string, err error) {
	for try := 0; try < 5; try++ {
		name = fmt.Sprintf("@sockhold/%d/%016x", os.Getpid(), rand.Uint64())
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
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

// Peer is a caller as the kernel recorded it when it connected.
type Peer struct {
	FD    int // the accepted connection
	PID   int
	UID   int
	Pidfd int // a handle on the caller (SO_PEERPIDFD), or -1 on kernels before 6.5
}

// Accept takes the next caller without blocking (unix.EAGAIN when none).
func Accept(listener int) (Peer, error) {
	var fd int
	var err error
	for {
		fd, _, err = unix.Accept4(listener, unix.SOCK_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return Peer{}, err
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		unix.Close(fd)
		return Peer{}, err
	}
	p := Peer{FD: fd, PID: int(cred.Pid), UID: int(cred.Uid), Pidfd: -1}
	// The kernel's handle on the process that connected: unlike a PID it
	// cannot come to mean another process.
	if pfd, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
		unix.CloseOnExec(pfd)
		p.Pidfd = pfd
	}
	return p, nil
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
