// Package link is the channel between the holder and its workers: a
// SOCK_SEQPACKET unix socket carrying one JSON message per packet, with
// descriptors (pidfds of handlers and apps, output pipes) attached as
// SCM_RIGHTS where needed.
//
// Workers dial the holder's rendezvous socket instead of inheriting a
// socketpair, because a worker started by an upgrade is the child of the old
// worker, not of the holder; the holder learns each caller from the kernel
// (SO_PEERCRED, SO_PEERPIDFD), never from what it says.
package link

// Proto is the version of this protocol; a worker says it in its hello, and
// a holder that resumes after re-executing itself keeps talking to workers
// of an older binary in the version they spoke.
const Proto = 2

// Message types. The handover of an upgrade: the old worker starts the new
// binary (Upgrade); the new one links and says Hello; only then does the
// holder ask the old one to stop taking work (HandOver), hand the new one
// its generation and every older live handler (Adopt), and, once the new
// one is Serving, tell the old one to Exit (or, if the new one failed, to
// Resume).
const (
	Hello       = "hello"        // worker -> holder: set up (Version, Proto)
	Adopt       = "adopt"        // holder -> worker: your generation, and pidfds of older handlers
	AdoptFailed = "adopt-failed" // worker -> holder: the handover did not arrive whole (Reason); I exit
	Serving     = "serving"      // worker -> holder: accepting now (serve: every copy ready)
	Procs       = "procs"        // worker -> holder: processes started (pidfds attached) and reaped, counter deltas
	Upgrade     = "upgrade"      // holder -> worker: start the binary on disk through tableflip
	ChildReady  = "child-ready"  // worker -> holder: tableflip says my child is ready; my tableflip is spent
	HandOver    = "hand-over"    // holder -> old worker: stop taking work (serve: stop your copies, then exit)
	HandedOver  = "handed-over"  // old worker -> holder: no more work taken; every process reported
	Resume      = "resume"       // holder -> old worker: the new one failed; take work again
	Exit        = "exit"         // holder -> old worker: the new one serves; exit now
	Refused     = "refused"      // holder -> a peer it will not take as a worker (Reason)
	KillChild   = "kill-child"   // holder -> old worker: what tableflip started is no successor; end it

	UpgradeFailed = "upgrade-failed" // worker -> holder: Reason says why; I keep serving
	Signal        = "signal"         // holder -> worker: pass Signo on to the app
	Rolled        = "rolled"         // new worker -> holder: one more new copy is ready
	Restart       = "restart"        // worker -> holder: I got SIGHUP (einhorn apps signal EINHORN_MASTER_PID); restart
	Leaving       = "leaving"        // serve worker -> holder: a stop signal reached me; I stop my copies and exit once they have
	StopOne       = "stop-one"       // holder -> old worker: stop one copy (rolling restart)
	Drain         = "drain"          // worker -> holder: these apps were asked to stop
	Output        = "output"         // worker -> holder: the read end of an app's stdout/stderr
)

// Msg is one packet's payload.
type Msg struct {
	Type       string `json:"type"`
	Version    string `json:"version,omitempty"`
	Proto      int    `json:"proto,omitempty"`
	Generation int    `json:"gen,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Seq        int    `json:"seq,omitempty"`     // upgrade: which one; echoed with its outcome
	AppDir     string `json:"app_dir,omitempty"` // hello, serve: the directory of its copies' sockets
	Indices    []int  `json:"indices,omitempty"` // upgrade, adopt (serve): EINHORN_CHILD_INDEX values live copies of other generations hold

	// Adopt: one entry per attached pidfd.
	PIDs   []int   `json:"pids,omitempty"`
	Starts []int64 `json:"starts,omitempty"` // unix nanoseconds
	Gens   []int   `json:"gens,omitempty"`   // the generation that started each
	More   bool    `json:"more,omitempty"`   // further pidfds follow in another message

	// Procs: Started has one entry per attached pidfd, in order.
	Started  []Proc    `json:"started,omitempty"`
	Exited   []int     `json:"exited,omitempty"`    // PIDs this worker reaped
	AppExits []AppExit `json:"app_exits,omitempty"` // how the apps among them ended
	Counts   *Counts   `json:"counts,omitempty"`    // since the last report

	Signo   int   `json:"signo,omitempty"`
	Drain   []int `json:"drain,omitempty"` // app PIDs asked to stop, for the holder to kill after DrainMS
	DrainMS int64 `json:"drain_ms,omitempty"`
}

// Proc is one process a worker started: a handler or an app copy.
type Proc struct {
	PID   int    `json:"pid"`
	Start int64  `json:"start"` // unix nanoseconds
	App   bool   `json:"app,omitempty"`
	Slot  int    `json:"slot,omitempty"` // app: EINHORN_CHILD_INDEX
	Peer  string `json:"peer,omitempty"` // handler: the client
}

// AppExit is how an app copy its worker reaped ended: the raw wait status,
// for the exit status of a stop, which reflects the app's.
type AppExit struct {
	PID    int `json:"pid"`
	Status int `json:"status"`
}

// Counts are a worker's counters since its last report.
type Counts struct {
	Accepted      int `json:"accepted,omitempty"`
	Rejected      int `json:"rejected,omitempty"`
	SpawnFailures int `json:"spawn_failures,omitempty"`
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Accepted += o.Accepted
	c.Rejected += o.Rejected
	c.SpawnFailures += o.SpawnFailures
}

// Zero reports whether nothing was counted.
func (c Counts) Zero() bool { return c == Counts{} }

// QueueStats is one listener's accept queue.
type QueueStats struct {
	Listener string `json:"listener"`
	Depth    uint32 `json:"depth"`
	Max      uint32 `json:"max"`
}
