package worker

import (
	"errors"
	"testing"

	"github.com/sockhold/sockhold/holder/link"
)

// tableflip's ready alone changes nothing: the worker keeps taking work
// (and says its tableflip is spent) until the holder hands over.
func TestReadyAloneKeepsServing(t *testing.T) {
	var h handover
	if start, _ := h.upgradeAsked(); !start {
		t.Fatal("first upgrade refused")
	}
	if m := h.tableflipDone(nil); m.Type != link.ChildReady {
		t.Fatalf("ready reported as %+v", m)
	}
	if !h.takesWork() {
		t.Fatal("stopped taking work on tableflip's word alone")
	}
	if start, m := h.upgradeAsked(); start || m.Type != link.UpgradeFailed {
		t.Fatal("a spent tableflip asked to start another successor")
	}
}

// After the handover, a failed successor: no work until resume, then work.
func TestHandoverThenFailureThenResume(t *testing.T) {
	var h handover
	h.upgradeAsked()
	h.handOver()
	if h.takesWork() {
		t.Fatal("took work after the handover")
	}
	if m := h.tableflipDone(errors.New("child exited")); m.Type != link.UpgradeFailed || m.Reason != "child exited" {
		t.Fatalf("failure reported as %+v", m)
	}
	if h.takesWork() {
		t.Fatal("took work again before the holder said resume")
	}
	if !h.resume() || !h.takesWork() {
		t.Fatal("resume did not restore work")
	}
	if start, _ := h.upgradeAsked(); !start {
		t.Fatal("a worker whose upgrade failed cannot try again")
	}
}

// One upgrade at a time; exiting ends everything.
func TestOneUpgradeAtATimeAndExit(t *testing.T) {
	var h handover
	h.upgradeAsked()
	if start, m := h.upgradeAsked(); start || m.Reason != "upgrade already in progress" {
		t.Fatalf("second upgrade: %v %+v", start, m)
	}
	h.handOver()
	h.exit()
	if h.takesWork() || h.resume() {
		t.Fatal("an exiting worker takes work")
	}
}
