package config

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Environment variables through which the holder starts a worker. Every
// SOCKHOLD_ variable is removed from what handlers see.
const (
	RoleEnv   = "SOCKHOLD_ROLE"   // "worker" in a worker process
	ConfigEnv = "SOCKHOLD_CONFIG" // Config as JSON
	FDsEnv    = "SOCKHOLD_FDS"    // WorkerFDs as JSON
	EnvPrefix = "SOCKHOLD_"
)

// ListenerFD is a listening socket at a known descriptor in the worker.
type ListenerFD struct {
	FD     int
	Family int
	Addr   string
	Name   string
}

// HandlerFD is a handler started by an earlier generation that is still
// alive: the worker counts it against --processes until its pidfd says it
// has exited.
type HandlerFD struct {
	PIDFD int
	PID   int
	Start time.Time
}

// WorkerFDs tells a worker which inherited descriptor is which.
type WorkerFDs struct {
	Generation int
	Control    int // SOCK_SEQPACKET link to the holder
	Listeners  []ListenerFD
	Handlers   []HandlerFD
}

// IsWorker reports whether this process was started as a worker.
func IsWorker() bool { return os.Getenv(RoleEnv) == "worker" }

// EncodeFDs serialises w for the worker's environment.
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
