package handoff

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// NotifySocket receives sd_notify messages from served apps: a datagram
// socket with SO_PASSCRED, so every message carries the sender's PID as the
// kernel saw it, and readiness is taken from the app alone. It is one of a
// generation's AppSockets.
type NotifySocket struct {
	FD   int
	Addr string // the value for NOTIFY_SOCKET: the socket's path
}

// NotifyMessage is one datagram: who sent it and its KEY=VALUE lines.
type NotifyMessage struct {
	PID    int
	Fields map[string]string
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
