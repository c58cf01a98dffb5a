package handoff

import (
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// Peer describes the far end of an accepted connection: the environment a
// handler gets about it, and a short form for log lines.
type Peer struct {
	Env  []string
	Text string // "203.0.113.7:40512" or "uid=1000 pid=4242"
}

// ConnVars are the environment variables sockhold sets per connection; any
// inherited value of theirs is dropped so a handler never sees a stale one.
var ConnVars = []string{
	"PROTO", "TCPREMOTEIP", "TCPREMOTEPORT", "TCPLOCALIP", "TCPLOCALPORT",
	"REMOTE_ADDR", "REMOTE_PORT",
	"UNIXREMOTEEUID", "UNIXREMOTEEGID", "UNIXREMOTEPID", "UNIXLOCALPATH",
}

// DescribeConn reads the addresses of connection fd (and, for unix sockets,
// the peer's credentials) into the UCSPI and CGI spellings:
//
//	TCP:  PROTO=TCP TCPREMOTEIP TCPREMOTEPORT TCPLOCALIP TCPLOCALPORT REMOTE_ADDR REMOTE_PORT
//	unix: PROTO=UNIX UNIXREMOTEEUID UNIXREMOTEEGID UNIXREMOTEPID UNIXLOCALPATH
//
// PROTO stays TCP for IPv6 too, so "${PROTO}REMOTEIP" always resolves; an
// IPv4 client of a dual-stack socket is shown as plain IPv4. remote is the
// address accept returned; nil means ask the kernel.
func DescribeConn(fd int, remote unix.Sockaddr) Peer {
	if remote == nil {
		remote, _ = unix.Getpeername(fd)
	}
	local, _ := unix.Getsockname(fd)
	if rip, rport, ok := inetAddr(remote); ok {
		lip, lport, _ := inetAddr(local)
		return Peer{
			Env: []string{
				"PROTO=TCP",
				"TCPREMOTEIP=" + rip, "TCPREMOTEPORT=" + rport,
				"TCPLOCALIP=" + lip, "TCPLOCALPORT=" + lport,
				"REMOTE_ADDR=" + rip, "REMOTE_PORT=" + rport,
			},
			Text: net.JoinHostPort(rip, rport),
		}
	}
	env := []string{"PROTO=UNIX"}
	text := "unix"
	if cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
		uid, gid, pid := strconv.Itoa(int(cred.Uid)), strconv.Itoa(int(cred.Gid)), strconv.Itoa(int(cred.Pid))
		env = append(env, "UNIXREMOTEEUID="+uid, "UNIXREMOTEEGID="+gid, "UNIXREMOTEPID="+pid)
		text = "uid=" + uid + " pid=" + pid
	}
	if sa, ok := local.(*unix.SockaddrUnix); ok && sa.Name != "" {
		env = append(env, "UNIXLOCALPATH="+sa.Name)
	}
	return Peer{Env: env, Text: text}
}

func inetAddr(sa unix.Sockaddr) (ip, port string, ok bool) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port), true
	case *unix.SockaddrInet6:
		addr := net.IP(a.Addr[:])
		if v4 := addr.To4(); v4 != nil {
			addr = v4
		}
		return addr.String(), strconv.Itoa(a.Port), true
	}
	return "", "", false
}
