package core

import (
	"syscall"
	"time"

	"github.com/sockhold/sockhold/holder/link"
)

// Action is something the core asks the shell to do, in order.
type Action interface{ action() }

// SpawnWorker starts a worker process: from the binary that last served
// (a restart), or, for an upgrade whose successor the holder starts itself,
// from the binary the holder now runs (the one it just checked). The shell
// answers WorkerSpawned or WorkerSpawnFailed.
type SpawnWorker struct {
	Successor  bool
	AppRunning bool  // serve --on-demand: an app of the generation it replaces runs
	AppIndices []int // serve: EINHORN_CHILD_INDEX values live copies hold
}

// AcceptLink makes connection Link the link of worker Worker.
type AcceptLink struct{ Link, Worker int }

// RefuseLink closes connection Link, telling the peer Reason.
type RefuseLink struct {
	Link   int
	Reason string
}

// Send sends Msg to a worker, with the pidfds of Procs attached in order.
type Send struct {
	Worker int
	Msg    link.Msg
	Procs  []int
}

// Kill signals a worker or a proc through its handle. Group: the proc's
// process group (handlers and apps lead their own), while its leader lives.
type Kill struct {
	Worker, Proc int
	Sig          syscall.Signal
	Group        bool
}

// SweepChildren signals every child the holder has, handle or not: at the
// end of a stop, descendants reparented to the subreaper too. The shell
// reports ChildrenLeft.
type SweepChildren struct{ Sig syscall.Signal }

// CountChildren asks for a ChildrenLeft.
type CountChildren struct{}

// Audit asks the shell to check the handles of these procs (their worker
// has gone): it reports ProcGone for those that no longer exist.
type Audit struct{ Procs []int }

// RemoveAppDir removes the directory of a worker's app sockets once the
// worker has gone: it does so itself when it exits, but not when killed.
type RemoveAppDir struct{ Path string }

// Forget releases the handles of a worker or a proc the core is done with.
type Forget struct{ Worker, Proc int }

// RememberBinary keeps the binary worker Worker runs as the one to restart
// crashed workers from.
type RememberBinary struct{ Worker int }

// Arm sets timer Key to fire after After (replacing one with the same key).
type Arm struct {
	Key   Timer
	After time.Duration
}

// Reply answers control request Ctl (and ends it).
type Reply struct {
	Ctl int
	Rep ControlReply
}

// Notify is a message for systemd (sd_notify lines).
type Notify struct{ Lines []string }

// CheckHolder runs the binary on disk in its check mode (upgrade Seq). The
// shell answers HolderChecked.
type CheckHolder struct{ Seq int }

// AbortCheck kills a check still running.
type AbortCheck struct{}

// ExecHolder re-executes the checked binary in this process, state and all.
// It returns only by failing: HolderExecFailed.
type ExecHolder struct{}

// Finish ends the holder: sockets closed, exit with Status.
type Finish struct{ Status int }

func (SpawnWorker) action()    {}
func (AcceptLink) action()     {}
func (RefuseLink) action()     {}
func (Send) action()           {}
func (Kill) action()           {}
func (SweepChildren) action()  {}
func (CountChildren) action()  {}
func (Audit) action()          {}
func (Forget) action()         {}
func (RemoveAppDir) action()   {}
func (RememberBinary) action() {}
func (Arm) action()            {}
func (Reply) action()          {}
func (Notify) action()         {}
func (CheckHolder) action()    {}
func (AbortCheck) action()     {}
func (ExecHolder) action()     {}
func (Finish) action()         {}

// ControlReply is what a control client is told.
type ControlReply struct {
	OK             bool    `json:"ok"`
	Error          string  `json:"error,omitempty"`
	Message        string  `json:"message,omitempty"`
	Generation     int     `json:"gen,omitempty"`
	Version        string  `json:"version,omitempty"`
	TookMS         float64 `json:"took_ms,omitempty"`
	HolderMS       float64 `json:"holder_ms,omitempty"` // of which: checking and re-executing the holder
	HolderReplaced bool    `json:"holder_replaced,omitempty"`
}

// Timer names a timer. Seq tells a stale one (re-armed or made moot since)
// from the current one.
type Timer struct {
	Kind TimerKind `json:"kind"`
	ID   int       `json:"id,omitempty"`
	Seq  int       `json:"seq,omitempty"`
}

// TimerKind is what a timer is for.
type TimerKind int

// Timer kinds.
const (
	TimerRestart       TimerKind = iota + 1 // start a worker again after a crash
	TimerServeDeadline                      // a worker must serve by now (ID)
	TimerUpgrade                            // the upgrade in progress must be done by now
	TimerKillWorker                         // a stopping worker's grace is over (ID)
	TimerDrain                              // a stopping app's --drain-timeout is over (ID)
	TimerStopPhase                          // the stop moves to its next phase (Seq is the phase)
	TimerSweep                              // the kill phase looks for late descendants again
)
