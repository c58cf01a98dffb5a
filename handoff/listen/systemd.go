package listen

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenFDsStart is SD_LISTEN_FDS_START: passed sockets begin at fd 3.
const listenFDsStart = 3

// Inherited holds the sockets a service manager passed in with the systemd
// protocol (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES).
type Inherited struct {
	fds   []int
	names []string
	taken map[int]bool
}

// InheritFromEnv reads the LISTEN_* variables meant for this process, marks
// the passed descriptors close-on-exec and removes the variables, so neither
// reaches a child by accident. Variables meant for another PID are ignored
// (and removed too: they describe descriptors this process does not have).
func InheritFromEnv() (*Inherited, error) {
	inh := &Inherited{taken: map[int]bool{}}
	pidStr, nStr, namesStr := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	if nStr == "" {
		return inh, nil
	}
	if pid, err := strconv.Atoi(pidStr); err != nil || pid != os.Getpid() {
		return inh, nil
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("LISTEN_FDS=%q is not a count", nStr)
	}
	var names []string
	if namesStr != "" {
		names = strings.Split(namesStr, ":")
	}
	for i := 0; i < n; i++ {
		fd := listenFDsStart + i
		unix.CloseOnExec(fd)
		name := "unknown"
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		inh.fds = append(inh.fds, fd)
		inh.names = append(inh.names, name)
	}
	return inh, nil
}

// Specs returns one fd:// spec per inherited socket, for when the user named
// no listener at all and the service manager's sockets are meant.
func (inh *Inherited) Specs() []Spec {
	var specs []Spec
	for i, fd := range inh.fds {
		specs = append(specs, Spec{URI: "fd://" + strconv.Itoa(fd), Network: "fd", FD: fd, Name: inh.names[i], NameSet: true, UID: -1, GID: -1})
	}
	return specs
}

// Take adopts the descriptor a fd:// spec names, by number or by name.
func (inh *Inherited) Take(spec Spec) (*Socket, error) {
	fd := spec.FD
	name := spec.Name
	if spec.FDName != "" {
		fd = -1
		for i, n := range inh.names {
			if n == spec.FDName && !inh.taken[inh.fds[i]] {
				fd = inh.fds[i]
				break
			}
		}
		if fd < 0 {
			return nil, fmt.Errorf("listen %s: no socket named %q in LISTEN_FDNAMES", spec.URI, spec.FDName)
		}
		if !spec.NameSet {
			name = spec.FDName
		}
	}
	if inh.taken[fd] {
		return nil, fmt.Errorf("listen %s: fd %d is already used", spec.URI, fd)
	}
	for i, f := range inh.fds {
		if f == fd && !spec.NameSet && inh.names[i] != "unknown" {
			name = inh.names[i]
		}
	}
	s, err := adopt(fd, spec)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %v", spec.URI, err)
	}
	s.Spec.Name = name
	inh.taken[fd] = true
	return s, nil
}

// CloseUnused closes inherited sockets nobody asked for and returns their
// numbers, so they neither leak into children nor go unnoticed.
func (inh *Inherited) CloseUnused() []int {
	var closed []int
	for _, fd := range inh.fds {
		if !inh.taken[fd] {
			unix.Close(fd)
			closed = append(closed, fd)
		}
	}
	return closed
}

// adopt checks that fd is a listening stream socket and takes it over.
func adopt(fd int, spec Spec) (*Socket, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fd %d: %v", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("fd %d is not a socket", fd)
	}
	if t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t != unix.SOCK_STREAM {
		return nil, fmt.Errorf("fd %d is not a stream socket", fd)
	}
	if l, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || l != 1 {
		return nil, fmt.Errorf("fd %d is not listening", fd)
	}
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("fd %d: %v", fd, err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("fd %d: %v", fd, err)
	}
	addr := "fd://" + strconv.Itoa(fd)
	if sa, err := unix.Getsockname(fd); err == nil {
		addr = SockaddrString(sa)
	}
	return &Socket{Spec: spec, FD: fd, Family: family, Addr: addr, Inherited: true}, nil
}
