package handoff

import "testing"

func TestParseEinhornLine(t *testing.T) {
	for line, want := range map[string]EinhornMessage{
		// Ruby's Einhorn::Client: YAML.dump, escaped.
		"---%0Acommand: worker:ack%0Apid: 4242%0A\n": {"worker:ack", 4242},
		"---%0A:command: worker:ack%0A:pid: 7%0A":    {"worker:ack", 7},
		"---%0Acommand: \"worker:ack\"%0Apid: 7%0A":  {"worker:ack", 7},
		// JSON clients.
		`{"command":"worker:ack","pid":99}` + "\n": {"worker:ack", 99},
		`{"command":"ehlo","user":"a%25b"}`:        {"ehlo", 0},
	} {
		got, err := ParseEinhornLine(line)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", line, got, err, want)
		}
	}
	for _, bad := range []string{"", "garbage", `{"pid":1}`, "---%0Acommand: worker:ack%0Apid: x%0A"} {
		if _, err := ParseEinhornLine(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestAppEnvEveryDialect(t *testing.T) {
	env := AppEnv([]string{"web", "admin"}, 77, 0, "@n")
	want := []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=web:admin", "EINHORN_FD_COUNT=2",
		"EINHORN_MASTER_PID=77", "EINHORN_CHILD_INDEX=0", "EINHORN_FD_0=3", "EINHORN_FD_1=4",
		"EINHORN_FDS=3 4", "NOTIFY_SOCKET=@n"}
	if len(env) != len(want) {
		t.Fatalf("%q", env)
	}
	for i := range want {
		if env[i] != want[i] {
			t.Errorf("%d: %q, want %q", i, env[i], want[i])
		}
	}
}
