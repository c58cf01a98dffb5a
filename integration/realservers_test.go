package integration

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Third-party servers and readers, as users run them under sockhold serve.
// Each is restarted 10 times under closed-loop load: no request may fail,
// and a stop must end with exit 0.

var upgradedIn = regexp.MustCompile(`in ([0-9.]+) ms`)

// restartTimesSettled restarts n times with `upgrade --wait` under the running
// load and returns the holder's figure for each (request → new copy
// serving), waiting for 20 more requests after each.
// After each restart it also waits until settle new server processes have
// answered (a server that reports ready before its workers exist has them
// all up then).
func restartTimesSettled(t testing.TB, in *instance, l *load, n, settle int) []time.Duration {
	t.Helper()
	var took []time.Duration
	for i := 0; i < n; i++ {
		before := l.replies()
		code, out, errOut := ctl(t, in, "upgrade", "--wait")
		if code != 0 {
			t.Fatalf("restart %d: exit %d %q %q", i+1, code, out, errOut)
		}
		m := upgradedIn.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("restart %d: no time in %q", i+1, out)
		}
		ms, _ := strconv.ParseFloat(m[1], 64)
		took = append(took, time.Duration(ms*float64(time.Millisecond)))
		l.waitServed(t, 20, 10*time.Second)
		if settle > 0 {
			l.waitNewReplies(t, before, settle, 10*time.Second)
		}
	}
	return took
}

// medianMax summarises restart times.
func medianMax(d []time.Duration) string {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("median %.1f ms, max %.1f ms", float64(s[len(s)/2])/1e6, float64(s[len(s)-1])/1e6)
}

// tenRestartsUnderLoad is the real-server check: closed-loop load on addr,
// 10 restarts, nothing failed, and a stop with exit 0.
func tenRestartsUnderLoad(t testing.TB, in *instance, addr string, clients int, check func(string) error) []time.Duration {
	t.Helper()
	return restartsUnderLoad(t, in, 10, clients, 0, 0, func() func() (string, error) {
		return func() (string, error) { return oneRequest(addr) }
	}, check)
}

// restartsUnderLoad is tenRestartsUnderLoad with n restarts, any client,
// settle as for restartTimesSettled, and resets: how many connections the
// server itself may reset (uwsgi's, see realServers); every other failure
// fails the test.
func restartsUnderLoad(t testing.TB, in *instance, n, clients, settle, resets int, newClient func() func() (string, error), check func(string) error) []time.Duration {
	t.Helper()
	l := startLoadWith(t, clients, newClient, check)
	l.waitServed(t, 20, 20*time.Second)
	took := restartTimesSettled(t, in, l, n, settle)
	served, errs := l.finish()
	t.Logf("%d requests across %d restarts; restart %s", served, n, medianMax(took))
	var other []string
	for _, e := range errs {
		if resets > 0 && strings.Contains(e, "connection reset by peer") {
			resets--
			t.Logf("tolerated, the server's own: %s", e)
			continue
		}
		other = append(other, e)
	}
	if len(other) > 0 {
		t.Fatalf("%d of %d requests failed: %v", len(other), served+len(errs), other[:min(5, len(other))])
	}
	if code := in.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("stop: exit %d, want 0; log:\n%s", code, in.dump())
	}
	return took
}

// libsystemd's own reader: sd_listen_fds_with_names() refuses the whole of
// LISTEN_FDNAMES when one name is not valid for systemd (a ':' in it), so
// the default names must be valid ones; sd_notify() is its readiness.
func TestLibsystemdReadsListenFDNames(t *testing.T) {
	in := start(t, "serve", "--listen", "tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0?name=admin",
		"--ready", "notify", "--", sdNamesBin)
	check := func(reply string) error {
		f := strings.Fields(reply)
		if len(f) != 3 || f[0] != "tcp-127.0.0.1-0" || f[1] != "admin" {
			return fmt.Errorf("reply %q, want the names tcp-127.0.0.1-0 and admin and a PID", reply)
		}
		return nil
	}
	if err := check(mustRoundTrip(t, in.addr(0), "")); err != nil {
		t.Fatal(err)
	}
	tenRestartsUnderLoad(t, in, in.addr(0), 4, check)
}
