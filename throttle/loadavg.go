package throttle

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// DefaultLoadavgPath is where the kernel publishes the load averages.
const DefaultLoadavgPath = "/proc/loadavg"

// LoadGate implements --load-average: another handler may start only while
// the 1-minute load average is below Limit, except that the first handler
// (none alive) is always allowed, so a loaded machine still makes progress.
type LoadGate struct {
	Limit float64 // 0 disables the gate
	Path  string  // a file in /proc/loadavg format
}

// Enabled reports whether the gate can ever close.
func (g LoadGate) Enabled() bool { return g.Limit > 0 }

// Open reports whether a further handler may start with live handlers alive.
// A load average that cannot be read counts as open: failing closed would
// stall the queue forever on a machine without /proc.
func (g LoadGate) Open(live int) (bool, float64) {
	if !g.Enabled() || live == 0 {
		return true, 0
	}
	load, err := ReadLoad(g.Path)
	if err != nil {
		return true, 0
	}
	return load < g.Limit, load
}

// ReadLoad returns the 1-minute load average from a file in /proc/loadavg
// format ("0.42 0.30 0.25 1/123 4567").
func ReadLoad(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0, fmt.Errorf("%s: empty", path)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}
