package integration

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// --env and --unset-env change every child's environment, a value with a
// comma or a ';' intact (NGINX="3;" needs no wrapper).
func TestEnvAndUnsetEnvReachChildren(t *testing.T) {
	in := startWith(t, startOpts{env: []string{"DROPME=1", "KEEP=2"}}, "--listen", "tcp://127.0.0.1:0",
		"--env", "NGINX=3;", "--env", "LIST=a,b", "--env", "KEEP=3", "--unset-env", "DROPME", "--", "/usr/bin/env")
	env := parseEnv(mustRoundTrip(t, in.addr(0), ""))
	for k, want := range map[string]string{"NGINX": "3;", "LIST": "a,b", "KEEP": "3"} {
		if env[k] != want {
			t.Errorf("%s=%q, want %q", k, env[k], want)
		}
	}
	if _, ok := env["DROPME"]; ok {
		t.Errorf("DROPME was passed on")
	}
}

// A child running as another user (--user) starts in a directory it can
// read (its home, or /), and does not get sockhold's own session: its
// runtime directory, D-Bus session and SSH agent are another user's.
func TestChildAsAnotherUserGetsItsOwnSession(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root") // CI runs as root; --user needs it
	}
	os.Chmod(binDir, 0o755)
	defer os.Chmod(binDir, 0o700)
	in := startWith(t, startOpts{env: []string{"XDG_RUNTIME_DIR=/run/user/0", "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/0/bus", "SSH_AUTH_SOCK=/tmp/agent"}},
		"--listen", "tcp://127.0.0.1:0", "--user", "nobody", "--", "/bin/sh", "-c", `echo "cwd=$(pwd)"; env`)
	out := mustRoundTrip(t, in.addr(0), "")
	env := parseEnv(out)
	if !strings.Contains(out, "cwd=/\n") {
		t.Errorf("nobody (home /nonexistent) started in %q, want /", strings.SplitN(out, "\n", 2)[0])
	}
	for _, k := range []string{"XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "SSH_AUTH_SOCK"} {
		if v, ok := env[k]; ok {
			t.Errorf("%s=%s passed to a child of another user", k, v)
		}
	}
	if env["HOME"] != "/nonexistent" || env["USER"] != "nobody" {
		t.Errorf("HOME=%q USER=%q", env["HOME"], env["USER"])
	}
}

// A --control path may hold '?' and '%': it is a path, not a URI.
func TestControlPathIsAPath(t *testing.T) {
	dir, err := os.MkdirTemp("", "shq")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := dir + "/ctl?x=%41"
	in := start(t, "--listen", "tcp://127.0.0.1:0", "--control", path, "--", "/bin/true")
	if code, out, errOut := ctl(t, in, "status"); code != 0 || !strings.Contains(out, "serving") {
		t.Fatalf("status through %s: %d %q %q", path, code, out, errOut)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("control socket not at %s: %v", path, err)
	}
}

// sockhold run by an ordinary user with --user naming that very user (as a
// unit file shared between root and user instances does): children start,
// as that user, rather than every start failing with EPERM.
func TestUserEqualToOwnIdentityAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start sockhold as another user") // CI runs as root
	}
	dir, err := os.MkdirTemp("", "shn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	os.Chmod(binDir, 0o755)
	defer os.Chmod(binDir, 0o700)
	in := startWith(t, startOpts{argv0: `exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"`},
		"--listen", "tcp://127.0.0.1:0", "--control", dir+"/ctl", "--user", "nobody", "--", "/usr/bin/id", "-u")
	if out := mustRoundTrip(t, in.addr(0), ""); out != "65534\n" {
		t.Fatalf("handler answered %q, want uid 65534", out)
	}
}

// --success-exit-status, as systemd's SuccessExitStatus=: an app that ends
// with a listed status (uwsgi exits 30 without --master) stops cleanly.
func TestSuccessExitStatus(t *testing.T) {
	app := []string{"--", "/bin/sh", "-c", `trap "exit 30" TERM; while :; do sleep 0.05; done`}
	for _, c := range []struct {
		flags []string
		want  int
	}{{nil, 30}, {[]string{"--success-exit-status", "30"}, 0}, {[]string{"--success-exit-status", "2,USR1"}, 30}} {
		args := append(append([]string{"serve", "--listen", "tcp://127.0.0.1:0", "--ready", "timer:100ms"}, c.flags...), app...)
		in := start(t, args...)
		if code := in.stop(syscall.SIGTERM, 10*time.Second); code != c.want {
			t.Errorf("%v: exit %d, want %d", c.flags, code, c.want)
		}
	}
}
