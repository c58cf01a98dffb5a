package listen

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Queue is a listening socket's accept queue: connections the kernel has
// completed and that wait to be accepted, and the most it will hold.
type Queue struct {
	Depth uint32
	Max   uint32
}

// ErrNoQueueInfo is returned for sockets whose queue cannot be read: not a
// listener, or sock_diag refused.
var ErrNoQueueInfo = errors.New("accept-queue depth is only available for TCP and unix stream listeners")

const tcpListenState = 10 // TCP_LISTEN in the kernel's tcp_states.h

// ReadQueue reads the accept queue of a listening socket. On a TCP socket in
// the LISTEN state, TCP_INFO reports the queue length in tcpi_unacked and its
// maximum in tcpi_sacked (what ss -lt shows as Recv-Q and Send-Q). A unix
// listener has no TCP_INFO; sock_diag gives the same two figures.
func ReadQueue(fd int) (Queue, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOPROTOOPT) {
			return unixQueue(fd)
		}
		return Queue{}, err
	}
	if info.State != tcpListenState {
		return Queue{}, ErrNoQueueInfo
	}
	return Queue{Depth: info.Unacked, Max: info.Sacked}, nil
}

// unixQueue finds the unix listener fd is (by inode) in sock_diag's dump of
// listeners: UNIX_DIAG_RQLEN carries its queue length and its maximum.
func unixQueue(fd int) (Queue, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Queue{}, err
	}
	q, found, err := diagUnixListener(uint32(st.Ino))
	if err != nil || !found {
		return Queue{}, ErrNoQueueInfo
	}
	return q, nil
}
