package config

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
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
	// IndicesEnv gives a new generation the EINHORN_CHILD_INDEX values
	// that live copies of older ones hold ("0,1"): einhorn gives a new
	// copy the lowest index no live copy holds.
	IndicesEnv = "SOCKHOLD_APP_INDICES"
)

// InternalEnv lists the variables that never reach a handler or an app.
var InternalEnv = []string{ConfigEnv, FDsEnv, RunningEnv, SuccessorEnv, IndicesEnv, "SOCKHOLD_ROLE"}

// EncodeIndices and DecodeIndices are IndicesEnv's form: "0,1,3".
func EncodeIndices(idx []int) string {
	s := make([]string, len(idx))
	for i, n := range idx {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// DecodeIndices ignores what is not a non-negative number: at worst an
// index is given twice, as before this existed.
func DecodeIndices(v string) map[int]bool {
	out := map[int]bool{}
	for _, f := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(f); err == nil && n >= 0 && n < 1<<20 {
			out[n] = true
		}
	}
	return out
}

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
