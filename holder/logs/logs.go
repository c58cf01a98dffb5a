// Package logs builds the log/slog logger shared by the holder and workers.
package logs

import (
	"io"
	"log/slog"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// New returns sockhold's logger: one line per record on stderr, text or
// JSON. Holder and workers share stderr; each record is written with a single
// write, so their lines never interleave. A logger for os.Stderr writes
// through a queue, never blocking its caller (see stderr).
func New(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if w == nil || w == os.Stderr {
		w = stderr
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// WaitAttrs describes how a process ended, as EXIT lines spell it:
// status=N for an exit, signal=SIGNAME for a kill.
func WaitAttrs(ws syscall.WaitStatus) []any {
	switch {
	case ws.Exited():
		return []any{"status", ws.ExitStatus()}
	case ws.Signaled():
		return []any{"signal", unix.SignalName(ws.Signal())}
	}
	return []any{"wait_status", int(ws)}
}

// SignalName spells a signal as logs do: SIGTERM.
func SignalName(s syscall.Signal) string { return unix.SignalName(s) }
