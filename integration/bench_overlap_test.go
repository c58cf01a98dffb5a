package integration

import (
	"fmt"
	"time"
)

// window is a stretch of time in which something disruptive happened (an
// upgrade, a restart).
type window struct{ from, to time.Time }

// splitByWindows sorts request latencies into those of requests that
// overlap any window and the steady rest.
func splitByWindows(samples []sample, windows []window) (during, steady []time.Duration) {
	for _, s := range samples {
		d := s.end.Sub(s.start)
		overlaps := false
		for _, w := range windows {
			if s.start.Before(w.to) && s.end.After(w.from) {
				overlaps = true
				break
			}
		}
		if overlaps {
			during = append(during, d)
		} else {
			steady = append(steady, d)
		}
	}
	return during, steady
}

// printDuringVsSteady prints the latency table both benchmarks report:
// steady requests, those overlapping a window (what), and the p50/p99
// ratios between them.
func printDuringVsSteady(unit, what string, during, steady []time.Duration) {
	fmt.Printf("%-22s %8s %10s %10s %10s\n", unit, "count", "p50", "p99", "max")
	fmt.Printf("%-22s %8d %10v %10v %10v\n", "steady", len(steady), pct(steady, 50), pct(steady, 99), pct(steady, 100))
	fmt.Printf("%-22s %8d %10v %10v %10v\n", "overlapping "+what, len(during), pct(during, 50), pct(during, 99), pct(during, 100))
	fmt.Printf("ratio overlapping/steady: p50 %.2f, p99 %.2f\n", ratio(pct(during, 50), pct(steady, 50)), ratio(pct(during, 99), pct(steady, 99)))
}
