package listen

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// ReadQueue reports the accept queue's depth and maximum for TCP listeners
// (TCP_INFO) and unix ones (sock_diag), path and abstract alike.
func TestReadQueue(t *testing.T) {
	for _, c := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"},
		{"unix", filepath.Join(t.TempDir(), "q.sock")},
		{"unix", "@sockhold-queue-test"},
	} {
		l, err := net.Listen(c.network, c.addr)
		if err != nil {
			t.Fatal(err)
		}
		fd := fdOf(t, l)
		q, err := ReadQueue(fd)
		if err != nil || q.Depth != 0 || q.Max == 0 {
			t.Fatalf("%s idle: %+v %v", c.addr, q, err)
		}
		for i := 0; i < 2; i++ {
			conn, err := net.Dial(c.network, l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
		}
		// A TCP client's connect returns before the kernel has
		// processed its final ACK and queued the connection: wait for it.
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
			q, err := ReadQueue(fd)
			if err == nil && q.Depth == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s with two queued: %+v %v", c.addr, q, err)
			}
		}
		l.Close()
	}
}
