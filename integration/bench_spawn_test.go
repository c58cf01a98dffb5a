package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSpawnThroughput compares sockhold's accept-and-spawn path with a
// minimal C reference (accept -> posix_spawn -> reap) in the same run:
// 8 closed-loop clients, each connection spawning a static handler that
// writes "ok". Rounds alternate between the two servers so that machine
// noise falls on both. It prints conns/s, p50/p99 latency and RSS.
//
//	go test -run '^$' -bench SpawnThroughput -benchtime 1x ./integration/
//
// BENCH_ROUNDS, BENCH_ROUND_MS and BENCH_PROCESSES change the shape;
// BENCH_SOCKHOLD_ENV adds environment variables to sockhold (GOMAXPROCS=1).
func BenchmarkSpawnThroughput(b *testing.B) {
	if raceEnabled {
		b.Skip("run without -race: the race detector slows the daemon down")
	}
	dir := b.TempDir()
	ref, ok := filepath.Join(dir, "refserver"), filepath.Join(dir, "ok")
	for _, c := range [][]string{
		{"-O2", "-o", ref, "testdata/refserver.c"},
		{"-O2", "-static", "-o", ok, "testdata/ok.c"},
	} {
		if out, err := exec.Command("cc", c...).CombinedOutput(); err != nil {
			b.Fatalf("cc %v: %v\n%s", c, err, out)
		}
	}
	rounds, roundLen := envInt("BENCH_ROUNDS", 5), time.Duration(envInt("BENCH_ROUND_MS", 2000))*time.Millisecond
	const clients = 8

	refCmd := exec.Command(ref, "0", ok)
	refOut, _ := refCmd.StdoutPipe()
	if err := refCmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { refCmd.Process.Kill(); refCmd.Wait() }()
	line, _ := bufio.NewReader(refOut).ReadString('\n')
	refAddr := "127.0.0.1:" + strings.TrimSpace(strings.TrimPrefix(line, "listening "))

	// sockhold at its production log level (warnings only). The first
	// round trip is the readiness signal: it waits in the backlog until
	// the worker serves it.
	port := freePortB(b)
	procs := os.Getenv("BENCH_PROCESSES") // --processes; default one per client
	if procs == "" {
		procs = strconv.Itoa(clients)
	}
	sh := exec.Command(sockholdBin, strconv.Itoa(port), "--address", "127.0.0.1", "--processes", procs, "--", ok)
	sh.Stderr = os.Stderr
	if extra := os.Getenv("BENCH_SOCKHOLD_ENV"); extra != "" {
		sh.Env = append(os.Environ(), strings.Fields(extra)...)
	}
	if err := sh.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { sh.Process.Signal(syscall.SIGTERM); sh.Wait() }()
	sockAddr := fmt.Sprintf("127.0.0.1:%d", port)
	waitServed(b, sockAddr)
	holderPID := sh.Process.Pid
	workerPID := childrenOf(holderPID)[0]
	holderIdle, workerIdle := rssKiB(holderPID), rssKiB(workerPID)

	var sockLat, refLat []time.Duration
	var sockConns, refConns int
	var holderPeak, workerPeak int
	for r := 0; r < rounds; r++ {
		stop := make(chan struct{})
		var sampler sync.WaitGroup
		sampler.Add(1)
		go func() {
			defer sampler.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					holderPeak = max(holderPeak, rssKiB(holderPID))
					workerPeak = max(workerPeak, rssKiB(workerPID))
				}
			}
		}()
		lat := closedLoop(b, sockAddr, "ok\n", clients, roundLen)
		close(stop)
		sampler.Wait()
		sockLat, sockConns = append(sockLat, lat...), sockConns+len(lat)
		lat = closedLoop(b, refAddr, "ok\n", clients, roundLen)
		refLat, refConns = append(refLat, lat...), refConns+len(lat)
	}
	secs := (time.Duration(rounds) * roundLen).Seconds()
	sRate, rRate := float64(sockConns)/secs, float64(refConns)/secs
	fmt.Printf("\nspawn throughput, %d closed-loop clients, %d interleaved rounds of %v\n", clients, rounds, roundLen)
	fmt.Printf("%-12s %10s %10s %10s\n", "server", "conns/s", "p50", "p99")
	fmt.Printf("%-12s %10.0f %10v %10v\n", "C reference", rRate, pct(refLat, 50), pct(refLat, 99))
	fmt.Printf("%-12s %10.0f %10v %10v\n", "sockhold", sRate, pct(sockLat, 50), pct(sockLat, 99))
	fmt.Printf("ratio sockhold/reference: throughput %.3f, p50 %.2f, p99 %.2f\n",
		sRate/rRate, ratio(pct(sockLat, 50), pct(refLat, 50)), ratio(pct(sockLat, 99), pct(refLat, 99)))
	fmt.Printf("RSS holder: idle %.1f MiB, under load %.1f MiB; worker: idle %.1f MiB, under load %.1f MiB\n",
		mib(holderIdle), mib(holderPeak), mib(workerIdle), mib(workerPeak))
	b.ReportMetric(sRate/rRate, "throughput_ratio")
	b.ReportMetric(sRate, "sockhold_conns/s")
	b.ReportMetric(rRate, "reference_conns/s")
	b.ReportMetric(mib(holderPeak), "holder_MiB")
}

func freePortB(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitServed retries connecting until the port is bound (sockhold binds
// before it forks the worker, so this is short), then reads one answer.
func waitServed(b *testing.B, addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.SetDeadline(deadline)
			buf := make([]byte, 3)
			_, err = io.ReadFull(c, buf)
			c.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not served: %v", addr, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// closedLoop runs n clients, each connecting, reading the first bytes of
// the reply (they must be want) and reconnecting, for d; it returns every
// connection's latency.
func closedLoop(b *testing.B, addr, want string, n int, d time.Duration) []time.Duration {
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	var all []time.Duration
	var failures atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			buf := make([]byte, len(want))
			for time.Now().Before(deadline) {
				t0 := time.Now()
				c, err := net.Dial("tcp", addr)
				if err != nil {
					failures.Add(1)
					continue
				}
				_, err = io.ReadFull(c, buf)
				c.Close()
				if err != nil || string(buf) != want {
					failures.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if f := failures.Load(); f > 0 {
		b.Errorf("%s: %d failed connections", addr, f)
	}
	return all
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100].Round(time.Microsecond)
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func mib(kib int) float64 { return float64(kib) / 1024 }
