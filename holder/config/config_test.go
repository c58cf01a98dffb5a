package config

import (
	"errors"
	"log/slog"
	"reflect"
	"testing"
	"time"
)

func TestSplitPositional(t *testing.T) {
	cases := []struct {
		port       string
		rest       []string
		haveListen bool
		wantPort   string
		wantCmd    []string
	}{
		// sockhold 873 -- rsync --daemon
		{"873", []string{"--", "rsync", "--daemon"}, false, "873", []string{"rsync", "--daemon"}},
		// sockhold 873 rsync --daemon
		{"873", []string{"rsync", "--daemon"}, false, "873", []string{"rsync", "--daemon"}},
		// sockhold --listen U -- echo hi (the parser puts echo in port)
		{"echo", []string{"hi"}, true, "", []string{"echo", "hi"}},
		// sockhold --listen U 873 -- echo: PORT and --listen together
		{"873", []string{"--", "echo"}, true, "873", []string{"echo"}},
	}
	for _, c := range cases {
		port, cmd := SplitPositional(c.port, c.rest, c.haveListen)
		if port != c.wantPort || !reflect.DeepEqual(cmd, c.wantCmd) {
			t.Errorf("SplitPositional(%q, %q, %v) = %q %q", c.port, c.rest, c.haveListen, port, cmd)
		}
	}
}

func TestVerbosityAsSocketBurstDampener(t *testing.T) {
	if LevelFor(0) != slog.LevelWarn || LevelFor(1) != slog.LevelInfo || LevelFor(2) != slog.LevelDebug {
		t.Fatal(LevelFor(0), LevelFor(1), LevelFor(2))
	}
}

func valid() Spawn {
	return Spawn{Port: "873", Processes: 1, LoadRecheck: time.Second, WhenFull: WhenFullQueue,
		OnStop: OnStopWait, Command: []string{"true"}, UpgradeTimeout: time.Second}
}

func TestFromSpawnUsageErrors(t *testing.T) {
	for name, mutate := range map[string]func(*Spawn){
		"negative processes": func(s *Spawn) { s.Processes = -1 },
		"negative load":      func(s *Spawn) { s.LoadAverage = -1 },
		"address without port": func(s *Spawn) {
			s.Port, s.Listen, s.Address = "", []string{"tcp://:1"}, "127.0.0.1"
		},
		"no command":   func(s *Spawn) { s.Command = nil },
		"flag as cmd":  func(s *Spawn) { s.Command = []string{"--bogus"} },
		"missing cmd":  func(s *Spawn) { s.Command = []string{"no-such-command-xyz"} },
		"nothing":      func(s *Spawn) { s.Port = "" },
		"zero recheck": func(s *Spawn) { s.LoadRecheck = 0 },
		"zero upgrade": func(s *Spawn) { s.UpgradeTimeout = 0 },
	} {
		s := valid()
		mutate(&s)
		if _, err := FromSpawn(s, nil); !errors.Is(err, ErrUsage) {
			t.Errorf("%s: %v, want a usage error", name, err)
		}
	}
	c, err := FromSpawn(valid(), nil)
	if err != nil || c.CommandPath == "" || c.CommandPath[0] != '/' {
		t.Fatalf("valid config: %+v %v", c, err)
	}
	back, err := Decode(c.Encode())
	if err != nil || !reflect.DeepEqual(back, c) {
		t.Fatalf("config does not survive the trip to the worker: %+v %v", back, err)
	}
}
