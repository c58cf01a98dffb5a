package handoff

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Command is the program run for each connection, resolved once at start.
type Command struct {
	Path    string   // absolute path of the executable
	Argv    []string // argv[0] included
	BaseEnv []string // the environment every handler starts from
	RunAs   *RunAs   // nil: handlers keep sockhold's identity

	envBuf []string // reused per spawn: ForkExec reads it only during the call
}

// Resolve finds name the way a shell would (PATH lookup unless it contains a
// slash) and checks that it is an executable regular file, so that a typo is
// a clear error at start rather than a failure on every connection.
func Resolve(name string) (string, error) {
	path := name
	if !strings.Contains(name, "/") {
		found, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("command %s: not found in PATH", name)
		}
		path = found
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("command %s: %v", name, unwrapPathErr(err))
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("command %s: not a regular file", name)
	}
	if unix.Access(abs, unix.X_OK) != nil {
		return "", fmt.Errorf("command %s: not executable", name)
	}
	return abs, nil
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// StartHandler starts one handler with connection conn as fd 0 and 1 and
// stderr as fd 2. Every other descriptor of the caller is close-on-exec, so
// the handler gets exactly these three. The handler runs in a session of its
// own, so a Ctrl-C at sockhold's terminal reaches sockhold, which applies
// --on-stop, instead of killing every transfer behind its back.
//
// It returns the PID and a pidfd (close-on-exec) that becomes readable when
// the handler exits. syscall.ForkExec uses vfork semantics on Linux, which
// keeps this path close to posix_spawn in cost. Not safe for concurrent use:
// the worker calls it from its one event loop.
func (c *Command) StartHandler(conn, stderr int, connEnv []string) (pid, pidfd int, err error) {
	env := append(c.envBuf[:0], c.BaseEnv...)
	env = append(env, connEnv...)
	c.envBuf = env
	pidfd = -1
	attr := &syscall.ProcAttr{
		Dir:   c.RunAs.dir(),
		Env:   env,
		Files: []uintptr{uintptr(conn), uintptr(conn), uintptr(stderr)},
		Sys:   &syscall.SysProcAttr{Setsid: true, PidFD: &pidfd, Credential: c.RunAs.credential()},
	}
	// The worker already runs with an empty mask (the holder starts it
	// so); doing it here too keeps that true for a handler whatever the
	// worker's threads come to block, for two syscalls a spawn.
	WithEmptySignalMask(func() { pid, err = syscall.ForkExec(c.Path, c.Argv, attr) })
	if err != nil {
		return 0, -1, err
	}
	if pidfd < 0 {
		// Kernels before 5.3 have no CLONE_PIDFD; the child is ours and
		// unreaped, so its PID cannot have been reused yet.
		if pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
			return pid, -1, fmt.Errorf("pidfd for handler %d: %v", pid, err)
		}
	}
	return pid, pidfd, nil
}
