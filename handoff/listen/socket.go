package listen

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// Socket is one listening socket held open by sockhold. FD is a raw
// descriptor (O_NONBLOCK, O_CLOEXEC) rather than a net.Listener: the worker
// accepts with its own epoll loop so that accepted connections are blocking,
// as inetd children expect, and Go's poller never changes the shared flags.
type Socket struct {
	Spec      Spec
	FD        int
	Family    int    // unix.AF_INET, AF_INET6 or AF_UNIX
	Addr      string // what it is bound to, e.g. "127.0.0.1:873", "[::]:873", "/run/x.sock", "@name"
	Inherited bool   // passed in by a service manager: never unlinked by us
	path      *boundPath
}

// Options are the settings shared by every socket sockhold opens.
type Options struct {
	Backlog int // 0 = net.core.somaxconn
}

// OpenAll opens every spec in order. On error, sockets already opened are
// closed again, so a failed start leaves nothing behind. Warnings (a backlog
// capped by the kernel, unused inherited sockets) are returned for logging.
func OpenAll(specs []Spec, opt Options, inh *Inherited) (socks []*Socket, warnings []string, err error) {
	defer func() {
		if err != nil {
			for _, s := range socks {
				s.Close()
			}
			socks = nil
		}
	}()
	if opt.Backlog <= 0 {
		opt.Backlog = Somaxconn()
	}
	for _, spec := range specs {
		var got []*Socket
		switch spec.Network {
		case "fd":
			var s *Socket
			s, err = inh.Take(spec)
			got = []*Socket{s}
		case "unix":
			var s *Socket
			s, err = openUnix(spec, opt.Backlog)
			got = []*Socket{s}
		default:
			got, err = openTCP(spec, opt.Backlog)
		}
		if err != nil {
			return socks, warnings, err
		}
		for _, s := range got {
			if w := backlogWarning(s, opt.Backlog); w != "" {
				warnings = append(warnings, w)
			}
		}
		socks = append(socks, got...)
	}
	return socks, warnings, nil
}

// Close closes the descriptor and removes the unix socket file if sockhold
// created it and it is still the same file.
func (s *Socket) Close() error {
	var err error
	if s.FD >= 0 {
		err = unix.Close(s.FD)
	}
	if s.path != nil {
		s.path.remove()
	}
	return err
}

// tcpBind is one concrete address to bind for a tcp spec.
type tcpBind struct {
	family int
	ip     net.IP
	v6only bool
}

func tcpBinds(spec Spec) ([]tcpBind, error) {
	want4, want6 := spec.Network != "tcp6", spec.Network != "tcp4"
	if spec.Host == "" || spec.Host == "::" || spec.Host == "0.0.0.0" {
		switch {
		case spec.Host == "0.0.0.0" || !want6:
			if !want4 {
				return nil, fmt.Errorf("0.0.0.0 is not an IPv6 address")
			}
			return []tcpBind{{family: unix.AF_INET, ip: net.IPv4zero}}, nil
		case spec.Host == "::" && !want4:
			return []tcpBind{{family: unix.AF_INET6, ip: net.IPv6zero, v6only: true}}, nil
		case !want4:
			return []tcpBind{{family: unix.AF_INET6, ip: net.IPv6zero, v6only: true}}, nil
		default:
			// One dual-stack socket serves both families, as
			// socket-burst-dampener does where the host allows it.
			return []tcpBind{{family: unix.AF_INET6, ip: net.IPv6zero, v6only: false}}, nil
		}
	}
	var ips []net.IP
	if ip := net.ParseIP(spec.Host); ip != nil {
		ips = []net.IP{ip}
	} else {
		found, err := net.LookupIP(spec.Host)
		if err != nil {
			return nil, fmt.Errorf("resolve %q: %v", spec.Host, err)
		}
		ips = found
	}
	var binds []tcpBind
	for _, ip := range ips {
		if v4 := ip.To4(); v4 != nil {
			if want4 {
				binds = append(binds, tcpBind{family: unix.AF_INET, ip: v4})
			}
		} else if want6 {
			binds = append(binds, tcpBind{family: unix.AF_INET6, ip: ip, v6only: true})
		}
	}
	if len(binds) == 0 {
		return nil, fmt.Errorf("%q has no address of the requested family", spec.Host)
	}
	return binds, nil
}

func openTCP(spec Spec, backlog int) ([]*Socket, error) {
	binds, err := tcpBinds(spec)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %v", spec.URI, err)
	}
	var socks []*Socket
	for _, b := range binds {
		s, err := openTCPOne(spec, b, backlog)
		if errors.Is(err, unix.EAFNOSUPPORT) && spec.Host == "" && spec.Network == "tcp" && len(binds) == 1 {
			// No IPv6 on this host: the wildcard falls back to IPv4.
			s, err = openTCPOne(spec, tcpBind{family: unix.AF_INET, ip: net.IPv4zero}, backlog)
		}
		if err != nil {
			for _, o := range socks {
				o.Close()
			}
			return nil, err
		}
		socks = append(socks, s)
	}
	return socks, nil
}

func openTCPOne(spec Spec, b tcpBind, backlog int) (*Socket, error) {
	display := net.JoinHostPort(b.ip.String(), strconv.Itoa(spec.Port))
	fail := func(step string, err error) (*Socket, error) {
		return nil, fmt.Errorf("listen %s: %s %s: %w", spec.URI, step, display, err)
	}
	fd, err := unix.Socket(b.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	var sa unix.Sockaddr
	if b.family == unix.AF_INET6 {
		v6only := 0
		if b.v6only {
			v6only = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
		a := &unix.SockaddrInet6{Port: spec.Port}
		copy(a.Addr[:], b.ip.To16())
		sa = a
	} else {
		a := &unix.SockaddrInet4{Port: spec.Port}
		copy(a.Addr[:], b.ip.To4())
		sa = a
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fail("listen", err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	ok = true
	return &Socket{Spec: spec, FD: fd, Family: b.family, Addr: SockaddrString(bound)}, nil
}

// SockaddrString renders a socket address the way users write it.
func SockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrUnix:
		return a.Name
	}
	return fmt.Sprintf("%T", sa)
}
