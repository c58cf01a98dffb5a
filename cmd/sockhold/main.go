// Command sockhold owns listening sockets for other programs so that no
// client is refused while they, or sockhold itself, restart or are busy.
// This file is only the command-line wiring; the work is in holder/.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/alecthomas/kong"

	// The LISTEN_PID shim runs in this package's init, before the rest.
	_ "github.com/sockhold/sockhold/handoff/listenpid"
	"github.com/sockhold/sockhold/holder"
	"github.com/sockhold/sockhold/holder/config"
	// A re-executed holder asks for its signals in this package's init,
	// which runs before holder's because holder imports it.
	"github.com/sockhold/sockhold/holder/earlysig"
	"github.com/sockhold/sockhold/holder/worker"
)

// version is stamped at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

// childFlags are what both modes take about the children they start.
type childFlags struct {
	User     string   `placeholder:"USER" help:"Run handlers or the app as USER (name or uid), with its groups, HOME/USER/LOGNAME and its home (or /) as working directory; sockhold keeps its own identity to hold the sockets."`
	Group    string   `placeholder:"GROUP" help:"Run handlers or the app with GROUP (name or gid) as primary group."`
	Env      []string `sep:"none" placeholder:"NAME=VALUE" help:"Set NAME to VALUE in every child's environment (repeatable), e.g. --env 'NGINX=3;'."`
	UnsetEnv []string `name:"unset-env" sep:"none" placeholder:"NAME" help:"Remove NAME from every child's environment (repeatable)."`
}

type spawnCmd struct {
	Listen        []string      `short:"l" sep:"none" placeholder:"URI" help:"Listen on URI (repeatable): tcp://HOST:PORT, tcp4://, tcp6://, unix:///abs/path, unix:rel/path, unix:@abstract, fd://N or fd://NAME. Unix options: ?mode=0660&owner=USER&group=GROUP."`
	Address       string        `placeholder:"ADDRESS" help:"With PORT: bind to this address (default: every address, dual-stack)."`
	Backlog       int           `placeholder:"BACKLOG" help:"Accept-queue length: how many connections may wait (default: net.core.somaxconn; a warning is logged if the kernel caps it)."`
	IPv4          bool          `name:"ipv4" help:"With PORT: IPv4 only."`
	IPv6          bool          `name:"ipv6" help:"With PORT: IPv6 only."`
	LoadAverage   float64       `name:"load-average" placeholder:"LOAD" help:"Start another handler only while the 1-minute load average is below LOAD (the first always starts)."`
	LoadRecheck   time.Duration `name:"load-recheck" default:"1s" help:"How often to look at the load average again while it holds connections back."`
	Processes     int           `default:"1" placeholder:"PROCESSES" help:"Maximum number of concurrent handlers (0 means unlimited)."`
	WhenFull      string        `name:"when-full" enum:"queue,reject" default:"queue" help:"When no handler may start: queue (leave connections waiting in the backlog) or reject (accept, send --reject-message, close)."`
	RejectMessage string        `name:"reject-message" placeholder:"TEXT" help:"Sent (with a newline) to a connection that is rejected or whose handler cannot be started."`
	OnStop        string        `name:"on-stop" enum:"wait,term,leave" default:"wait" help:"On SIGTERM/SIGINT, handlers are: wait (left to finish up to --stop-timeout, then SIGTERM), term (sent SIGTERM now), leave (left running)."`
	StopTimeout   time.Duration `name:"stop-timeout" default:"60s" help:"With --on-stop wait: how long handlers may take to finish (0 = no limit)."`
	KillGrace     time.Duration `name:"kill-grace" default:"5s" help:"Time between SIGTERM and SIGKILL for handlers that do not exit."`
	Verbose       int           `short:"v" type:"counter" help:"More log output: -v logs each connection (START/EXIT/FAIL), -vv adds debug."`
	LogFormat     string        `name:"log-format" enum:"text,json" default:"text" help:"Log format on stderr: text or json."`

	Control        string        `placeholder:"PATH" help:"Control socket for sockhold upgrade/status/stop (default: derived from the first listener, under $XDG_RUNTIME_DIR/sockhold or /run/sockhold)."`
	UpgradeTimeout time.Duration `name:"upgrade-timeout" default:"30s" help:"How long a new worker may take to become ready before the upgrade is abandoned."`
	childFlags

	Port string   `arg:"" optional:"" name:"PORT" help:"TCP port to listen on (optional with --listen)."`
	Cmd  []string `arg:"" optional:"" passthrough:"" name:"CMD" help:"Command (and arguments) run for each connection, with the connection as stdin and stdout. Put it after --."`
}

