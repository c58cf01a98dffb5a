package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff/listen"
)

// Modes.
const (
	ModeSpawn = "" // the zero value: configs written before serve mode existed
	ModeServe = "serve"
)

// Serve holds serve mode's command-line values before validation.
type Serve struct {
	Listen       []string
	FDNames      []string
	Backlog      int
	Ready        string // notify | timer:DURATION
	ReadyTimeout time.Duration
	StopSignal   string
	SuccessExit  []string // exit statuses and signal names that count as a clean stop
	DrainTimeout time.Duration
	NoListenPID  bool
	NonBlocking  bool
	Forward      []string // signal names passed on to the app
	Copies       int
	Restart      string // rolling | fleet
	Capture      bool
	OnDemand     bool
	IdleStop     time.Duration
	Reject       string
	KillGrace    time.Duration
	Verbose      int
	LogFormat    string
	Command      []string

	UpgradeTimeout time.Duration
	Control        string
	User, Group    string
	Env, UnsetEnv  []string
}

// ServeSettings are the serve-mode parts of Config.
type ServeSettings struct {
	ReadyNotify  bool          // readiness is READY=1 on NOTIFY_SOCKET
	ReadyEinhorn bool          // readiness is "worker:ack" on EINHORN_SOCK_PATH
	ReadyAfter   time.Duration // otherwise: ready once the app has run this long
	ReadyTimeout time.Duration
	StopSignal   int
	SuccessCodes []int // --success-exit-status: exit statuses that count as a clean stop
	SuccessSigs  []int // and signals
	DrainTimeout time.Duration
	NoListenPID  bool
	NonBlocking  bool  // the app's sockets are O_NONBLOCK (systemd's NonBlocking=)
	Forward      []int // signals the holder passes on to the current copy
	Copies       int   // copies of the app (-n)
	Fleet        bool  // restart all copies at once instead of one at a time
	Capture      bool  // re-log the apps' output, line by line

	OnDemand      bool          // start on the first connection, stop when idle
	IdleStop      time.Duration // with OnDemand: stop after this long without activity
	RejectMessage string        // with OnDemand: answer for connections that cannot be served
}

// FromServe validates serve-mode options.
func FromServe(o Serve, inheritedSpecs []listen.Spec) (*Config, error) {
	c := &Config{
		Mode:           ModeServe,
		Backlog:        o.Backlog,
		LogFormat:      o.LogFormat,
		LogLevel:       LevelFor(o.Verbose),
		OnStop:         OnStopWait,
		KillGrace:      o.KillGrace,
		UpgradeTimeout: o.UpgradeTimeout,
	}
	s := ServeSettings{ReadyTimeout: o.ReadyTimeout, DrainTimeout: o.DrainTimeout, NoListenPID: o.NoListenPID, NonBlocking: o.NonBlocking}
	switch {
	case o.Ready == "notify":
		s.ReadyNotify = true
	case o.Ready == "einhorn":
		s.ReadyEinhorn = true
	case strings.HasPrefix(o.Ready, "timer:"):
		d, err := time.ParseDuration(strings.TrimPrefix(o.Ready, "timer:"))
		if err != nil || d < 0 {
			return nil, usage("--ready %q: want notify, einhorn or timer:DURATION (timer:1s)", o.Ready)
		}
		s.ReadyAfter = d
	default:
		return nil, usage("--ready %q: want notify, einhorn or timer:DURATION (timer:1s)", o.Ready)
	}
	sig := unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(o.StopSignal), "SIG"))
	if sig == 0 {
		return nil, usage("--stop-signal %q: not a signal name (TERM, QUIT, USR2, INT)", o.StopSignal)
	}
	s.StopSignal = int(sig)
	for _, v := range o.SuccessExit {
		if n, err := strconv.Atoi(v); err == nil {
			if n < 0 || n > 255 {
				return nil, usage("--success-exit-status %d: an exit status is 0 to 255", n)
			}
			s.SuccessCodes = append(s.SuccessCodes, n)
			continue
		}
		sig := unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(v), "SIG"))
		if sig == 0 {
			return nil, usage("--success-exit-status %q: want an exit status (30) or a signal name (USR1)", v)
		}
		s.SuccessSigs = append(s.SuccessSigs, int(sig))
	}
	if o.Copies < 1 || o.Copies > 256 {
		return nil, usage("--copies %d: want 1 to 256", o.Copies)
	}
	s.Copies, s.Fleet, s.Capture = o.Copies, o.Restart == "fleet", o.Capture
	if o.OnDemand && o.IdleStop < 100*time.Millisecond {
		// Activity is looked at every quarter of it, at most every second.
		return nil, usage("--idle-stop %v: want at least 100ms", o.IdleStop)
	}
	s.OnDemand, s.IdleStop = o.OnDemand, o.IdleStop
	s.RejectMessage = withNewline(o.Reject)
	for _, name := range o.Forward {
		n := unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(name)), "SIG"))
		switch n {
		case 0:
			return nil, usage("--forward-signals: %q is not a signal name", name)
		case unix.SIGHUP, unix.SIGTERM, unix.SIGINT, unix.SIGCHLD, unix.SIGKILL, unix.SIGSTOP, unix.SIGPIPE:
			return nil, usage("--forward-signals: %s is sockhold's own (HUP restarts, TERM/INT stop)", unix.SignalName(n))
		case unix.SIGURG:
			// The Go runtime preempts goroutines with SIGURG: the holder
			// receives hundreds it never sent, and would pass them on.
			return nil, usage("--forward-signals: SIGURG cannot be forwarded (Go uses it to preempt goroutines)")
		}
		s.Forward = append(s.Forward, int(n))
	}
	switch {
	case o.ReadyTimeout < 10*time.Millisecond:
		return nil, usage("--ready-timeout %v: want at least 10ms", o.ReadyTimeout)
	case o.DrainTimeout < 0 || o.KillGrace < 0:
		return nil, usage("--drain-timeout and --kill-grace must not be negative")
	case o.UpgradeTimeout <= 0:
		return nil, usage("--upgrade-timeout %v: want a positive duration", o.UpgradeTimeout)
	}
	// The upgrade covers the new app getting ready: give it room.
	if c.UpgradeTimeout < o.ReadyTimeout+5*time.Second {
		c.UpgradeTimeout = o.ReadyTimeout + 5*time.Second
	}
	c.StopTimeout = o.DrainTimeout
	c.Serve = &s
	if err := c.addListen(o.Listen, inheritedSpecs); err != nil {
		return nil, err
	}
	if len(o.FDNames) > len(c.Listen) {
		return nil, usage("%d --fd-name for %d listeners", len(o.FDNames), len(c.Listen))
	}
	for i, n := range o.FDNames {
		if err := listen.CheckFDName(n); err != nil {
			return nil, usage("--fd-name: %v", err)
		}
		c.Listen[i].Name, c.Listen[i].NameSet = n, true
	}
	if err := c.completeCommon(o.Command, o.User, o.Group, o.Control, o.Env, o.UnsetEnv,
		"give --listen URI", "server", "sockhold serve --listen tcp://:8080 -- ./app"); err != nil {
		return nil, err
	}
	return c, nil
}

// String names the readiness rule for logs.
func (s *ServeSettings) String() string {
	switch {
	case s.ReadyNotify:
		return "notify"
	case s.ReadyEinhorn:
		return "einhorn"
	}
	return fmt.Sprintf("timer:%v", s.ReadyAfter)
}
