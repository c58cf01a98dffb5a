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
// generation serving it. For each of 20 SIGHUPs (alternating two builds) it
// records the time until the first reply from the new generation, and it
// compares the latency of connections that overlap an upgrade with those
// that do not. sockhold runs at its production log level.
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
	var blackouts []time.Duration
	for i := 1; i <= upgrades; i++ {
		src := sockholdB
		if i%2 == 0 {
			src = sockholdBin
		}
		copyFileB(b, src, exe)
		sent := time.Now()
		cmd.Process.Signal(syscall.SIGHUP)
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
	sort.Slice(blackouts, func(i, j int) bool { return blackouts[i] < blackouts[j] })
	fmt.Printf("\nupgrades under load: %d SIGHUPs, 8 closed-loop clients, %d connections, %d failed\n", upgrades, len(conns), failures)
	fmt.Printf("SIGHUP -> first reply from the new generation: median %v, max %v\n",
		blackouts[len(blackouts)/2].Round(time.Microsecond), blackouts[len(blackouts)-1].Round(time.Microsecond))
	printDuringVsSteady("connections", "an upgrade", during, steady)
	if failures > 0 {
		b.Errorf("%d connections failed", failures)
	}
	b.ReportMetric(float64(blackouts[len(blackouts)/2].Microseconds())/1000, "median_upgrade_ms")
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