func (c *spawnCmd) Run() error {
	port, argv := config.SplitPositional(c.Port, c.Cmd, len(c.Listen) > 0 || os.Getenv("LISTEN_FDS") != "")
	os.Exit(holder.Spawn(config.Spawn{
		Port: port, Listen: c.Listen, Address: c.Address, Backlog: c.Backlog,
		IPv4: c.IPv4, IPv6: c.IPv6, LoadAverage: c.LoadAverage, LoadRecheck: c.LoadRecheck,
		Processes: c.Processes, WhenFull: c.WhenFull, RejectMessage: c.RejectMessage,
		OnStop: c.OnStop, StopTimeout: c.StopTimeout, KillGrace: c.KillGrace,
		Verbose: c.Verbose, LogFormat: c.LogFormat, Command: argv,
		Control: c.Control, UpgradeTimeout: c.UpgradeTimeout, User: c.User, Group: c.Group,
		Env: c.Env, UnsetEnv: c.UnsetEnv,
	}, version))
	return nil
}

type serveCmd struct {
	Listen       []string      `short:"l" sep:"none" placeholder:"URI" help:"Listen on URI (repeatable): the app gets the sockets at fd 3, 4, ... in this order. Same forms as spawn."`
	FDName       []string      `name:"fd-name" sep:"none" placeholder:"NAME" help:"Name of the Nth listener in LISTEN_FDNAMES (repeatable, in --listen order; default: ?name=, or one made from the address such as tcp-127.0.0.1-8080). Printable ASCII without ':', at most 255 bytes."`
	Backlog      int           `placeholder:"BACKLOG" help:"Accept-queue length (default: net.core.somaxconn)."`
	Ready        string        `default:"timer:1s" placeholder:"HOW" help:"When a new copy counts as ready: notify (READY=1 on NOTIFY_SOCKET), einhorn (worker:ack on EINHORN_SOCK_PATH), both only from the app's own PID; or timer:DURATION (still running after DURATION)."`
	ReadyTimeout time.Duration `name:"ready-timeout" default:"30s" help:"A copy not ready by then is killed; during a restart, the restart is abandoned and the old copy keeps serving."`
	StopSignal   string        `name:"stop-signal" default:"TERM" placeholder:"SIG" help:"Signal asking a copy to stop (einhorn apps: USR2; nginx-style: QUIT)."`
	DrainTimeout time.Duration `name:"drain-timeout" default:"30s" help:"How long a stopping copy may take before SIGKILL."`
	KillGrace    time.Duration `name:"kill-grace" default:"5s" help:"How long a worker that was asked to stop may take (after its copies have drained) before SIGKILL."`
	SuccessExit  []string      `name:"success-exit-status" placeholder:"STATUS|SIG,..." help:"Exit statuses and signals that count as a clean stop for the app, as systemd's SuccessExitStatus= (uwsgi without --master exits 30)."`
	NoListenPID  bool          `name:"no-listen-pid" help:"Do not set LISTEN_PID (for wrapper scripts, whose PID is not the server's)."`
	NonBlocking  bool          `name:"nonblocking" help:"Hand the app its sockets in non-blocking mode, as systemd's NonBlocking= does (nginx expects it); default blocking. Set once at start and never changed."`
	Forward      []string      `name:"forward-signals" placeholder:"SIG,..." help:"Signals sockhold passes on to the running copies (USR1,USR2,WINCH,...)."`
	Copies       int           `short:"n" default:"1" help:"Run N copies of the app (einhorn -n); each gets EINHORN_CHILD_INDEX."`
	Restart      string        `enum:"rolling,fleet" default:"rolling" help:"With --copies: restart one copy at a time (new one ready, then one old one stopped) or all at once (fleet)."`
	OnDemand     bool          `name:"on-demand" help:"Start no copy until the first connection arrives (it waits in the backlog and is served by the app); stop the app after --idle-stop without activity."`
	IdleStop     time.Duration `name:"idle-stop" default:"60s" help:"With --on-demand: stop the app after this long with no open connection and nothing queued."`
	Reject       string        `name:"reject-message" placeholder:"TEXT" help:"With --on-demand: sent (with a newline) to waiting connections when the app keeps failing to start, before they are closed."`
	Capture      bool          `name:"capture-output" help:"Re-log each line the app writes to stdout or stderr, tagged with its PID and generation (default: the app inherits sockhold's stdout and stderr)."`
	Verbose      int           `short:"v" type:"counter" help:"More log output: -v logs each copy's life, -vv adds debug."`
	LogFormat    string        `name:"log-format" enum:"text,json" default:"text" help:"Log format on stderr: text or json."`

	Control        string        `placeholder:"PATH" help:"Control socket for sockhold upgrade/status/stop (default: derived from the first listener)."`
	UpgradeTimeout time.Duration `name:"upgrade-timeout" default:"30s" help:"How long a restart may take in all (at least --ready-timeout + 5s)."`
	childFlags

	Cmd []string `arg:"" passthrough:"" name:"CMD" help:"The server command (and arguments). Put it after --."`
}

