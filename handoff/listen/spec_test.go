package listen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseForms(t *testing.T) {
	wd, _ := os.Getwd()
	cases := []struct {
		uri  string
		want Spec
	}{
		{"tcp://:873", Spec{Network: "tcp", Port: 873}},
		{"tcp://127.0.0.1:80", Spec{Network: "tcp", Host: "127.0.0.1", Port: 80}},
		{"tcp6://[::1]:0", Spec{Network: "tcp6", Host: "::1"}},
		{"tcp4://0.0.0.0:8080", Spec{Network: "tcp4", Host: "0.0.0.0", Port: 8080}},
		{"unix:///run/x.sock", Spec{Network: "unix", Path: "/run/x.sock"}},
		{"unix:rel/x.sock", Spec{Network: "unix", Path: filepath.Join(wd, "rel/x.sock")}},
		{"unix:@abstract", Spec{Network: "unix", Path: "@abstract"}},
		{"unix://@abstract", Spec{Network: "unix", Path: "@abstract"}},
		{"fd://3", Spec{Network: "fd", FD: 3}},
		{"fd://web", Spec{Network: "fd", FD: -1, FDName: "web"}},
		{"unix:///run/x.sock?mode=0660&owner=0&group=0", Spec{Network: "unix", Path: "/run/x.sock", Mode: 0o660, HasMode: true, UID: 0, GID: 0}},
	}
	for _, c := range cases {
		got, err := Parse(c.uri)
		if err != nil {
			t.Errorf("%s: %v", c.uri, err)
			continue
		}
		if c.want.FD == 0 && c.want.Network != "fd" {
			c.want.FD = -1
		}
		if !c.want.HasMode && c.want.UID == 0 && !strings.Contains(c.uri, "owner") {
			c.want.UID, c.want.GID = -1, -1
		}
		c.want.URI, c.want.Name = c.uri, DefaultName(c.want)
		if got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.uri, got, c.want)
		}
	}
}

// Every default LISTEN_FDNAMES name is one systemd accepts: libsystemd's
// sd_listen_fds_with_names() rejects the whole variable otherwise.
func TestDefaultNamesAreValidFDNames(t *testing.T) {
	for uri, want := range map[string]string{
		"tcp://127.0.0.1:8080":       "tcp-127.0.0.1-8080",
		"tcp://:873":                 "tcp-873",
		"tcp6://[::1]:80":            "tcp6-__1-80",
		"tcp4://0.0.0.0:0":           "tcp4-0.0.0.0-0",
		"unix:///run/a:b.sock":       "unix-/run/a_b.sock",
		"unix:@abs":                  "unix-@abs",
		"fd://3":                     "fd-3",
		"fd://web":                   "web",
		"tcp://:80?name=web":         "web",
		"unix:///run/caf\u00e9.sock": "unix-/run/caf__.sock",
	} {
		s, err := Parse(uri)
		if err != nil {
			t.Fatalf("%s: %v", uri, err)
		}
		if want != "" && s.Name != want {
			t.Errorf("%s: name %q, want %q", uri, s.Name, want)
		}
		if err := CheckFDName(s.Name); err != nil {
			t.Errorf("%s: default name %q is not valid: %v", uri, s.Name, err)
		}
	}
}

