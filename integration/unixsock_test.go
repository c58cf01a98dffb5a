package integration

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The socket file gets the requested mode, is served, and is removed when
// sockhold stops.
func TestUnixSocketModeAndRemoval(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "rsync.sock")
	in := start(t, "--listen", "unix://"+sock+"?mode=0640", "--", handlerBin, "echo", "unix")
	st, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&fs.ModeSocket == 0 || st.Mode().Perm() != 0o640 {
		t.Fatalf("socket file mode %v, want socket 0640", st.Mode())
	}
	if got := mustRoundTrip(t, sock, ""); got != "unix\n" {
		t.Fatalf("read %q", got)
	}
	if code := in.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file left behind: %v", err)
	}
}

// A relative unix: path works, relative to sockhold's working directory.
func TestUnixRelativePath(t *testing.T) {
	dir := t.TempDir()
	wd, _ := os.Getwd()
	os.Chdir(dir)
	defer os.Chdir(wd)
	in := start(t, "--listen", "unix:rel.sock", "--", handlerBin, "echo", "rel")
	if got := mustRoundTrip(t, filepath.Join(dir, "rel.sock"), ""); got != "rel\n" {
		t.Fatalf("read %q (addrs %v)", got, in.addrs)
	}
}

// A stale socket (its server died without removing it) is replaced.
func TestUnixStaleSocketReplaced(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	in := start(t, "--listen", "unix://"+sock, "--", handlerBin, "echo", "fresh")
	if got := mustRoundTrip(t, in.addr(0), ""); got != "fresh\n" {
		t.Fatalf("read %q", got)
	}
}

// A socket something still answers on is in use: refused, left alone.
func TestUnixLiveSocketRefused(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "live.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	code, lines := runToExit(t, "--listen", "unix://"+sock, "--", handlerBin, "echo")
	if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "in use") {
		t.Fatalf("exit %d, stderr %q", code, lines)
	}
	if c, err := net.Dial("unix", sock); err != nil {
		t.Fatalf("the live socket was disturbed: %v", err)
	} else {
		c.Close()
	}
}

// A regular file at the path is refused and left exactly as it was.
func TestUnixRegularFileRefusedAndKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "precious")
	os.WriteFile(path, []byte("do not delete"), 0o600)
	code, lines := runToExit(t, "--listen", "unix://"+path, "--", handlerBin, "echo")
	if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "not a socket") {
		t.Fatalf("exit %d, stderr %q", code, lines)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "do not delete" {
		t.Fatalf("file changed: %q %v", b, err)
	}
}

// An abstract socket needs no file at all.
func TestUnixAbstractSocket(t *testing.T) {
	// The abstract namespace is per network namespace, not per directory:
	// the PID keeps two test runs on one machine apart.
	name := fmt.Sprintf("@sockhold-test-%d-%s", os.Getpid(), filepath.Base(t.TempDir()))
	in := start(t, "--listen", "unix:"+name, "--", handlerBin, "echo", "abstract")
	if got := mustRoundTrip(t, in.addr(0), ""); got != "abstract\n" {
		t.Fatalf("read %q", got)
	}
}
