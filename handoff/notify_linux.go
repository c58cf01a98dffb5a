package handoff

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// NotifySocket receives sd_notify messages from served apps: an abstract
// datagram socket with SO_PASSCRED, so every message carries the sender's
// PID as the kernel saw it, and readiness is taken from the app alone.
type NotifySocket struct {
	FD   int
	Addr string // the value for NOTIFY_SOCKET
}

// NotifyMessage is one datagram: who sent it and its KEY=VALUE lines.
type NotifyMessage struct {
	PID    int
	Fields map[string]string
}

// ListenNotify opens a notify socket with a fresh abstract name.
func ListenNotify() (*NotifySocket, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("@sockhold-notify/%d/%016x", os.Getpid(), rand.Uint64())
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &NotifySocket{FD: fd, Addr: name}, nil
}

// Read returns the next message, or ok=false when none is waiting.
func (n *NotifySocket) Read() (NotifyMessage, bool) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		m, oobn, _, _, err := unix.Recvmsg(n.FD, buf, oob, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return NotifyMessage{}, false
		}
		msg := NotifyMessage{Fields: map[string]string{}}
		if scms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, scm := range scms {
				if cred, err := unix.ParseUnixCredentials(&scm); err == nil {
					msg.PID = int(cred.Pid)
				}
			}
		}
		for _, line := range strings.Split(string(buf[:m]), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				msg.Fields[k] = v
			}
		}
		return msg, true
	}
}

// Close closes the socket.
func (n *NotifySocket) Close() { unix.Close(n.FD) }