func TestFDNameRules(t *testing.T) {
	for n, ok := range map[string]bool{
		"web": true, "a b": true, "~!@#$%^&*()": true, strings.Repeat("n", 255): true,
		"": false, "a:b": false, "tab\there": false, "caf\u00e9": false, "del\x7f": false, strings.Repeat("n", 256): false,
	} {
		if err := CheckFDName(n); (err == nil) != ok {
			t.Errorf("CheckFDName(%q) = %v, want ok=%v", n, err, ok)
		}
	}
	for _, uri := range []string{"tcp://:80?name=a:b", "tcp://:80?name=", "tcp://:80?name=%09x"} {
		if _, err := Parse(uri); err == nil {
			t.Errorf("Parse(%q) accepted a name systemd refuses", uri)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for uri, want := range map[string]string{
		"":                                  "scheme:address",
		"873":                               "scheme:address",
		"http://x:1":                        "unknown scheme",
		"tcp://x":                           "missing port",
		"tcp://:70000":                      "bad port",
		"unix://relative":                   "absolute path",
		"unix:":                             "scheme:address",
		"unix:@":                            "empty abstract",
		"fd://1":                            "stdin/stdout/stderr",
		"unix:/x?mode=999":                  "mode",
		"unix:/x?owner=no-such-u":           "owner",
		"tcp://:1?mode=0600":                "unix sockets only",
		"unix:@a?mode=0600":                 "abstract",
		"unix:/x?colour=blue":               "unknown option",
		"unix:/" + strings.Repeat("a", 120): "107",
	} {
		_, err := Parse(uri)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", uri, err, want)
		}
	}
}

func TestFromPortFamilies(t *testing.T) {
	for _, c := range []struct {
		ipv4, ipv6 bool
		network    string
	}{{false, false, "tcp"}, {true, false, "tcp4"}, {false, true, "tcp6"}, {true, true, "tcp"}} {
		specs, err := FromPort("873", "", c.ipv4, c.ipv6)
		if err != nil || len(specs) != 1 || specs[0].Network != c.network || specs[0].Port != 873 {
			t.Errorf("ipv4=%v ipv6=%v: %+v %v", c.ipv4, c.ipv6, specs, err)
		}
	}
	if _, err := FromPort("rsync", "", false, false); err == nil {
		t.Error("non-numeric port accepted")
	}
}

func TestTCPBindsWildcardIsOneDualStackSocket(t *testing.T) {
	b, err := tcpBinds(Spec{Network: "tcp"})
	if err != nil || len(b) != 1 || b[0].v6only {
		t.Fatalf("%+v %v", b, err)
	}
	b, _ = tcpBinds(Spec{Network: "tcp6"})
	if len(b) != 1 || !b[0].v6only {
		t.Fatalf("tcp6 wildcard must be IPv6 only: %+v", b)
	}
	b, _ = tcpBinds(Spec{Network: "tcp", Host: "::1"})
	if len(b) != 1 || !b[0].v6only {
		t.Fatalf("a specific IPv6 address is IPv6 only: %+v", b)
	}
	if _, err := tcpBinds(Spec{Network: "tcp6", Host: "127.0.0.1"}); err == nil {
		t.Fatal("tcp6 with an IPv4 address accepted")
	}
}

// A socket file is removed as stale only if no live socket is bound at it:
// one bound and not yet listening (a server starting) refuses connections
// just as a stale file does, and must be left alone.
func TestStaleSocketOnlyIfNothingBound(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a b.sock") // a space: the path is the last, free-form field
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := clearStalePath(path); err == nil || !strings.Contains(err.Error(), "bound by a running process") {
		t.Fatalf("bound, not listening: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the bound socket's file was removed: %v", err)
	}
	unix.Close(fd) // now stale: the file stays, nothing is bound
	if err := clearStalePath(path); err != nil {
		t.Fatalf("stale: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the stale file is still there: %v", err)
	}
}

// A holder resumed from an older binary's state renames listeners that
// were named by their URI, and only those.
func TestRenameFromURI(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{URI: "tcp://127.0.0.1:80", Network: "tcp", Host: "127.0.0.1", Port: 80, Name: "tcp://127.0.0.1:80"}, "tcp-127.0.0.1-80"},
		{Spec{URI: "tcp://:80?name=web", Network: "tcp", Port: 80, Name: "web"}, "web"},
		{Spec{URI: "fd://3", Network: "fd", FD: 3, Name: "mirror"}, "mirror"},
	} {
		s := c.spec
		s.RenameFromURI()
		if s.Name != c.want {
			t.Errorf("%s: %q, want %q", c.spec.URI, s.Name, c.want)
		}
	}
}
