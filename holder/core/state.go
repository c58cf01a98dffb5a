package core

import "time"

// State is everything the lifecycle knows; plain data, handed on whole when
// the holder re-executes itself.
type State struct {
	Gen     int             `json:"gen"`     // the newest generation number given out
	Current int             `json:"current"` // the serving (or starting) worker; 0: none
	Workers map[int]*Worker `json:"workers"`
	Procs   map[int]*Proc   `json:"procs"`

	Upgrade       *Upgrade       `json:"upgrade,omitempty"`
	UpgradeQueued bool           `json:"upgrade_queued,omitempty"` // a SIGHUP came during an upgrade
	UpgradeSeq    int            `json:"upgrade_seq"`
	LastUpgrade   *UpgradeResult `json:"last_upgrade,omitempty"`

	RestartFailures int  `json:"restart_failures"` // worker starts that failed in a row
	RestartPending  bool `json:"restart_pending,omitempty"`

	Stop *Stop `json:"stop,omitempty"`

	Totals         Totals `json:"totals"`
	HolderReplaced int    `json:"holder_replaced"` // times this holder re-executed a new binary
	ExitStatus     int    `json:"exit_status"`     // serve: how the app ended on stop
	Done           bool   `json:"done,omitempty"`
	Seq            int    `json:"seq"` // numbers timers
}

// Worker is one worker process the holder holds a handle on.
type Worker struct {
	ID         int       `json:"id"`
	PID        int       `json:"pid"`
	Parent     int       `json:"parent,omitempty"` // the worker that started it through tableflip
	Gen        int       `json:"gen,omitempty"`    // given with adopt
	Version    string    `json:"version,omitempty"`
	Proto      int       `json:"proto,omitempty"`
	Linked     bool      `json:"linked,omitempty"`
	Helloed    bool      `json:"helloed,omitempty"`
	Adopted    bool      `json:"adopted,omitempty"`
	Serving    bool      `json:"serving,omitempty"`
	Served     bool      `json:"served,omitempty"`      // reached serving at some point
	Spent      bool      `json:"spent,omitempty"`       // its tableflip cannot start another successor
	HandedOver bool      `json:"handed_over,omitempty"` // it takes no more work
	Leaving    bool      `json:"leaving,omitempty"`     // told to exit, or signalled to stop
	Killed     bool      `json:"killed,omitempty"`      // sent SIGKILL: its link failed
	Started    time.Time `json:"started"`
	Deadline   int       `json:"deadline,omitempty"` // seq of its serve deadline
	AppDir     string    `json:"app_dir,omitempty"`  // serve: its copies' sockets, removed once it has gone
}

// Proc is a handler or an app copy some worker started and reported with
// its pidfd.
type Proc struct {
	ID       int       `json:"id"`
	Owner    int       `json:"owner,omitempty"` // the worker that reaps it; 0: the holder
	PID      int       `json:"pid"`
	Gen      int       `json:"gen"`
	App      bool      `json:"app,omitempty"`
	Slot     int       `json:"slot,omitempty"`
	Start    time.Time `json:"start"`
	Peer     string    `json:"peer,omitempty"`
	Stopping bool      `json:"stopping,omitempty"` // asked to stop; a drain deadline runs
}

// Upgrade is the one upgrade in progress.
type Upgrade struct {
	Seq            int           `json:"seq"`
	Start          time.Time     `json:"start"`
	FromGen        int           `json:"from_gen"`
	Phase          UpgradePhase  `json:"phase"`
	Old            int           `json:"old"`           // the worker being replaced
	New            int           `json:"new,omitempty"` // its successor, once linked or spawned
	ViaHolder      bool          `json:"via_holder,omitempty"`
	Waiters        []int         `json:"waiters,omitempty"` // control requests waiting for the result
	Detail         string        `json:"detail,omitempty"`  // the new worker's own account of a failure
	HolderReplaced bool          `json:"holder_replaced,omitempty"`
	HolderTook     time.Duration `json:"holder_took,omitempty"` // the holder's check and re-execution
}

// UpgradePhase is how far an upgrade has gone.
type UpgradePhase int

// Upgrade phases.
const (
	PhaseCheck    UpgradePhase = iota + 1 // the new binary runs in check mode
	PhaseExec                             // the holder re-executes itself
	PhaseWorker                           // the worker is being replaced
	PhaseHandover                         // serve: the old generation stops its copies
)

// UpgradeResult is how the last upgrade ended, for status.
type UpgradeResult struct {
	OK     bool          `json:"ok"`
	Reason string        `json:"reason,omitempty"`
	Gen    int           `json:"gen,omitempty"`
	Took   time.Duration `json:"took"`
	At     time.Time     `json:"at"`
}

// Stop is a stop in progress.
type Stop struct {
	Signal     string    `json:"signal"`
	Phase      StopPhase `json:"phase"`
	ToldOthers bool      `json:"told_others,omitempty"`
}

// StopPhase is how far a stop has gone; a second stop signal, or a timer,
// moves it on.
type StopPhase int

// Stop phases.
const (
	StopWorkers StopPhase = iota // the workers are stopping
	StopWait                     // handlers finish on their own, up to --stop-timeout
	StopTerm                     // handlers got SIGTERM; SIGKILL after --kill-grace
	StopKill                     // everything left gets SIGKILL, again and again, until none is left
	StopLeave                    // handlers are left running
)

// Totals are counters over the holder's whole life, across every worker.
type Totals struct {
	Accepted       int `json:"accepted"`
	Rejected       int `json:"rejected"`
	SpawnFailures  int `json:"spawn_failures"`
	UpgradesOK     int `json:"upgrades_ok"`
	UpgradesFailed int `json:"upgrades_failed"`
	WorkerRestarts int `json:"worker_restarts"`
}

// NewState is the state of a holder that has just started.
func NewState() State {
	return State{Workers: map[int]*Worker{}, Procs: map[int]*Proc{}}
}
