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

// ErrNoQueueInfo is returned for sockets whose queue TCP_INFO cannot report.
var ErrNoQueueInfo = errors.New("accept-queue depth is only available for TCP listeners")

const tcpListenState = 10 // TCP_LISTEN in the kernel's tcp_states.h

// ReadQueue reads the accept queue of a listening TCP socket. On a socket in
// the LISTEN state, TCP_INFO reports the queue length in tcpi_unacked and its
// maximum in tcpi_sacked (what ss -lt shows as Recv-Q and Send-Q).
func ReadQueue(fd int) (Queue, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOPROTOOPT) {
			return Queue{}, ErrNoQueueInfo
		}
		return Queue{}, err
	}
	if info.State != tcpListenState {
		return Queue{}, ErrNoQueueInfo
	}
	return Queue{Depth: info.Unacked, Max: info.Sacked}, nil
}
