package listen

import (
	"net"
	"os"
	"path/filepath"
	"testing"
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

// Activity sees queued connections, accepted ones, and their end.
func TestActivityCountsOpenConnections(t *testing.T) {
	for _, c := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"},
		{"unix", filepath.Join(t.TempDir(), "a.sock")},
		{"unix", "@sockhold-activity-test"},
	} {
		l, err := net.Listen(c.network, c.addr)
		if err != nil {
			t.Fatal(err)
		}
		fd := fdOf(t, l)
		if n, err := Activity(fd); err != nil || n != 0 {
			t.Fatalf("%s idle: %d %v", c.network, n, err)
		}
		queued, err := net.Dial(c.network, l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := Activity(fd); n < 1 {
			t.Fatalf("%s: a queued connection not seen (%d)", c.addr, n)
		}
		accepted, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := Activity(fd); n < 1 {
			t.Fatalf("%s: an accepted, open connection not seen (%d)", c.addr, n)
		}
		queued.Close()
		accepted.Close()
		if n, _ := Activity(fd); n != 0 {
			t.Fatalf("%s: %d after both ends closed", c.addr, n)
		}
		l.Close()
	}
}
