package holder

import (
	"os"
	"os/signal"
	"runtime"
)

// ResumeEnv marks a holder that has just re-executed itself: "STATE,BINARY",
// the descriptors of its state and of the binary. The command line stays
// the one sockhold was started with, so ps shows what it always showed.
const ResumeEnv = "SOCKHOLD_HOLDER_RESUME"

// resumeFDs is ResumeEnv's value, taken (and removed from the environment,
// which children inherit) before anything else runs.
var resumeFDs string

// earlySignals is asked for signals in this package's init when the
// process is a holder resuming after exec: until a Go program asks for
// SIGTERM, one that arrives ends it, and this holder holds every socket.
// (SIGHUP and SIGINT arrive ignored and stay so until asked for.)
var earlySignals chan os.Signal

func init() {
	// No allocation profiling: its hash of stack traces grows with every
	// new one under load (1.4 MiB of address space, touched a page at a
	// time), and nothing reads it.
	runtime.MemProfileRate = 0
	v, ok := os.LookupEnv(ResumeEnv)
	if !ok {
		return
	}
	os.Unsetenv(ResumeEnv)
	resumeFDs = v
	earlySignals = make(chan os.Signal, 64)
	signal.Notify(earlySignals, holderSignals(nil)...)
}

// Resuming reports whether this process is a holder that re-executed itself.
func Resuming() bool { return resumeFDs != "" }
