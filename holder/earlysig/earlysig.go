// Package earlysig asks for a resuming holder's signals as early as a Go
// program can: until a Go program asks for SIGTERM, one that arrives ends
// it, and a holder that has just re-executed itself holds every socket. It
// imports nothing but the standard library's signal handling, so the Go
// runtime initialises it among the first packages (about 1.5 ms after the
// exec on a 2-core VM, most of it the runtime's own start).
package earlysig

import (
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// Env marks a holder that has just re-executed itself: "STATE,BINARY", the
// descriptors of its state and of the binary. The command line stays the
// one sockhold was started with, so ps shows what it always showed.
const Env = "SOCKHOLD_HOLDER_RESUME"

var (
	value   string
	signals chan os.Signal
)

func init() {
	// No allocation profiling in any sockhold process: its hash of stack
	// traces grows with every new one under load, and nothing reads it.
	runtime.MemProfileRate = 0
	v, ok := os.LookupEnv(Env)
	if !ok {
		return
	}
	os.Unsetenv(Env) // children inherit the environment
	value = v
	signals = make(chan os.Signal, 64)
	signal.Notify(signals, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
}

// Resume returns Env's value and the channel already receiving the
// holder's signals; ok is false in any other process.
func Resume() (fds string, c chan os.Signal, ok bool) { return value, signals, value != "" }
