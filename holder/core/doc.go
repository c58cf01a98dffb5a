// Package core is the holder's lifecycle as a deterministic state machine:
// generations of workers, upgrades (the holder's own re-execution included),
// crashes and restarts, the ledger of handlers and apps every worker
// reports, drains and the phases of a stop. Events go in, actions come out;
// nothing here makes a system call, reads a clock or knows a descriptor.
//
// The shell (package holder) turns kernel notifications into events and
// actions into system calls. Every process the core refers to has an ID the
// shell chose when it got a handle on it (a pidfd): the core never acts on a
// PID, it asks the shell to act on a handle.
//
// The state is plain data (State), so that a holder that re-executes its
// binary hands it on whole, and so that unit tests can drive every
// interleaving the end-to-end tests cannot pin down.
package core
