package holder

import (
	"bufio"
	"log/slog"
	"os"
	"strings"

	"github.com/sockhold/sockhold/holder/logs"
)

// relayOutput re-logs, line by line, what a served app writes (serve
// --capture-output), tagged with its PID and generation. The holder owns
// the pipe's read end from the moment the app starts, so output is read
// for as long as the app lives, whichever worker started it. Captured
// output is printed whatever -v says: it is the app's, not sockhold's.
func (h *Holder) relayOutput(fd, pid, gen int) {
	f := os.NewFile(uintptr(fd), "app-output")
	defer f.Close()
	out := logs.New(os.Stderr, h.cfg.LogFormat, slog.LevelInfo).With("role", "app", "app_pid", pid, "gen", gen)
	// Keep reading whatever comes: a reader that stopped (at an over-long
	// line, say) would leave the app blocked on a full pipe. Lines longer
	// than the buffer are logged in pieces.
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			out.Info("app output", "line", strings.TrimSuffix(string(line), "\n"))
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}
