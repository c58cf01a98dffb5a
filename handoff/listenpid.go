package handoff

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// ShimEnv marks a process started as the LISTEN_PID shim.
const ShimEnv = "SOCKHOLD_LISTEN_PID_SHIM"

// IsShim reports whether this process is the LISTEN_PID shim.
func IsShim() bool { return os.Getenv(ShimEnv) == "1" }

// ShimArgs is how a served app is started through the shim: sockhold's own
// binary, re-executed, with the app's path and argv after it.
func ShimArgs(self, path string, argv []string) (string, []string) {
	return self, append([]string{self, "listen-pid-shim", path}, argv...)
}

// ShimMain is the whole of the shim: systemd's LISTEN_PID must equal the
// app's own PID, which a parent cannot know before it forks and Go cannot
// set between fork and exec. So sockhold execs itself, sets LISTEN_PID to
// its PID, and execs the app, which keeps that PID. It touches no
// descriptor: the listeners at 3.. pass through the second exec as they
// came (the Go runtime's own descriptors are close-on-exec).
func ShimMain() int {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "sockhold listen-pid-shim: no command")
		return 127
	}
	path, argv := os.Args[2], os.Args[3:]
	env := FilterEnv(os.Environ(), []string{ShimEnv, "LISTEN_PID"}, nil)
	env = append(env, "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	err := syscall.Exec(path, argv, env)
	fmt.Fprintf(os.Stderr, "sockhold: exec %s: %v\n", path, err)
	return 127
}
