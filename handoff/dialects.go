package handoff

import (
	"strconv"
	"strings"
)

// AppVars are the variables serve mode sets for a served app; inherited
// values of theirs are dropped first.
var AppVars = []string{
	"LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID",
	"EINHORN_FDS", "EINHORN_FD_COUNT", "EINHORN_MASTER_PID", "EINHORN_CHILD_INDEX", "EINHORN_SOCK_PATH",
	"NOTIFY_SOCKET",
}

// AppVarPrefixes are variable families dropped for the same reason.
var AppVarPrefixes = []string{"EINHORN_FD_"}

// AppEnv describes the listeners at fd 3, 4, ... in every dialect at once,
// so any server finds its own:
//
//	systemd:      LISTEN_FDS, LISTEN_FDNAMES (LISTEN_PID is set by the shim)
//	einhorn:      EINHORN_FD_COUNT, EINHORN_FD_0..., EINHORN_MASTER_PID, EINHORN_CHILD_INDEX,
//	              EINHORN_SOCK_PATH (for "worker:ack")
//	socketmaster: EINHORN_FDS ("3 4 ...")
//	readiness:    NOTIFY_SOCKET
//
// master is the app's real parent, the process einhorn apps signal.
func AppEnv(names []string, master, childIndex int, notifySocket string, einhornSock ...string) []string {
	n := len(names)
	fds := make([]string, n)
	env := []string{
		"LISTEN_FDS=" + strconv.Itoa(n),
		"LISTEN_FDNAMES=" + strings.Join(names, ":"),
		"EINHORN_FD_COUNT=" + strconv.Itoa(n),
		"EINHORN_MASTER_PID=" + strconv.Itoa(master),
		"EINHORN_CHILD_INDEX=" + strconv.Itoa(childIndex),
	}
	for i := range names {
		fd := strconv.Itoa(3 + i)
		fds[i] = fd
		env = append(env, "EINHORN_FD_"+strconv.Itoa(i)+"="+fd)
	}
	env = append(env, "EINHORN_FDS="+strings.Join(fds, " "))
	if notifySocket != "" {
		env = append(env, "NOTIFY_SOCKET="+notifySocket)
	}
	for _, p := range einhornSock {
		env = append(env, "EINHORN_SOCK_PATH="+p)
	}
	return env
}
