// Package config is the validated settings of one sockhold instance. The
// holder builds it from the command line once; workers receive it as JSON in
// their environment, so a re-executed (or upgraded) worker runs with exactly
// what the holder checked.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/throttle"
)

// WhenFull policies.
const (
	WhenFullQueue  = "queue"
	WhenFullReject = "reject"
)

// OnStop policies.
const (
	OnStopWait  = "wait"
	OnStopTerm  = "term"
	OnStopLeave = "leave"
)

// LoadavgEnv is a test-only setting: a file in /proc/loadavg format read
// instead of /proc/loadavg, so tests can drive --load-average.
const LoadavgEnv = "SOCKHOLD_TEST_LOADAVG"

// Config is everything a holder and its workers need to know.
type Config struct {
	Mode          string         // ModeSpawn or ModeServe
	Serve         *ServeSettings // serve mode only
	Listen        []listen.Spec
	Backlog       int
	Processes     int
	LoadAverage   float64
	LoadavgPath   string
	LoadRecheck   time.Duration
	WhenFull      string
	RejectMessage string
	Command       []string // argv, argv[0] as the user wrote it
	CommandPath   string   // argv[0] resolved to an absolute path
	OnStop        string
	StopTimeout   time.Duration
	KillGrace     time.Duration
	LogFormat     string
	LogLevel      slog.Level

	UpgradeTimeout time.Duration
	Control        string // control socket path
	ControlDerived bool   // Control is the default path, not --control

	RunAs    *handoff.RunAs   // --user/--group for children; nil: sockhold's own
	ChildEnv handoff.ChildEnv // --env, --unset-env
}

// Spawn holds spawn mode's command-line values before validation.
type Spawn struct {
	Port          string
	Listen        []string
	Address       string
	Backlog       int
	IPv4, IPv6    bool
	LoadAverage   float64
	LoadRecheck   time.Duration
	Processes     int
	WhenFull      string
	RejectMessage string
	OnStop        string
	StopTimeout   time.Duration
	KillGrace     time.Duration
	Verbose       int
	LogFormat     string
	Command       []string

	UpgradeTimeout time.Duration
	Control        string // "" = derived from the first listener
	User, Group    string
	Env, UnsetEnv  []string
}

// ErrUsage marks errors in what the user asked for (exit status 2), as
// opposed to failures of the machine (exit status 1).
var ErrUsage = errors.New("usage")

func usage(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, a...)...)
}

// addListen parses --listen URIs after any listeners already set (from
// PORT); with none at all, the sockets a service manager passed in serve.
func (c *Config) addListen(raws []string, inherited []listen.Spec) error {
	for _, raw := range raws {
		sp, err := listen.Parse(raw)
		if err != nil {
			return usage("%v", err)
		}
		c.Listen = append(c.Listen, sp)
	}
	if len(c.Listen) == 0 {
		c.Listen = inherited
	}
	return nil
}

// FromSpawn validates spawn-mode options. inheritedSpecs are sockets passed
// in by a service manager, used when no PORT or --listen names a socket.
func FromSpawn(o Spawn, inheritedSpecs []listen.Spec) (*Config, error) {
	c := &Config{
		Backlog:       o.Backlog,
		Processes:     o.Processes,
		LoadAverage:   o.LoadAverage,
		LoadavgPath:   throttle.DefaultLoadavgPath,
		LoadRecheck:   o.LoadRecheck,
		WhenFull:      o.WhenFull,
		RejectMessage: withNewline(o.RejectMessage),
		OnStop:        o.OnStop,
		StopTimeout:   o.StopTimeout,
		KillGrace:     o.KillGrace,
		LogFormat:     o.LogFormat,
		LogLevel:      LevelFor(o.Verbose),

		UpgradeTimeout: o.UpgradeTimeout,
	}
	if p := os.Getenv(LoadavgEnv); p != "" {
		c.LoadavgPath = p
	}
	switch {
	case o.Processes < 0:
		return nil, usage("--processes %d: want 0 (unlimited) or more", o.Processes)
	case o.LoadAverage < 0:
		return nil, usage("--load-average %v: want a positive number", o.LoadAverage)
	case o.Backlog < 0:
		return nil, usage("--backlog %d: want a positive number", o.Backlog)
	case o.LoadRecheck < 10*time.Millisecond:
		// Each look reads /proc/loadavg, which changes every 5 s.
		return nil, usage("--load-recheck %v: want at least 10ms", o.LoadRecheck)
	case o.UpgradeTimeout <= 0:
		return nil, usage("--upgrade-timeout %v: want a positive duration", o.UpgradeTimeout)
	case o.StopTimeout < 0 || o.KillGrace < 0:
		return nil, usage("--stop-timeout and --kill-grace must not be negative")
	}
	if o.Port != "" {
		specs, err := listen.FromPort(o.Port, o.Address, o.IPv4, o.IPv6)
		if err != nil {
			return nil, usage("%v", err)
		}
		c.Listen = append(c.Listen, specs...)
	} else if o.Address != "" || o.IPv4 || o.IPv6 {
		return nil, usage("--address, --ipv4 and --ipv6 go with PORT; with --listen put the address in the URI")
	}
	if err := c.addListen(o.Listen, inheritedSpecs); err != nil {
		return nil, err
	}
	if err := c.completeCommon(o.Command, o.User, o.Group, o.Control, o.Env, o.UnsetEnv,
		"give PORT, --listen URI", "handler", "sockhold 873 -- rsync --daemon"); err != nil {
		return nil, err
	}
	return c, nil
}

