package integration

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkUpgradeBlackout measures upgrades under closed-loop load: 8
// clients, each connection a handler that reports the version and
// generation serving it. For each of 20 `upgrade --wait` (alternating two
// builds, so the holder re-executes itself every time) it records the
// holder's own figure (request to new generation serving) and its share
// spent checking and re-executing the holder, the time until the first
// reply from the new generation, and it compares the latency of
// connections that overlap an upgrade with those that do not. sockhold
// runs at its production log level.
//
//	go test -run '^$' -bench UpgradeBlackout -benchtime 1x ./integration/
func BenchmarkUpgradeBlackout(b *testing.B) {
	if raceEnabled {
		b.Skip("run without -race")
	}
	dir, _ := os.MkdirTemp("", "shbu")
	defer os.RemoveAll(dir)
	exe := dir + "/sockhold"
	copyFileB(b, sockholdBin, exe)
	port := freePortB(b)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(exe, strconv.Itoa(port), "--address", "127.0.0.1", "--processes", "8",
		"--control", dir+"/ctl", "--", handlerBin, "version")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	waitServed(b, addr)

	type conn struct {
		start, end time.Time
		gen        int
	}
	var mu sync.Mutex
	var conns []conn
	var failures int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				reply, err := oneRequest(addr)
				t1 := time.Now()
				mu.Lock()
				if err != nil || !versionReply.MatchString(reply) {
					failures++
				} else {
					g, _ := strconv.Atoi(strings.Fields(reply)[1])
					conns = append(conns, conn{t0, t1, g})
				}
				mu.Unlock()
			}
		}()
	}
	firstReplyOf := func(gen int, after time.Time) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			if c.gen == gen && c.end.After(after) {
				return c.end, true
			}
		}
		return time.Time{}, false
	}
	time.Sleep(500 * time.Millisecond) // warm-up: steady load before the first upgrade
	const upgrades = 20
	var windows []window
	var blackouts, tooks, holders []time.Duration
	for i := 1; i <= upgrades; i++ {
		src := sockholdB
		if i%2 == 0 {
			src = sockholdBin
		}
		copyFileB(b, src, exe)
		sent := time.Now()
		out, err := exec.Command(sockholdBin, "upgrade", "--wait", "--control", dir+"/ctl").CombinedOutput()
		m := upgradeTook.FindStringSubmatch(string(out))
		if err != nil || m == nil || m[2] == "" {
			b.Fatalf("upgrade %d: %v %s", i, err, out)
		}
		took, _ := strconv.ParseFloat(m[1], 64)
		holder, _ := strconv.ParseFloat(m[2], 64)
		tooks = append(tooks, time.Duration(took*float64(time.Millisecond)))
		holders = append(holders, time.Duration(holder*float64(time.Millisecond)))
		deadline := sent.Add(30 * time.Second)
		for {
			if at, ok := firstReplyOf(i+1, sent); ok {
				windows = append(windows, window{sent, at})
				blackouts = append(blackouts, at.Sub(sent))
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("generation %d never answered", i+1)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // steady load between upgrades
	}
	close(stop)
	wg.Wait()

	samples := make([]sample, len(conns))
	for i, c := range conns {
		samples[i] = sample{c.start, c.end}
	}
	during, steady := splitByWindows(samples, windows)
	share := make([]float64, len(tooks))
	for i := range tooks {
		share[i] = float64(holders[i]) / float64(tooks[i])
	}
	for _, d := range [][]time.Duration{blackouts, tooks, holders} {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	}
	sort.Float64s(share)
	med := func(d []time.Duration) time.Duration { return d[len(d)/2].Round(10 * time.Microsecond) }
	top := func(d []time.Duration) time.Duration { return d[len(d)-1].Round(10 * time.Microsecond) }
	fmt.Printf("\nupgrades under load: %d upgrades (holder and worker), 8 closed-loop clients, %d connections, %d failed\n", upgrades, len(conns), failures)
	fmt.Printf("upgrade --wait, request -> new generation serving:  median %v, max %v\n", med(tooks), top(tooks))
	fmt.Printf("  of which the holder's check and re-execution:     median %v, max %v (share: median %.0f%%)\n", med(holders), top(holders), 100*share[len(share)/2])
	fmt.Printf("request -> first reply from the new generation:     median %v, max %v\n", med(blackouts), top(blackouts))
	printDuringVsSteady("connections", "an upgrade", during, steady)
	if failures > 0 {
		b.Errorf("%d connections failed", failures)
	}
	b.ReportMetric(float64(tooks[len(tooks)/2].Microseconds())/1000, "median_upgrade_ms")
	b.ReportMetric(share[len(share)/2], "holder_share")
	b.ReportMetric(ratio(pct(during, 99), pct(steady, 99)), "p99_ratio")
}

func copyFileB(b *testing.B, from, to string) {
	data, err := os.ReadFile(from)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(to+".tmp", data, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(to+".tmp", to); err != nil {
		b.Fatal(err)
	}
}
