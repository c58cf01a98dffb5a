package holder

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// notifier speaks systemd's notify protocol on $NOTIFY_SOCKET. The address
// is read once and removed from the environment so that no worker or
// handler can report readiness on sockhold's behalf. Sends never block the
// loop: a datagram systemd has no room for is dropped and logged.
type notifier struct {
	addr string
	fd   int
	log  *slog.Logger
}

// newNotifier uses addr, or $NOTIFY_SOCKET when addr is empty.
func newNotifier(addr string, log *slog.Logger) *notifier {
	if addr == "" {
		addr = os.Getenv("NOTIFY_SOCKET")
	}
	os.Unsetenv("NOTIFY_SOCKET")
	n := &notifier{addr: addr, fd: -1, log: log}
	if addr == "" {
		return n
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err == nil {
		// x/sys spells an abstract address with a leading "@", as systemd does.
		if err = unix.Connect(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		log.Warn("NOTIFY_SOCKET unusable; systemd will not hear from sockhold", "addr", addr, "error", err)
		return n
	}
	n.fd = fd
	return n
}

func (n *notifier) send(lines ...string) {
	if n == nil || n.fd < 0 {
		return
	}
	for i, l := range lines {
		if l == "RELOADING=1" {
			// Type=notify-reload wants the reload's start time with it.
			var ts unix.Timespec
			unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
			lines = append(lines[:i+1:i+1], append([]string{fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000)}, lines[i+1:]...)...)
			break
		}
	}
	msg := []byte(strings.Join(lines, "\n") + "\n")
	for {
		err := unix.Sendto(n.fd, msg, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			n.log.Warn("sd_notify", "error", err)
		}
		return
	}
}