// completeCommon checks what spawn and serve share: something to listen on,
// the command (resolved now, so a typo fails at start), the identity
// children run as, and the control socket's path. what and example word the
// errors for the mode.
func (c *Config) completeCommon(command []string, user, group, control string, env, unsetEnv []string, listenHint, what, example string) error {
	if len(c.Listen) == 0 {
		return usage("nothing to listen on: %s, or start under a service manager that passes LISTEN_FDS", listenHint)
	}
	if len(command) == 0 {
		return usage("no command: put the %s command after --, e.g. %s", what, example)
	}
	if strings.HasPrefix(command[0], "-") {
		return usage("unknown flag %s (the %s command goes after --)", command[0], what)
	}
	path, err := handoff.Resolve(command[0])
	if err != nil {
		return usage("%v", err)
	}
	c.Command, c.CommandPath = command, path
	if c.RunAs, err = handoff.LookupRunAs(user, group); err != nil {
		return usage("%v", err)
	}
	if c.ChildEnv, err = handoff.ParseChildEnv(env, unsetEnv); err != nil {
		return usage("%v", err)
	}
	c.Control = control
	if c.Control == "" {
		c.Control, c.ControlDerived = DefaultControlPath(c.Listen[0]), true
	} else if c.Control, err = filepath.Abs(c.Control); err != nil {
		return usage("--control: %v", err)
	}
	return nil
}

// withNewline ends a reject message with a newline, as line protocols
// (rsync's @ERROR lines among them) expect; empty stays empty.
func withNewline(m string) string {
	if m != "" && !strings.HasSuffix(m, "\n") {
		return m + "\n"
	}
	return m
}

// LevelFor maps -v counts as socket-burst-dampener does: warnings by
// default, -v for info (one line per connection), -vv for debug.
func LevelFor(verbose int) slog.Level {
	return slog.LevelWarn - slog.Level(4*verbose)
}

// SplitPositional separates PORT from CMD. The parser fills port with the
// first positional word and rest with the others, keeping a literal "--"
// that followed PORT. With --listen (or sockets from a service manager) PORT
// is optional, so a first word that was not followed by "--" belongs to CMD.
func SplitPositional(port string, rest []string, haveListen bool) (string, []string) {
	if len(rest) > 0 && rest[0] == "--" {
		return port, rest[1:]
	}
	if haveListen && port != "" {
		return "", append([]string{port}, rest...)
	}
	return port, rest
}

// ServeForward lists the signals passed on to served apps (none in spawn
// mode).
func (c *Config) ServeForward() []int {
	if c.Serve == nil {
		return nil
	}
	return c.Serve.Forward
}

// Encode serialises the config for a worker's environment.
func (c *Config) Encode() string {
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // only plain fields: cannot fail
	}
	return string(b)
}

// Decode reads a config written by Encode.
func Decode(s string) (*Config, error) {
	var c Config
	if err := json.NewDecoder(strings.NewReader(s)).Decode(&c); err != nil {
		return nil, fmt.Errorf("worker config: %v", err)
	}
	return &c, nil
}
