package handoff

import (
	"reflect"
	"strings"
	"testing"
)

func TestChildEnvApply(t *testing.T) {
	c, err := ParseChildEnv([]string{"NGINX=3;", "PATH=/bin", "EMPTY="}, []string{"HOME", "GONE"})
	if err != nil {
		t.Fatal(err)
	}
	got := c.Apply([]string{"PATH=/usr/bin", "HOME=/root", "TERM=xterm", "PATH=/dup"})
	want := []string{"TERM=xterm", "NGINX=3;", "PATH=/bin", "EMPTY="}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestChildEnvRefuses(t *testing.T) {
	for _, c := range []struct {
		set, unset []string
		want       string
	}{
		{[]string{"NOVALUE"}, nil, "NAME=VALUE"},
		{[]string{"1X=y"}, nil, "letters, digits"},
		{[]string{"A-B=y"}, nil, "letters, digits"},
		{[]string{"LISTEN_FDS=3"}, nil, "LISTEN_*"},
		{[]string{"NOTIFY_SOCKET=/x"}, nil, "sets that variable itself"},
		{[]string{"X=a\x00b"}, nil, "NUL"},
		{nil, []string{"EINHORN_FDS"}, "EINHORN_*"},
		{nil, []string{""}, "letters, digits"},
	} {
		if _, err := ParseChildEnv(c.set, c.unset); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q %q: %v, want an error with %q", c.set, c.unset, err, c.want)
		}
	}
}
