package holder

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// notifier speaks systemd's notify protocol on $NOTIFY_SOCKET. The address
// is read once and removed from the environment so that no worker or
// handler can report readiness on sockhold's behalf.
type notifier struct {
	conn *net.UnixConn
	log  *slog.Logger
}

func newNotifier(log *slog.Logger) *notifier {
	addr := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	n := &notifier{log: log}
	if addr == "" {
		return n
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		log.Warn("NOTIFY_SOCKET unusable; systemd will not hear from sockhold", "addr", addr, "error", err)
		return n
	}
	n.conn = c
	return n
}

func (n *notifier) send(lines ...string) {
	if n == nil || n.conn == nil {
		return
	}
	if _, err := n.conn.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		n.log.Warn("sd_notify", "error", err)
	}
}

func (n *notifier) ready(status string) { n.send("READY=1", "STATUS="+status) }

// reloading tells systemd an upgrade began; with Type=notify-reload the
// reload is then synchronous: it ends at the next READY=1.
func (n *notifier) reloading() {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	n.send("RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000), "STATUS=upgrading")
}

func (n *notifier) stopping() { n.send("STOPPING=1", "STATUS=stopping") }
