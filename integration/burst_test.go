package integration

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A burst of 500 connections against --processes 4 and a handler that takes
// 50 ms: every client is served, none refused or reset, never more than 4
// handlers alive at once, and they are served in arrival order (give or take
// the handlers that run side by side).
func TestBurstIsQueuedNotRefused(t *testing.T) {
	const clients, procs = 500, 4
	dir := t.TempDir()
	counter, order := filepath.Join(dir, "live"), filepath.Join(dir, "order")
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", strconv.Itoa(procs),
		"--", handlerBin, "count", counter, "50ms", order)

	// Sample the live handlers from outside too.
	maxSampled := sampleLiveHandlers(in)
	// Connect one after another so arrival order is well defined; the
	// kernel completes every handshake into the backlog at once.
	conns := make([]net.Conn, clients)
	for i := range conns {
		c, err := net.Dial("tcp", in.addr(0))
		if err != nil {
			t.Fatalf("client %d refused: %v", i, err)
		}
		conns[i] = c
		fmt.Fprintf(c, "%d\n", i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i, c := range conns {
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "ok\n" {
				errs <- fmt.Errorf("client %d: read %q, %v", i, b, err)
			}
		}(i, c)
	}
	wg.Wait()
	sampled := maxSampled()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	maxFile, _ := os.ReadFile(counter + ".max")
	if m, _ := strconv.Atoi(strings.TrimSpace(string(maxFile))); m > procs || m < 1 {
		t.Errorf("handlers counted %d alive at once, limit %d", m, procs)
	} else {
		t.Logf("max concurrent handlers: %d by their own count, %d sampled", m, sampled)
	}
	if sampled > procs {
		t.Errorf("sampled %d live handlers, limit %d", sampled, procs)
	}
	b, _ := os.ReadFile(order)
	served := strings.Fields(string(b))
	if len(served) != clients {
		t.Fatalf("%d handlers recorded, want %d", len(served), clients)
	}
	worst := 0
	for pos, s := range served {
		i, _ := strconv.Atoi(s)
		if d := abs(pos - i); d > worst {
			worst = d
		}
	}
	t.Logf("worst displacement from arrival order: %d", worst)
	if worst > 2*procs {
		t.Errorf("served out of arrival order: a client moved %d places", worst)
	}
	if n := in.count(msgIs("FAIL")); n != 0 {
		t.Errorf("%d connections failed", n)
	}
}

// sampleLiveHandlers samples liveHandlers every millisecond until the
// returned function is called, which returns the highest count seen.
func sampleLiveHandlers(in *instance) func() int {
	var maxSeen atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			default:
			}
			if n := int64(liveHandlers(in.pid(), in.workerPID())); n > maxSeen.Load() {
				maxSeen.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return func() int {
		close(done)
		<-finished
		return int(maxSeen.Load())
	}
}

// liveHandlers counts handlers alive at one instant: descendants of the
// holder (children of any worker generation, or orphans adopted by the
// holder) that are running the test handler. A worker started by an upgrade
// is a child of the old worker, and a handler between vfork and exec still
// looks like a worker, so the executable is what tells them apart.
//
// The children files are per thread and read one after another, so a
// handler reaped during the scan and its replacement can both be listed;
// keeping only the PIDs still running the handler when checked again after
// the scan makes the count sound: each of them was alive at the moment the
// first of them was checked.
//
// A PID must also still have the start time it had when listed, so that a
// PID reused in between (pid_max is often 32768) is not counted twice.
func liveHandlers(holder, _ int) int {
	type seen struct {
		pid   int
		start string
	}
	var listed []seen
	queue := []int{holder}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range childrenOf(pid) {
			if isHandler(c) {
				listed = append(listed, seen{c, startTime(c)})
			} else {
				queue = append(queue, c)
			}
		}
	}
	n := 0
	for _, p := range listed {
		if processAlive(p.pid) && isHandler(p.pid) && p.start != "" && startTime(p.pid) == p.start {
			n++
		}
	}
	return n
}

// startTime is field 22 of /proc/PID/stat: when the process started.
func startTime(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

func isHandler(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && exe == handlerBin
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
