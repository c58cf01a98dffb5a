package listenpid

import (
	"slices"
	"strconv"
	"testing"
)

func TestEnvReplacesListenPIDAndDropsTheMarker(t *testing.T) {
	in := []string{"A=1", Env + "=1", "LISTEN_PID=99", "LISTEN_FDS=2", "LISTEN_PIDX=keep"}
	got := env(in, 4242)
	want := []string{"A=1", "LISTEN_FDS=2", "LISTEN_PIDX=keep", "LISTEN_PID=4242"}
	if !slices.Equal(got, want) {
		t.Fatalf("env = %q, want %q", got, want)
	}
}

func TestItoa(t *testing.T) {
	for _, n := range []int{0, 7, 10, 32768, 4194304, 1<<31 - 1} {
		if got := itoa(n); got != strconv.Itoa(n) {
			t.Errorf("itoa(%d) = %q", n, got)
		}
	}
}

func TestArgsPutsTheShimFirst(t *testing.T) {
	path, argv := Args("/usr/bin/sockhold", "/srv/app", []string{"app", "-x", ""})
	want := []string{"/usr/bin/sockhold", Arg, "/srv/app", "app", "-x", ""}
	if path != "/usr/bin/sockhold" || !slices.Equal(argv, want) {
		t.Fatalf("Args = %q %q", path, argv)
	}
}
