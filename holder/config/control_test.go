package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sockhold/sockhold/handoff/listen"
)

func TestDefaultControlPathNames(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	for uri, want := range map[string]string{
		"tcp://:873":             "tcp-any-873.ctl",
		"tcp://127.0.0.1:80":     "tcp-127.0.0.1-80.ctl",
		"tcp6://[::1]:80":        "tcp6-1-80.ctl",
		"unix:///run/rsync.sock": "unix-run-rsync.sock.ctl",
		"unix:@abstract":         "unix-abstract.ctl",
		"fd://web":               "fd-web.ctl",
	} {
		s, err := listen.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		got := DefaultControlPath(s)
		if got != filepath.Join("/run/user/1000/sockhold", want) {
			t.Errorf("%s: %s, want .../%s", uri, got, want)
		}
	}
	long, _ := listen.Parse("unix:///" + strings.Repeat("d/", 50) + "x.sock")
	if p := DefaultControlPath(long); len(filepath.Base(p)) > 64 {
		t.Errorf("name not bounded: %s", p)
	}
	// The PORT form and tcp://:PORT find the same socket.
	specs, _ := listen.FromPort("873", "", false, false)
	if DefaultControlPath(specs[0]) != filepath.Join("/run/user/1000/sockhold", "tcp-any-873.ctl") {
		t.Error("PORT form derives another name")
	}
}
