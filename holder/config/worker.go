package config

import (
	"encoding/json"
	"fmt"
	"os"
)

// Environment variables through which the holder starts a worker. They are
// removed from what handlers see (so are tableflip's).
const (
	ConfigEnv = "SOCKHOLD_CONFIG" // Config as JSON
	FDsEnv    = "SOCKHOLD_FDS"    // WorkerFDs as JSON
	// RunningEnv tells a worker started by an upgrade whether the old one
	// had an on-demand app running ("1"), so it knows whether to start one.
	RunningEnv = "SOCKHOLD_APP_RUNNING"
	// SuccessorEnv marks a worker the holder started for an upgrade itself
	// ("1"), rather than the old worker through tableflip: it is a
	// restart's new generation all the same.
	SuccessorEnv = "SOCKHOLD_SUCCESSOR"
)

// InternalEnv lists the variables that never reach a handler or an app.
var InternalEnv = []string{ConfigEnv, FDsEnv, RunningEnv, SuccessorEnv, "SOCKHOLD_ROLE"}

// WorkerArg is a worker's argv[1]: the holder starts its own binary with
// it, and tableflip passes argv on to the next generation unchanged.
const WorkerArg = "worker"

// InternalEnvPrefixes are variable families that never reach a handler:
// tableflip's upgrade handshake marker among them.
var InternalEnvPrefixes = []string{"TABLEFLIP_", "LISTEN_"}

// ListenerFD is a listening socket the first worker finds at a known
// descriptor. Workers started by an upgrade get the same sockets by name
// from tableflip instead; Addr and Family still describe them.
type ListenerFD struct {
	FD     int
	Family int
	Addr   string
	Name   string
}

// WorkerFDs tells a worker where its inherited resources are.
type WorkerFDs struct {
	Rendezvous string // the holder's abstract socket to dial
	Proto      int    // the link protocol the holder speaks
	Listeners  []ListenerFD
}

// TableflipName is the name listener i travels under from one worker
// generation to the next. Config order never changes across upgrades.
func TableflipName(i int) string { return fmt.Sprintf("listener-%d", i) }

// IsWorker reports whether this process was started as a worker: by its
// own command line, which the holder (or the previous worker, through
// tableflip) wrote, together with the configuration it passes.
func IsWorker() bool {
	return len(os.Args) > 1 && os.Args[1] == WorkerArg && os.Getenv(ConfigEnv) != ""
}

// Encode serialises w for the worker's environment.
func (w WorkerFDs) Encode() string {
	b, _ := json.Marshal(w)
	return string(b)
}

// WorkerFromEnv reads what the holder passed to this worker.
func WorkerFromEnv() (*Config, *WorkerFDs, error) {
	c, err := Decode(os.Getenv(ConfigEnv))
	if err != nil {
		return nil, nil, err
	}
	var w WorkerFDs
	if err := json.Unmarshal([]byte(os.Getenv(FDsEnv)), &w); err != nil {
		return nil, nil, fmt.Errorf("worker descriptors: %v", err)
	}
	return c, &w, nil
}
