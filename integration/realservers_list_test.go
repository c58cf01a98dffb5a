package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// realServer is a third-party server as the README's recipe runs it.
type realServer struct {
	name      string
	keepAlive bool // clients keep their connections open between requests
	// settle: after a restart, this many new processes answer before the
	// next step (gunicorn says READY=1 before its workers exist, and loses
	// a SIGTERM that reaches a worker still booting).
	settle int
	// resets: connections the server may reset itself per 10 restarts.
	// With uwsgi one connection was reset in 2 of 13 runs of 10 restarts,
	// while an old copy went through its graceful reload, which signals
	// every worker at once, busy or not (uwsgi issue 1375). The other
	// servers, on the same sockets and the same sockhold, lost none.
	resets int
	// args is sockhold's command line for it on 127.0.0.1:port; dir is a
	// scratch directory.
	args func(t testing.TB, port int, dir string) []string
}

func testdata(name string) string {
	p, _ := filepath.Abs(filepath.Join("testdata", "realservers", name))
	return p
}

// fromTemplate writes testdata/realservers/NAME.in with PORT and DIR filled.
func fromTemplate(t testing.TB, name string, port int, dir string) string {
	b, err := os.ReadFile(testdata(name + ".in"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer("PORT", fmt.Sprint(port), "DIR", dir).Replace(string(b))
	out := filepath.Join(dir, name)
	if err := os.WriteFile(out, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

var realServers = []realServer{
	{name: "gunicorn", settle: 2, args: func(t testing.TB, port int, dir string) []string {
		return []string{"--ready", "notify", "--", "gunicorn", "--chdir", testdata(""), "--workers", "2", "wsgiapp:app"}
	}},
	{name: "puma", args: func(t testing.TB, port int, dir string) []string {
		return []string{"--ready", "notify", "--", "puma", "-C", fromTemplate(t, "puma.rb", port, dir), testdata("config.ru")}
	}},
	{name: "uwsgi", resets: 1, args: func(t testing.TB, port int, dir string) []string {
		// uwsgi stops gracefully on SIGHUP only with --exit-on-reload
		// (SIGTERM is its brutal reload). Its READY=1 comes before its
		// workers are spawned, and a SIGHUP then leaves the one being
		// spawned unsignalled (the master waits its 60 s of mercy): a
		// timer that covers the spawn is the safer readiness.
		return []string{"--ready", "timer:1s", "--stop-signal", "HUP", "--", "uwsgi", "--plugin", "python3", "--protocol", "http",
			"--wsgi-file", testdata("uwsgiapp.py"), "--master", "--processes", "2", "--exit-on-reload", "--die-on-term"}
	}},
	{name: "node", args: func(t testing.TB, port int, dir string) []string {
		return []string{"--ready", "timer:300ms", "--", "node", testdata("nodeapp.js")}
	}},
	{name: "nginx", keepAlive: true, args: func(t testing.TB, port int, dir string) []string {
		conf := fromTemplate(t, "nginx.conf", port, dir)
		// NGINX="3;" is how nginx inherits sockets; each master writes a
		// PID file of its own, since two run at once during a restart.
		return []string{"--nonblocking", "--ready", "timer:500ms", "--stop-signal", "QUIT", "--", "/bin/sh", "-c",
			`NGINX="3;" exec /usr/sbin/nginx -p "$0" -c "$1" -g "pid $0/nginx.$$.pid;"`, dir, conf}
	}},
}

// startRealServer runs one under sockhold serve on a free port.
func startRealServer(t testing.TB, s realServer) (*instance, string) {
	t.Helper()
	port := freePortTB(t)
	dir, err := os.MkdirTemp("", "shrs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	args := append([]string{"serve", "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port)}, s.args(t, port, dir)...)
	in := startWith(t, startOpts{verbosity: "-v"}, args...)
	return in, fmt.Sprintf("http://127.0.0.1:%d/", port)
}

// httpClients makes closed-loop HTTP clients: each its own connection,
// kept alive between requests or not.
func httpClients(url string, keepAlive bool) func() func() (string, error) {
	return func() func() (string, error) {
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1}}
		return func() (string, error) {
			resp, err := c.Get(url)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return "", err
			}
			if resp.StatusCode != 200 {
				return "", fmt.Errorf("status %d: %q", resp.StatusCode, b)
			}
			return string(b), nil
		}
	}
}

// servedBy checks a reply is "NAME PID\n".
func servedBy(name string) func(string) error {
	return func(reply string) error {
		if f := strings.Fields(reply); len(f) != 2 || f[0] != name {
			return fmt.Errorf("reply %q, want %q and a PID", reply, name)
		}
		return nil
	}
}

// Each real server restarts 10 times under closed-loop load with no
// request failed, and stops with exit 0.
func TestRealServersRestartUnderLoad(t *testing.T) {
	for _, s := range realServers {
		t.Run(s.name, func(t *testing.T) {
			in, url := startRealServer(t, s)
			restartsUnderLoad(t, in, 10, 4, s.settle, s.resets, httpClients(url, s.keepAlive), servedBy(s.name))
		})
	}
}

// BenchmarkRealServerRestart prints each real server's restart time
// (upgrade --wait: request to new copy serving) over 10 restarts under
// 4-client load.
//
//	go test -run '^$' -bench RealServerRestart -benchtime 1x ./integration/
func BenchmarkRealServerRestart(b *testing.B) {
	var rows []string
	for _, s := range realServers {
		in, url := startRealServer(b, s)
		took := restartsUnderLoad(b, in, 10, 4, s.settle, s.resets, httpClients(url, s.keepAlive), servedBy(s.name))
		rows = append(rows, fmt.Sprintf("%-10s %s", s.name, medianMax(took)))
	}
	fmt.Printf("\nreal servers, 10 restarts each under 4 closed-loop clients, 0 failed:\n%s\n", strings.Join(rows, "\n"))
}
