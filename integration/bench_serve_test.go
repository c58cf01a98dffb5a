package integration

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkServeRestart measures restarts of a served app under closed-loop
// load: 8 clients against a trivial app (each connection answered with
// "TAG PID"), 20 restarts via `sockhold upgrade --wait`. It reports the
// latency of requests that overlap a restart against steady ones, and the
// restart time with the app's own start-up (process start to READY=1, as
// the worker measured it) taken out: what sockhold adds.
//
//	go test -run '^$' -bench ServeRestart -benchtime 1x ./integration/
func BenchmarkServeRestart(b *testing.B) {
	if raceEnabled {
		b.Skip("run without -race")
	}
	in := startWith(b, startOpts{verbosity: "-v"}, "serve", "--listen", "tcp://127.0.0.1:0", "--ready", "notify",
		"--", appBin, "-dialect", "systemd", "-tag", "v")
	l := startLoad(b, in.addr(0), 8, appReply("v"))
	l.waitServed(b, 200, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // steady load before the first restart
	var windows []window
	var overhead, total []time.Duration
	for i := 0; i < 20; i++ {
		from := time.Now()
		code, out, errOut := ctl(b, in, "upgrade", "--wait")
		to := time.Now()
		if code != 0 {
			b.Fatalf("restart %d: %s %s", i, out, errOut)
		}
		windows = append(windows, window{from, to})
		took, _ := strconv.ParseFloat(strings.Fields(out[strings.LastIndex(out, " in ")+4:])[0], 64)
		readies := in.all(msgIs("app ready"))
		appStart, _ := time.ParseDuration(readies[len(readies)-1].str("after"))
		t := time.Duration(took * float64(time.Millisecond))
		total = append(total, t)
		overhead = append(overhead, t-appStart)
		time.Sleep(300 * time.Millisecond)
	}
	_, errs := l.finish()
	during, steady := splitByWindows(l.lat, windows)
	sort.Slice(total, func(i, j int) bool { return total[i] < total[j] })
	sort.Slice(overhead, func(i, j int) bool { return overhead[i] < overhead[j] })
	fmt.Printf("\nserve restarts under load: 20 restarts, 8 closed-loop clients, %d requests, %d failed\n", len(l.lat), len(errs))
	fmt.Printf("restart (request -> new copy serving): median %v, max %v\n", total[10].Round(time.Microsecond), total[19].Round(time.Microsecond))
	fmt.Printf("sockhold's share (restart minus the app's own start-up to READY=1): median %v, max %v\n",
		overhead[10].Round(time.Microsecond), overhead[19].Round(time.Microsecond))
	printDuringVsSteady("requests", "a restart", during, steady)
	if len(errs) > 0 {
		b.Errorf("%d requests failed: %v", len(errs), errs[:min(3, len(errs))])
	}
	b.ReportMetric(float64(overhead[10].Microseconds())/1000, "sockhold_ms")
	b.ReportMetric(ratio(pct(during, 99), pct(steady, 99)), "p99_ratio")
}
