package listen

import (
	"net"
	"testing"
	"time"
)

// ReadQueue reports the accept queue's depth and maximum for TCP listeners
// (TCP_INFO) and unix ones (sock_diag), path and abstract alike.
func TestReadQueue(t *testing.T) {
	eachListener(t, "queue", func(l net.Listener, fd int) {
		q, err := ReadQueue(fd)
		if err != nil || q.Depth != 0 || q.Max == 0 {
			t.Fatalf("%s idle: %+v %v", l.Addr(), q, err)
		}
		for i := 0; i < 2; i++ {
			conn, err := net.Dial(l.Addr().Network(), l.Addr().String())
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
				t.Fatalf("%s with two queued: %+v %v", l.Addr(), q, err)
			}
		}
	})
}
