package core

import (
	"syscall"

	"github.com/sockhold/sockhold/holder/link"
)

// Event is something the shell saw happen.
type Event interface{ event() }

// Started: the holder has its sockets and starts serving.
type Started struct{}

// Resumed: this holder process has just re-executed itself and restored its
// state; an upgrade that asked for it goes on.
type Resumed struct{}

// WorkerSpawned: the holder started a worker process (SpawnWorker).
type WorkerSpawned struct {
	ID, PID   int
	Successor bool // it replaces the current worker in an upgrade
}

// WorkerSpawnFailed: SpawnWorker could not start the process.
type WorkerSpawnFailed struct {
	Successor bool
	Err       string
}

// PeerLinked: a process connected to the rendezvous. Everything here is
// what the kernel said about it, checked by the shell through handles.
type PeerLinked struct {
	Link     int  // the connection's ID; it becomes the worker's ID if accepted as a successor
	Worker   int  // the worker the holder started with this PID, if any
	PID      int  // SO_PEERCRED
	PPID     int  // its parent, read while the handle showed it alive
	UIDOK    bool // it runs as the holder's user
	ExeOK    bool // it runs the holder's own binary (device and inode)
	HasPidfd bool // the shell holds a handle on it
}

// LinkMsg is one message from a worker. ProcIDs name the pidfds that came
// with msg.Started, in order (the shell holds them).
type LinkMsg struct {
	Worker  int
	Msg     link.Msg
	ProcIDs []int
}

// LinkDown: a worker's link closed or failed (read error, truncated
// descriptors, a wedged peer whose queue filled).
type LinkDown struct {
	Worker int
	Why    string
}

// WorkerExited: a worker process ended (its pidfd said so). Status is known
// when the holder reaped it itself.
type WorkerExited struct {
	Worker     int
	Status     syscall.WaitStatus
	HaveStatus bool
}

// ProcReaped: the holder reaped a handler or app it holds a handle on.
type ProcReaped struct {
	Proc   int
	Status syscall.WaitStatus
}

// ProcGone: a handle of the ledger refers to a process that no longer
// exists and was reaped by someone else (a worker that died before
// reporting it).
type ProcGone struct{ Proc int }

// OtherReaped: the holder reaped a child it holds no handle on (a
// daemonised descendant of a handler, reparented to the subreaper).
type OtherReaped struct {
	PID    int
	Status syscall.WaitStatus
}

// ChildrenLeft is how many children the holder has right now (tracked or
// not), reported after reaping while stopping and after CountChildren.
type ChildrenLeft struct{ N int }

// Signal is a signal the holder received (SIGCHLD is the shell's).
type Signal struct{ Sig syscall.Signal }

// TimerFired: a timer armed by Arm came due.
type TimerFired struct{ Key Timer }

// ControlAsk is an upgrade or stop request from the control socket.
type ControlAsk struct {
	Ctl  int // the connection's ID
	Verb string
	Wait bool
}

// HolderChecked: the new binary's check mode answered (or did not).
type HolderChecked struct {
	Seq  int
	Same bool   // the binary on disk is the one already running: nothing to replace
	Err  string // why the new binary cannot take over
}

// HolderExecFailed: execve of the checked binary returned.
type HolderExecFailed struct{ Err string }

// SendFailed: a message to a worker could not be sent or queued.
type SendFailed struct {
	Worker int
	Err    string
}

func (Started) event()           {}
func (Resumed) event()           {}
func (WorkerSpawned) event()     {}
func (WorkerSpawnFailed) event() {}
func (PeerLinked) event()        {}
func (LinkMsg) event()           {}
func (LinkDown) event()          {}
func (WorkerExited) event()      {}
func (ProcReaped) event()        {}
func (ProcGone) event()          {}
func (OtherReaped) event()       {}
func (ChildrenLeft) event()      {}
func (Signal) event()            {}
func (TimerFired) event()        {}
func (ControlAsk) event()        {}
func (HolderChecked) event()     {}
func (HolderExecFailed) event()  {}
func (SendFailed) event()        {}
