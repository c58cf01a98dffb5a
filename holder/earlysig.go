package holder

import (
	"os"
	"os/signal"
)

// earlySignals is asked for signals in this package's init when the
// process is a holder resuming after exec: until a Go program asks for
// SIGTERM, one that arrives ends it, and this holder holds every socket.
// (SIGHUP and SIGINT arrive ignored and stay so until asked for.)
var earlySignals chan os.Signal

func init() {
	if len(os.Args) > 1 && os.Args[1] == ResumeArg {
		earlySignals = make(chan os.Signal, 64)
		signal.Notify(earlySignals, holderSignals(nil)...)
	}
}
