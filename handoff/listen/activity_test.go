package listen

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func fdOf(t *testing.T, l net.Listener) int {
	t.Helper()
	f, err := l.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// Activity sees queued connections, accepted ones, and their end, through
// netlink and through /proc alike.
func TestActivityCountsOpenConnections(t *testing.T) {
	for name, activity := range map[string]func(int) (int, error){
		"Activity":  Activity,
		"sock_diag": func(fd int) (int, error) { return byAddress(fd, diagTCP, diagUnix) },
		"/proc":     func(fd int) (int, error) { return byAddress(fd, tcpActivity, unixActivity) },
	} {
		t.Run(name, func(t *testing.T) { activityCase(t, activity) })
	}
}

func byAddress(fd int, tcp func(int) (int, error), unixs func(string) (int, error)) (int, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return tcp(a.Port)
	case *unix.SockaddrInet6:
		return tcp(a.Port)
	case *unix.SockaddrUnix:
		return unixs(a.Name)
	}
	return 0, nil
}

func activityCase(t *testing.T, Activity func(int) (int, error)) {
	eachListener(t, "activity", func(l net.Listener, fd int) {
		network := l.Addr().Network()
		if n, err := Activity(fd); err != nil || n != 0 {
			t.Fatalf("%s idle: %d %v", network, n, err)
		}
		queued, err := net.Dial(network, l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := Activity(fd); n < 1 {
			t.Fatalf("%s: a queued connection not seen (%d)", l.Addr(), n)
		}
		accepted, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := Activity(fd); n < 1 {
			t.Fatalf("%s: an accepted, open connection not seen (%d)", l.Addr(), n)
		}
		queued.Close()
		accepted.Close()
		if n, _ := Activity(fd); n != 0 {
			t.Fatalf("%s: %d after both ends closed", l.Addr(), n)
		}
	})
}

// eachListener runs f on a fresh listener of each kind: TCP on 127.0.0.1
// and ::1, a unix socket at a path and an abstract one (named after tag).
func eachListener(t *testing.T, tag string, f func(l net.Listener, fd int)) {
	t.Helper()
	for _, c := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"},
		{"tcp", "[::1]:0"},
		{"unix", filepath.Join(t.TempDir(), tag+".sock")},
		{"unix", fmt.Sprintf("@sockhold-%s-%d", tag, os.Getpid())}, // per run: the namespace is shared
	} {
		l, err := net.Listen(c.network, c.addr)
		if err != nil {
			t.Fatal(err)
		}
		f(l, fdOf(t, l))
		l.Close()
	}
}

// Only connections on the listener's own port count, whatever else the
// host has open: the kernel's port filter, not just the state filter.
func TestActivityCountsOnlyItsOwnPort(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "[::1]"} {
		mine := listenWith(t, host, 1)
		other := listenWith(t, host, 3)
		for name, f := range map[string]func(int) (int, error){"sock_diag": diagTCP, "/proc": tcpActivity} {
			if n, err := f(mine); err != nil || n != 1 {
				t.Errorf("%s %s: %d %v with 1 connection on port %d and 3 on %d, want 1", host, name, n, err, mine, other)
			}
			if n, err := f(other); err != nil || n != 3 {
				t.Errorf("%s %s: %d %v on the port with 3 connections", host, name, n, err)
			}
		}
	}
}

// listenWith listens on host with conns connections open to it (accepted or
// not, it makes no difference) and returns its port.
func listenWith(tb testing.TB, host string, conns int) int {
	tb.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
	}
	return l.Addr().(*net.TCPAddr).Port
}

// BenchmarkActivity compares one idle check through sock_diag with the same
// through /proc, for a TCP listener with one open connection, on a quiet
// host and on one with 1000 connections open elsewhere.
//
//	go test -run '^$' -bench Activity ./handoff/listen/
func BenchmarkActivity(b *testing.B) {
	for _, elsewhere := range []int{0, 1000} {
		port := listenWith(b, "127.0.0.1", 1)
		if elsewhere > 0 {
			listenWith(b, "127.0.0.1", elsewhere)
		}
		for _, m := range []struct {
			name string
			f    func(int) (int, error)
		}{{"sock_diag", diagTCP}, {"proc", tcpActivity}} {
			b.Run(fmt.Sprintf("%s/elsewhere=%d", m.name, elsewhere), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if n, err := m.f(port); err != nil || n != 1 {
						b.Fatalf("%d %v", n, err)
					}
				}
			})
		}
	}
}
