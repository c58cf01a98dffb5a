package config

import (
	"encoding/json"
	"fmt"
	"os"
)

// Environment variables through which the holder starts a worker. They are
// removed from what handlers see (so are tableflip's).
const (
	RoleEnv   = "SOCKHOLD_ROLE"   // "worker" in a worker process
	ConfigEnv = "SOCKHOLD_CONFIG" // Config as JSON
	FDsEnv    = "SOCKHOLD_FDS"    // WorkerFDs as JSON
	// RunningEnv tells a worker started by an upgrade whether the old one
	// had an on-demand app running ("1"), so it knows whether to start one.
	RunningEnv = "SOCKHOLD_APP_RUNNING"
)

// InternalEnv lists the variables that never reach a handler or an app.
var InternalEnv = []string{RoleEnv, ConfigEnv, FDsEnv, RunningEnv}

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
	Listeners  []ListenerFD
}

// TableflipName is the name listener i travels under from one worker
// generation to the next. Config order never changes across upgrades.
func TableflipName(i int) string { return fmt.Sprintf("listener-%d", i) }

// IsWorker reports whether this process was started as a worker.
func IsWorker() bool { return os.Getenv(RoleEnv) == "worker" }

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
