package worker

import "github.com/sockhold/sockhold/holder/link"

// handover is the worker's side of an upgrade as a state machine without
// system calls: the loop feeds it what the holder says and what tableflip
// answers, sends what it returns, and asks it whether to take work.
//
// The order it keeps: tableflip's word that the new worker is ready proves
// nothing (any binary can write the ready byte), so this worker goes on
// taking work until the holder, which knows whether the successor linked,
// says hand-over; after that it takes none unless told to resume (the
// successor failed), and it exits when told to.
type handover struct {
	running    bool // tableflip's Upgrade is under way
	spent      bool // tableflip started a successor that got ready: it cannot start another
	handedOver bool // the successor takes the work
	exiting    bool
}

// upgradeAsked: the holder asks this worker to start its successor. It
// returns whether to start tableflip, or the answer refusing.
func (h *handover) upgradeAsked() (start bool, refusal link.Msg) {
	switch {
	case h.running:
		return false, link.Msg{Type: link.UpgradeFailed, Reason: "upgrade already in progress"}
	case h.spent:
		return false, link.Msg{Type: link.UpgradeFailed, Reason: "this worker already started a successor through tableflip"}
	case h.exiting:
		return false, link.Msg{Type: link.UpgradeFailed, Reason: "this worker is exiting"}
	}
	h.running = true
	return true, link.Msg{}
}

// tableflipDone is tableflip's answer; it returns what the holder hears.
func (h *handover) tableflipDone(err error) link.Msg {
	h.running = false
	if err != nil {
		return link.Msg{Type: link.UpgradeFailed, Reason: err.Error()}
	}
	h.spent = true
	return link.Msg{Type: link.ChildReady}
}

// handOver: the holder has the successor linked; no more work here.
func (h *handover) handOver() { h.handedOver = true }

// resume: the successor failed after the handover; take work again. It
// reports whether anything changed.
func (h *handover) resume() bool {
	was := h.handedOver
	h.handedOver = false
	return was && !h.exiting
}

// exit: the successor serves.
func (h *handover) exit() { h.exiting = true }

// takesWork: whether this worker may accept.
func (h *handover) takesWork() bool { return !h.handedOver && !h.exiting }
