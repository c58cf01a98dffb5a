package listen

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Somaxconn reads net.core.somaxconn, the kernel's cap on any listen backlog.
func Somaxconn() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return unix.SOMAXCONN
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return unix.SOMAXCONN
	}
	return n
}

// backlogWarning says so when the kernel silently capped the backlog asked for.
func backlogWarning(s *Socket, asked int) string {
	if s.Inherited {
		return ""
	}
	effective := Somaxconn()
	if q, err := ReadQueue(s.FD); err == nil {
		effective = int(q.Max)
	}
	if asked > effective {
		return fmt.Sprintf("backlog %d on %s capped by the kernel to %d (raise net.core.somaxconn to allow more)", asked, s.Addr, effective)
	}
	return ""
}
