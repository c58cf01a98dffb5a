// Package integration drives the real sockhold binary against real child
// processes over loopback and unix sockets. Tests synchronise on sockhold's
// own JSON log events (listening, serving, START, EXIT, FAIL), never on sleeps.
package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binDir      string
	sockholdBin string // version it-1
	sockholdB   string // the same code stamped it-2, for upgrades
	sockholdOld string // a sockhold that knows no holder state format: stands for an older release
	rogueBin    string // a "worker" that tells tableflip it is ready and never links
	handlerBin  string
	fdsBin      string // lists its descriptors; C, so no runtime adds any
	appBin      string // a long-running server for serve mode
	fdAppBin    string // a served app that lists its descriptors (C)
	sdNamesBin  string // a served app reading LISTEN_FDNAMES through libsystemd (C)
	nbAppBin    string // a served app that makes its listener non-blocking itself (C)
)

func TestMain(m *testing.M) {
	// A race-detector build sleeps a second at exit by default (to let
	// other goroutines report); every sockhold process the tests start
	// exits promptly instead, as a production build does.
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	dir, err := os.MkdirTemp("", "sockhold-it-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	sockholdBin = filepath.Join(dir, "sockhold")
	sockholdB = filepath.Join(dir, "sockhold-b")
	sockholdOld = filepath.Join(dir, "sockhold-old")
	rogueBin = filepath.Join(dir, "testrogue")
	handlerBin = filepath.Join(dir, "testhandler")
	fdsBin = filepath.Join(dir, "fds")
	appBin = filepath.Join(dir, "testapp")
	fdAppBin = filepath.Join(dir, "fdapp")
	sdNamesBin = filepath.Join(dir, "sdnames")
	nbAppBin = filepath.Join(dir, "nbapp")
	// When the tests run under -race, so does the daemon they drive.
	args := []string{"build", "-o", sockholdBin, "-ldflags", "-X main.version=it-1"}
	if raceEnabled {
		args = append(args, "-race")
	}
	argsB := []string{"build", "-o", sockholdB, "-ldflags", "-X main.version=it-2"}
	argsOld := []string{"build", "-o", sockholdOld, "-ldflags", "-X main.version=it-old -X github.com/sockhold/sockhold/holder.knownFormat=0"}
	if raceEnabled {
		argsB = append(argsB, "-race")
		argsOld = append(argsOld, "-race")
	}
	for _, b := range [][]string{
		append(args, "../cmd/sockhold"),
		append(argsB, "../cmd/sockhold"),
		append(argsOld, "../cmd/sockhold"),
		{"build", "-o", rogueBin, "./testrogue"},
		{"build", "-o", handlerBin, "./testhandler"},
		{"cc", "-O2", "-o", fdsBin, "testdata/fds.c"},
		{"build", "-o", appBin, "./testapp"},
		{"cc", "-O2", "-o", fdAppBin, "testdata/fdapp.c"},
		{"cc", "-O2", "-o", sdNamesBin, "testdata/sdnames.c", "-lsystemd"},
		{"cc", "-O2", "-o", nbAppBin, "testdata/nbapp.c"},
	} {
		tool := "go"
		if b[0] == "cc" {
			tool, b = "cc", b[1:]
		}
		cmd := exec.Command(tool, b...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if !raceEnabled {
			// As the README builds it: static, no libc mapped. (The race
			// detector needs cgo.)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build failed:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// record is one JSON log line of sockhold.
type record map[string]any

func (r record) str(k string) string {
	v, ok := r[k]
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

func (r record) int(k string) int {
	f, _ := r[k].(float64)
	return int(f)
}

// instance is one running sockhold holder.
type instance struct {
	t     testing.TB
	cmd   *exec.Cmd
	mu    sync.Mutex
	recs  []record
	cond  *sync.Cond
	exit  chan struct{}
	state *os.ProcessState
	addrs []string
	ctl   string
}

type startOpts struct {
	env        []string
	extraFiles []*os.File
	argv0      string // run through this wrapper (e.g. sh -c) instead of the binary directly
	noControl  bool   // leave --control to its default
	exe        string // run this sockhold binary (default sockholdBin)
	verbosity  string // default -vv
}

// controlPath is a private control socket path, short enough for sun_path.
func controlPath(t testing.TB) string {
	dir, err := os.MkdirTemp("", "shc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "ctl")
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

// start runs sockhold with args (plus JSON debug logging) and waits until it
// serves. The holder is stopped, and must exit, when the test ends.
func start(t testing.TB, args ...string) *instance {
	return startWith(t, startOpts{}, args...)
}

func startWith(t testing.TB, o startOpts, args ...string) *instance {
	t.Helper()
	in := launch(t, o, args...)
	in.waitFor(10*time.Second, func(r record) bool { return r.str("msg") == "serving" })
	for _, r := range in.all(func(r record) bool { return r.str("msg") == "listening" }) {
		in.addrs = append(in.addrs, r.str("addr"))
	}
	in.ctl = in.waitFor(0, msgIs("holder started")).str("control")
	return in
}

// launch starts sockhold without waiting for it to serve.
func launch(t testing.TB, o startOpts, args ...string) *instance {
	t.Helper()
	verbosity := o.verbosity
	if verbosity == "" {
		verbosity = "-vv"
	}
	flags := []string{"--log-format", "json", verbosity}
	if !hasFlag(args, "--control") && !o.noControl {
		flags = append(flags, "--control", controlPath(t))
	}
	// Flags go after a subcommand (serve), or first for the default one.
	var full []string
	if len(args) > 0 && args[0] == "serve" {
		full = append(append([]string{"serve"}, flags...), args[1:]...)
	} else {
		full = append(flags, args...)
	}
	exe := o.exe
	if exe == "" {
		exe = sockholdBin
	}
	var cmd *exec.Cmd
	if o.argv0 != "" {
		cmd = exec.Command("sh", append([]string{"-c", o.argv0, "sh", exe}, full...)...)
	} else {
		cmd = exec.Command(exe, full...)
	}
	cmd.Env = append(os.Environ(), o.env...)
	cmd.ExtraFiles = o.extraFiles
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{t: t, cmd: cmd, exit: make(chan struct{})}
	in.cond = sync.NewCond(&in.mu)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logsDone := make(chan struct{})
	go in.readLogs(stderr, logsDone)
	go in.waitExit(logsDone)
	t.Cleanup(in.cleanup)
	return in
}

func (in *instance) readLogs(r io.Reader, done chan<- struct{}) {
	defer close(done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var rec record
		if json.Unmarshal([]byte(line), &rec) != nil {
			rec = record{"msg": "raw", "line": line}
		}
		in.mu.Lock()
		in.recs = append(in.recs, rec)
		in.cond.Broadcast()
		in.mu.Unlock()
	}
}

// waitExit records the holder's exit. Its last log lines are read first;
// a handler left running (--on-stop leave) holds stderr open, so that wait
// is bounded.
func (in *instance) waitExit(logsDone <-chan struct{}) {
	state, _ := in.cmd.Process.Wait()
	select {
	case <-logsDone:
	case <-time.After(2 * time.Second):
	}
	in.mu.Lock()
	in.state = state
	close(in.exit)
	in.cond.Broadcast()
	in.mu.Unlock()
}

// waitFor blocks until a log record matches, and returns it.
func (in *instance) waitFor(timeout time.Duration, match func(record) bool) record {
	in.t.Helper()
	r, ok := in.waitForOK(timeout, 0, match)
	if !ok {
		in.t.Fatalf("no matching log record within %v; log:\n%s", timeout, in.dump())
	}
	return r
}

// waitForN blocks until n records match.
func (in *instance) waitForN(timeout time.Duration, n int, match func(record) bool) []record {
	in.t.Helper()
	if _, ok := in.waitForOK(timeout, n-1, match); !ok {
		in.t.Fatalf("fewer than %d matching log records within %v; log:\n%s", n, timeout, in.dump())
	}
	return in.all(match)
}

func (in *instance) waitForOK(timeout time.Duration, skip int, match func(record) bool) (record, bool) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { in.mu.Lock(); in.cond.Broadcast(); in.mu.Unlock() })
	defer timer.Stop()
	in.mu.Lock()
	defer in.mu.Unlock()
	// Each wake-up looks only at the records that arrived since the last:
	// a long test logs tens of thousands.
	next, seen := 0, 0
	for {
		for ; next < len(in.recs); next++ {
			if match(in.recs[next]) {
				if seen == skip {
					return in.recs[next], true
				}
				seen++
			}
		}
		if time.Now().After(deadline) {
			return nil, false
		}
		select {
		case <-in.exit:
			return nil, false
		default:
		}
		in.cond.Wait()
	}
}

func (in *instance) all(match func(record) bool) []record {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []record
	for _, r := range in.recs {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

func (in *instance) count(match func(record) bool) int { return len(in.all(match)) }

func (in *instance) dump() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var b strings.Builder
	for _, r := range in.recs {
		j, _ := json.Marshal(r)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func msgIs(m string) func(record) bool { return func(r record) bool { return r.str("msg") == m } }

// workerPID is the PID of the newest worker that reported serving.
func (in *instance) workerPID() int {
	rs := in.all(msgIs("serving"))
	return rs[len(rs)-1].int("worker")
}

func (in *instance) pid() int { return in.cmd.Process.Pid }

// stop sends sig and waits for the holder to exit; it returns the status.
func (in *instance) stop(sig syscall.Signal, timeout time.Duration) int {
	in.t.Helper()
	in.cmd.Process.Signal(sig)
	select {
	case <-in.exit:
	case <-time.After(timeout):
		in.t.Fatalf("sockhold did not exit within %v after %v; log:\n%s", timeout, sig, in.dump())
	}
	return in.state.ExitCode()
}

func (in *instance) exited() bool {
	select {
	case <-in.exit:
		return true
	default:
		return false
	}
}

// cleanup stops a holder the test left running: gently, then by PID.
func (in *instance) cleanup() {
	// A failure anywhere in the test is diagnosed from sockhold's own log.
	defer func() {
		if in.t.Failed() {
			in.t.Logf("sockhold log:\n%s", in.dump())
		}
	}()
	if in.exited() {
		return
	}
	// A failed test may leave clients (and so handlers) behind: the second
	// SIGTERM hurries the stop so handlers get SIGTERM too.
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.exit:
		return
	case <-time.After(3 * time.Second):
		in.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-in.exit:
	case <-time.After(15 * time.Second):
		in.cmd.Process.Kill()
		<-in.exit
		in.t.Errorf("sockhold needed SIGKILL at cleanup; log:\n%s", in.dump())
	}
}

// addr returns the listening address the holder logged (index i).
func (in *instance) addr(i int) string { return in.addrs[i] }

// network is "unix" for a path, "tcp" otherwise.
func network(addr string) string {
	if strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "@") {
		return "unix"
	}
	return "tcp"
}

// roundTrip connects, optionally sends input, and reads until EOF.
func roundTrip(t *testing.T, addr, input string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout(network(addr), addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if input != "" {
		if _, err := io.WriteString(c, input); err != nil {
			return "", err
		}
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func mustRoundTrip(t *testing.T, addr, input string) string {
	t.Helper()
	out, err := roundTrip(t, addr, input)
	if err != nil {
		t.Fatalf("round trip to %s: %v", addr, err)
	}
	return out
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// fdCount counts the open descriptors of pid.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// childrenOf lists the children of pid (every thread).
func childrenOf(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, w := range strings.Fields(string(b)) {
			var n int
			fmt.Sscan(w, &n)
			out = append(out, n)
		}
	}
	return out
}

// signalPID is kill(2) for one process only: a PID of 0 or less, which a
// lookup that found nothing would give, would signal this test's own
// process group (or every process), so it is refused.
func signalPID(pid int, sig syscall.Signal) error {
	if pid <= 0 {
		return fmt.Errorf("refusing to signal PID %d", pid)
	}
	return syscall.Kill(pid, sig)
}
