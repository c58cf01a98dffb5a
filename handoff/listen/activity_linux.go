package listen

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Activity counts what is really happening on a listening socket's address:
// connections open on it (accepted ones included, long-lived ones too) and
// connections waiting in its accept queue. Unlike watching the listening
// socket for readability, this sees traffic an app has already accepted.
//
// It asks the kernel through sock_diag netlink, and reads /proc/net/tcp,
// tcp6 and unix (the same tables as text) where netlink is not allowed;
// either way for the calling process's network namespace.
func Activity(fd int) (int, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return firstOf(diagTCP, tcpActivity, a.Port)
	case *unix.SockaddrInet6:
		return firstOf(diagTCP, tcpActivity, a.Port)
	case *unix.SockaddrUnix:
		return firstOf(diagUnix, unixActivity, a.Name)
	}
	return 0, fmt.Errorf("activity: unsupported socket %T", sa)
}

func firstOf[K any](netlink, proc func(K) (int, error), key K) (int, error) {
	if n, err := netlink(key); err == nil {
		return n, nil
	}
	return proc(key)
}

// TCP states in /proc/net/tcp that are neither a listener nor a closed
// connection lingering in TIME_WAIT or CLOSE: 01 ESTABLISHED, 02 SYN_SENT,
// 03 SYN_RECV, 04 FIN_WAIT1, 05 FIN_WAIT2, 08 CLOSE_WAIT, 09 LAST_ACK,
// 0B CLOSING.
var liveTCP = map[string]bool{"01": true, "02": true, "03": true, "04": true, "05": true, "08": true, "09": true, "0B": true}

func tcpActivity(port int) (int, error) {
	suffix := fmt.Sprintf(":%04X", port)
	n := 0
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 3 && strings.HasSuffix(fields[1], suffix) && liveTCP[fields[3]] {
				n++
			}
		}
		f.Close()
	}
	return n, nil
}

// unixActivity counts connections on path: the server side of each one
// carries the listener's address (abstract names are shown with a leading
// @), in state 02 while it waits in the accept queue and 03 once accepted.
func unixActivity(path string) (int, error) {
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// Num RefCount Protocol Flags Type St Inode Path
		if len(fields) < 8 || fields[7] != path {
			continue
		}
		if st, err := strconv.ParseUint(fields[5], 16, 8); err == nil && (st == 2 || st == 3) { // SS_CONNECTING, SS_CONNECTED
			n++
		}
	}
	return n, nil
}