func (c *serveCmd) Run() error {
	argv := c.Cmd
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	os.Exit(holder.Serve(config.Serve{
		Listen: c.Listen, FDNames: c.FDName, Backlog: c.Backlog,
		Ready: c.Ready, ReadyTimeout: c.ReadyTimeout, StopSignal: c.StopSignal,
		DrainTimeout: c.DrainTimeout, NoListenPID: c.NoListenPID, NonBlocking: c.NonBlocking, Forward: c.Forward, KillGrace: c.KillGrace, SuccessExit: c.SuccessExit,
		Copies: c.Copies, Restart: c.Restart, Capture: c.Capture,
		OnDemand: c.OnDemand, IdleStop: c.IdleStop, Reject: c.Reject,
		Verbose: c.Verbose, LogFormat: c.LogFormat, Command: argv,
		Control: c.Control, UpgradeTimeout: c.UpgradeTimeout, User: c.User, Group: c.Group,
		Env: c.Env, UnsetEnv: c.UnsetEnv,
	}, version))
	return nil
}

// target names the running sockhold a control command talks to.
type target struct {
	Control string   `placeholder:"PATH" help:"The control socket (default: derived from PORT or --listen, or the only one running)."`
	Listen  []string `short:"l" placeholder:"URI" help:"The first --listen URI the instance was started with, to find its control socket."`
	Port    string   `arg:"" optional:"" name:"PORT" help:"The PORT the instance was started with, to find its control socket."`
}

func (t target) opts() holder.ClientOptions {
	return holder.ClientOptions{Control: t.Control, Port: t.Port, Listen: t.Listen}
}

type upgradeCmd struct {
	target
	Wait    bool          `help:"Wait until the new generation serves; exit non-zero with the reason if it does not."`
	Timeout time.Duration `default:"60s" help:"With --wait: how long to wait for the answer."`
}

func (c *upgradeCmd) Run() error {
	o := c.opts()
	o.Wait, o.Timeout = c.Wait, c.Timeout
	os.Exit(holder.Client("upgrade", o))
	return nil
}

type statusCmd struct {
	target
	JSON bool `name:"json" help:"Print JSON."`
}

func (c *statusCmd) Run() error {
	o := c.opts()
	o.JSON = c.JSON
	os.Exit(holder.Client("status", o))
	return nil
}

type stopCmd struct{ target }

func (c *stopCmd) Run() error {
	os.Exit(holder.Client("stop", c.opts()))
	return nil
}

type cli struct {
	Version kong.VersionFlag `help:"Print the version and exit."`
	Spawn   spawnCmd         `cmd:"" default:"withargs" help:"Accept each connection and run CMD for it, at most --processes at once; excess connections wait in the kernel's queue (the default command)."`
	Serve   serveCmd         `cmd:"" help:"Start CMD once with the listening sockets at fd 3.. in every dialect (systemd, einhorn, socketmaster); on SIGHUP start a new copy and stop the old one only once the new one is ready."`
	Upgrade upgradeCmd       `cmd:"" help:"Replace the running worker with the sockhold binary now on disk, without refusing a connection (as SIGHUP)."`
	Status  statusCmd        `cmd:"" help:"Show the running sockhold: generation, handlers, queue, counters."`
	Stop    stopCmd          `cmd:"" help:"Stop the running sockhold (as SIGTERM)."`
}

func resuming() bool { _, _, ok := earlysig.Resume(); return ok }

func main() {
	// The roles sockhold gives its own binary, named by the argv it writes.
	switch {
	case config.IsWorker():
		os.Exit(worker.Main(version))
	case len(os.Args) > 1 && os.Args[1] == holder.CheckArg:
		os.Exit(holder.CheckMode())
	case resuming():
		os.Exit(holder.Resume(version))
	}
	var c cli
	parser, err := kong.New(&c,
		kong.Name("sockhold"),
		kong.Description("Hold listening sockets for other programs so that no client is refused while they are busy or restarting.\n\n  sockhold 873 --processes 8 --load-average 8 -- rsync --daemon"),
		kong.Vars{"version": version},
		kong.UsageOnError(),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sockhold:", err)
		os.Exit(holder.ExitUsage)
	}
	ctx, err := parser.Parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "sockhold:", err)
		os.Exit(holder.ExitUsage)
	}
	if err := ctx.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "sockhold:", err)
		os.Exit(holder.ExitFailure)
	}
}
