package listen

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// sock_diag (NETLINK_SOCK_DIAG) asks the kernel for its socket tables
// directly: the kernel filters by state, so an idle check reads a few
// binary records instead of formatting and parsing every socket of the
// host as text. golang.org/x/sys/unix has no types for it; the layouts
// below are linux/inet_diag.h and linux/unix_diag.h.

const (
	inetDiagReqLen  = 56 // struct inet_diag_req_v2
	unixDiagReqLen  = 24 // struct unix_diag_req
	unixDiagMsgLen  = 16 // struct unix_diag_msg
	udiagShowName   = 0x01
	udiagShowRQLen  = 0x10
	unixDiagNameAtt = 0 // UNIX_DIAG_NAME
	unixDiagRQLen   = 4 // UNIX_DIAG_RQLEN: for a listener, its queue

	tcpEstablished = 1
	tcpListen      = 10
	tcpNewSynRecv  = 12
)

// liveTCPStates is the bitmask of TCP states a connection is open in:
// ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT,
// LAST_ACK, CLOSING, and NEW_SYN_RECV (a handshake in progress). Not
// LISTEN, TIME_WAIT or CLOSE.
const liveTCPStates = 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<5 | 1<<8 | 1<<9 | 1<<11 | 1<<tcpNewSynRecv

// diagTCP counts open TCP connections (v4 and v6) whose local port is port.
// The kernel filters by port as well as by state, so a host with many
// connections elsewhere (a busy mirror beside an idle on-demand service)
// costs this look little more than an idle one.
func diagTCP(port int) (int, error) {
	n := 0
	for _, family := range []byte{unix.AF_INET, unix.AF_INET6} {
		err := sockDiag(tcpDiagRequest(family, port), func(msg []byte) { n++ })
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}

// inet_diag bytecode (linux/inet_diag.h): each op is {code, yes, no}, and
// a comparison is followed by a second op whose no field holds the port
// (host order). The kernel jumps yes or no bytes on; landing exactly at
// the end accepts the socket, jumping past it rejects.
const (
	inetDiagReqBytecode = 1 // INET_DIAG_REQ_BYTECODE
	inetDiagBcSGE       = 2 // INET_DIAG_BC_S_GE: source port >=
	inetDiagBcSLE       = 3 // INET_DIAG_BC_S_LE: source port <=
	bcOpLen             = 4
)

// tcpDiagRequest asks for the live TCP sockets of one family whose source
// port is port: sport >= port && sport <= port, the pair every kernel with
// sock_diag understands (INET_DIAG_BC_S_EQ came later, in 4.16).
func tcpDiagRequest(family byte, port int) []byte {
	bc := make([]byte, 4*bcOpLen)
	op := func(at int, code byte, yes byte, no uint16) {
		bc[at], bc[at+1] = code, yes
		binary.NativeEndian.PutUint16(bc[at+2:], no)
	}
	op(0, inetDiagBcSGE, 2*bcOpLen, 4*bcOpLen+bcOpLen) // no: past the end
	op(4, 0, 0, uint16(port))
	op(8, inetDiagBcSLE, 2*bcOpLen, 2*bcOpLen+bcOpLen) // yes: exactly the end
	op(12, 0, 0, uint16(port))

	req := make([]byte, inetDiagReqLen+unix.SizeofRtAttr+len(bc))
	req[0], req[1] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:], liveTCPStates)
	attr := req[inetDiagReqLen:]
	binary.NativeEndian.PutUint16(attr[0:], uint16(unix.SizeofRtAttr+len(bc)))
	binary.NativeEndian.PutUint16(attr[2:], inetDiagReqBytecode)
	copy(attr[unix.SizeofRtAttr:], bc)
	return req
}

// diagUnix counts the connections of a unix stream listener bound to name
// (a path, or "@name" for an abstract one): those accepted, whose server
// side carries the listener's address, and those in its queue, which the
// kernel dumps only as the listener's queue length.
func diagUnix(name string) (int, error) {
	req := make([]byte, unixDiagReqLen)
	req[0] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpEstablished|1<<tcpListen)
	binary.NativeEndian.PutUint32(req[12:], udiagShowName|udiagShowRQLen)
	n := 0
	err := sockDiag(req, func(msg []byte) {
		if len(msg) < unixDiagMsgLen || msg[1] != unix.SOCK_STREAM {
			return
		}
		got, queued, _ := unixDiagAttrs(msg[unixDiagMsgLen:])
		switch {
		case got != name:
		case msg[2] == tcpListen:
			n += queued
		default:
			n++
		}
	})
	return n, err
}

// diagUnixListener reads the queue of the unix listener with this inode.
func diagUnixListener(ino uint32) (q Queue, found bool, err error) {
	req := make([]byte, unixDiagReqLen)
	req[0] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpListen)
	binary.NativeEndian.PutUint32(req[12:], udiagShowRQLen)
	err = sockDiag(req, func(msg []byte) {
		if len(msg) >= unixDiagMsgLen && binary.NativeEndian.Uint32(msg[4:8]) == ino {
			_, depth, limit := unixDiagAttrs(msg[unixDiagMsgLen:])
			q, found = Queue{Depth: uint32(depth), Max: uint32(limit)}, true
		}
	})
	return q, found, err
}

// unixDiagAttrs reads UNIX_DIAG_NAME and UNIX_DIAG_RQLEN among a message's
// attributes; for a listener the RQLEN pair is its queue length and its
// maximum.
func unixDiagAttrs(attrs []byte) (name string, rqueue, wqueue int) {
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs[0:2]))
		typ := binary.NativeEndian.Uint16(attrs[2:4])
		if l < 4 || l > len(attrs) {
			break
		}
		v := attrs[4:l]
		switch typ {
		case unixDiagNameAtt:
			if len(v) > 0 && v[0] == 0 {
				name = "@" + string(v[1:])
			} else {
				for len(v) > 0 && v[len(v)-1] == 0 {
					v = v[:len(v)-1]
				}
				name = string(v)
			}
		case unixDiagRQLen:
			if len(v) >= 8 {
				rqueue = int(binary.NativeEndian.Uint32(v))
				wqueue = int(binary.NativeEndian.Uint32(v[4:]))
			}
		}
		attrs = attrs[min((l+3)&^3, len(attrs)):]
	}
	return name, rqueue, wqueue
}

// sockDiag sends one SOCK_DIAG_BY_FAMILY dump request and calls each with
// the payload of every answer.
func sockDiag(req []byte, each func([]byte)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	msg := make([]byte, unix.NLMSG_HDRLEN+len(req))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence
	copy(msg[unix.NLMSG_HDRLEN:], req)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return fmt.Errorf("sock_diag: %w", syscall.Errno(-errno))
					}
				}
				return nil
			default:
				each(m.Data)
			}
		}
	}
}
