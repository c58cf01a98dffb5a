package holder

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/logs"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailure = 1 // the machine said no: port in use, permission denied
	ExitUsage   = 2 // the command line is wrong: bad flag, bad URI, no such command
)

// Spawn runs sockhold in spawn mode (the burst dampener) until it is stopped
// and returns the process exit status.
func Spawn(o config.Spawn, version string) int {
	return run(version, func(inherited []listen.Spec) (*config.Config, error) {
		return config.FromSpawn(o, inherited)
	})
}

// Serve runs sockhold in serve mode (a long-running app given the
// listening sockets) until it is stopped and returns the exit status.
func Serve(o config.Serve, version string) int {
	return run(version, func(inherited []listen.Spec) (*config.Config, error) {
		return config.FromServe(o, inherited)
	})
}

func run(version string, configure func([]listen.Spec) (*config.Config, error)) int {
	handoff.CloseOnExecFrom(3)
	inh, err := listen.InheritFromEnv()
	if err != nil {
		return fail(ExitUsage, err)
	}
	cfg, err := configure(inh.Specs())
	if err != nil {
		return fail(ExitUsage, err)
	}
	log := logs.New(os.Stderr, cfg.LogFormat, cfg.LogLevel).With("role", "holder")
	exe, err := selfPath()
	if err != nil {
		return fail(ExitFailure, fmt.Errorf("cannot find sockhold's own binary: %v", err))
	}
	socks, warnings, err := listen.OpenAll(cfg.Listen, listen.Options{Backlog: cfg.Backlog}, inh)
	if err != nil {
		return fail(ExitFailure, err)
	}
	for _, fd := range inh.CloseUnused() {
		log.Warn("closed an inherited socket no --listen asked for", "fd", fd)
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	for _, s := range socks {
		log.Info("listening", "addr", s.Addr, "name", s.Spec.Name, "inherited", s.Inherited)
	}
	h := New(cfg, log, exe, version, socks)
	if err := h.openControl(); err != nil {
		h.closeSockets()
		return fail(ExitFailure, err)
	}
	return h.Run()
}

// fail prints err as the one line a user sees and returns status.
func fail(status int, err error) int {
	msg := strings.TrimPrefix(err.Error(), config.ErrUsage.Error()+": ")
	fmt.Fprintln(os.Stderr, "sockhold: "+msg)
	if errors.Is(err, config.ErrUsage) {
		return ExitUsage
	}
	return status
}

// selfPath is the absolute path sockhold was started as. Symbolic links are
// kept, not resolved: a deploy that points the link at a new build is what
// the next worker runs.
func selfPath() (string, error) {
	arg0 := os.Args[0]
	if !strings.Contains(arg0, "/") {
		if p, err := exec.LookPath(arg0); err == nil {
			arg0 = p
		} else {
			return os.Executable()
		}
	}
	return filepath.Abs(arg0)
}
