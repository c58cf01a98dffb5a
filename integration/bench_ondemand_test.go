package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkOnDemandColdStart measures serve --on-demand: the time from
// connect to the first byte when the app is not running, against the app's
// own start-up (process start to READY=1, as the worker measured it in the
// same run), over 20 cold starts; and the CPU sockhold uses per minute
// while the app runs idle (the idle checks) and while no app runs.
//
//	go test -run '^$' -bench OnDemandColdStart -benchtime 1x ./integration/
func BenchmarkOnDemandColdStart(b *testing.B) {
	if raceEnabled {
		b.Skip("run without -race")
	}
	in := startWith(b, startOpts{verbosity: "-v"}, "serve", "--on-demand", "--idle-stop", "100ms",
		"--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--", appBin, "-dialect", "systemd")
	var cold, own, added []time.Duration
	waiting := msgIs("idle: waiting for a connection")
	for i := 0; i < 20; i++ {
		in.waitForN(10*time.Second, i+1, waiting)
		t0 := time.Now()
		c, err := net.Dial("tcp", in.addr(0))
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
		first := time.Since(t0)
		c.Close()
		r := in.waitForN(10*time.Second, i+1, msgIs("app ready"))[i]
		after, _ := time.ParseDuration(r.str("after"))
		cold, own, added = append(cold, first), append(own, after), append(added, first-after)
	}
	for _, s := range [][]time.Duration{cold, own, added} {
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	}
	fmt.Printf("\non-demand cold starts: 20\n")
	fmt.Printf("connect -> first byte:                  median %v, max %v\n", cold[10].Round(time.Microsecond), cold[19].Round(time.Microsecond))
	fmt.Printf("the app's own start-up (exec -> READY): median %v, max %v\n", own[10].Round(time.Microsecond), own[19].Round(time.Microsecond))
	fmt.Printf("sockhold adds:                          median %v, max %v\n", added[10].Round(time.Microsecond), added[19].Round(time.Microsecond))

	// Idle cost: CPU of holder and worker over a quiet stretch.
	idle := startWith(b, startOpts{}, "serve", "--on-demand", "--idle-stop", "1h",
		"--listen", "tcp://127.0.0.1:0", "--ready", "notify", "--", appBin, "-dialect", "systemd")
	const quiet = 10 * time.Second
	perMinute := func() time.Duration {
		pids := []int{idle.pid(), idle.workerPID()}
		before := cpuOf(pids)
		time.Sleep(quiet)
		return (cpuOf(pids) - before) * time.Duration(time.Minute/quiet)
	}
	notRunning := perMinute()
	mustRoundTrip(&testing.T{}, idle.addr(0), "")
	running := perMinute()
	fmt.Printf("sockhold CPU per minute, no app running: %v; app running idle (idle checks every 1 s): %v\n", notRunning, running)

	// Busy cost: the same while the app serves a closed loop of 4 clients,
	// against the app's own CPU in the same stretch. Arrival signals are
	// at most one per idle check, so this stays near the idle figure.
	appPID := idle.waitFor(5*time.Second, msgIs("app started")).int("app_pid")
	sockholdPIDs := []int{idle.pid(), idle.workerPID()}
	before, appBefore := cpuOf(sockholdPIDs), cpuOf([]int{appPID})
	served := len(closedLoop(b, idle.addr(0), "app", 4, quiet))
	busy := (cpuOf(sockholdPIDs) - before) * time.Duration(time.Minute/quiet)
	appBusy := (cpuOf([]int{appPID}) - appBefore) * time.Duration(time.Minute/quiet)
	fmt.Printf("app serving %d conns/s: sockhold CPU per minute %v, the app's %v (ratio %.3f)\n",
		served/int(quiet/time.Second), busy, appBusy, float64(busy)/float64(max(appBusy, 1)))
	b.ReportMetric(float64(added[10].Microseconds())/1000, "added_ms")
	b.ReportMetric(float64(running.Microseconds())/1000, "idle_cpu_ms/min")
	b.ReportMetric(float64(busy.Microseconds())/1000, "busy_cpu_ms/min")
}

// cpuOf sums the CPU time pids have run, over all their threads, from
// /proc/PID/task/TID/schedstat (nanoseconds; /proc/PID/stat counts only
// 10 ms ticks, too coarse for an idle process). Go threads live as long as
// the process, so none is missed by having exited.
func cpuOf(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
		for _, path := range stats {
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			if f := strings.Fields(string(b)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				total += time.Duration(ns)
			}
		}
	}
	return total
}
