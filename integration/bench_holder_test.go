package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHolderMemory measures the holder's resident memory and
// descriptors (production build, production log level): idle, under
// 4-client load, after 100 upgrades (each re-executing the holder) and
// after 100 worker SIGKILLs under that load.
//
//	go test -run '^$' -bench HolderMemory -benchtime 1x ./integration/
func BenchmarkHolderMemory(b *testing.B) {
	if raceEnabled {
		b.Skip("run without -race")
	}
	dir := b.TempDir()
	exe := dir + "/sockhold"
	copyFileB(b, sockholdBin, exe)
	port := freePortB(b)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctlPath := dir + "/ctl"
	cmd := exec.Command(exe, strconv.Itoa(port), "--address", "127.0.0.1", "--processes", "4",
		"--control", ctlPath, "--", handlerBin, "version")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	waitServed(b, addr)
	holder := cmd.Process.Pid
	fds := func() int { ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", holder)); return len(ents) }
	type row struct {
		what     string
		rss, fds int
	}
	rows := []row{{"idle", rssKiB(holder), fds()}}
	l := startLoad(b, addr, 4, checkVersionReply)
	time.Sleep(time.Second) // steady load before measuring
	rows = append(rows, row{"under load (4 clients)", rssKiB(holder), fds()})
	for i := 0; i < 100; i++ {
		copyFileB(b, []string{sockholdB, sockholdBin}[i%2], exe)
		if out, err := exec.Command(sockholdBin, "upgrade", "--wait", "--control", ctlPath).CombinedOutput(); err != nil {
			b.Fatalf("upgrade %d: %v %s", i, err, out)
		}
	}
	rows = append(rows, row{"after 100 upgrades", rssKiB(holder), fds()})
	for i := 0; i < 100; i++ {
		worker := 0
		for deadline := time.Now().Add(5 * time.Second); worker == 0; time.Sleep(time.Millisecond) {
			for _, c := range childrenOf(holder) {
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c)); strings.Contains(string(b), "\x00worker") {
					worker = c
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("no worker among the holder's children before kill %d", i)
			}
		}
		// worker > 0 here: kill(0) would signal this benchmark's own
		// process group.
		signalPID(worker, syscall.SIGKILL)
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if out, err := exec.Command(sockholdBin, "status", "--control", ctlPath).Output(); err == nil &&
				strings.Contains(string(out), "serving true") && !strings.Contains(string(out), fmt.Sprintf("pid %d,", worker)) {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("no worker serving after kill %d", i)
			}
		}
	}
	time.Sleep(time.Second)
	rows = append(rows, row{"after 100 worker SIGKILLs", rssKiB(holder), fds()})
	served, errs := l.finish()
	fmt.Printf("\nholder memory: %d requests served, %d failed (a worker kill can take one accepted connection)\n", served, len(errs))
	fmt.Printf("%-28s %10s %6s\n", "", "RSS", "fds")
	for _, r := range rows {
		fmt.Printf("%-28s %7.1f MiB %6d\n", r.what, mib(r.rss), r.fds)
	}
	b.ReportMetric(mib(rows[len(rows)-1].rss), "holder_MiB")
}
