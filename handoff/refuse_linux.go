package handoff

import "golang.org/x/sys/unix"

// Refuse answers a connection that will not be handed on (message may be
// nil) and closes it. Closing a socket with unread input makes the kernel
// send RST, which can destroy the message before the client reads it; so
// the write side is shut first and whatever the client already sent is read
// and discarded.
func Refuse(fd int, message []byte) {
	if len(message) > 0 {
		unix.SendmsgN(fd, message, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	}
	unix.Shutdown(fd, unix.SHUT_WR)
	var buf [4096]byte
	for i := 0; i < 16; i++ {
		n, _, err := unix.Recvfrom(fd, buf[:], unix.MSG_DONTWAIT)
		if n <= 0 || err != nil {
			break
		}
	}
	unix.Close(fd)
}
