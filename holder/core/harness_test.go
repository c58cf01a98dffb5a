package core

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockhold/sockhold/holder/link"
)

// rig drives a core with a fake clock and keeps every action it returned.
type rig struct {
	t   *testing.T
	c   *Core
	now time.Time
	ids int // next ID, as the shell hands them out
	got []Action
}

var spawnSettings = Settings{OnStop: "wait", StopTimeout: 60 * time.Second, KillGrace: 5 * time.Second,
	UpgradeTimeout: 30 * time.Second, RestartMin: 50 * time.Millisecond, RestartMax: 30 * time.Second}

var serveSettings = Settings{Serve: true, OnStop: "wait", StopTimeout: 30 * time.Second, KillGrace: 5 * time.Second,
	UpgradeTimeout: 35 * time.Second, DrainTimeout: 30 * time.Second, StopSignal: syscall.SIGTERM,
	RestartMin: 50 * time.Millisecond, RestartMax: 30 * time.Second}

func newRig(t *testing.T, cfg Settings) *rig {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return &rig{t: t, c: New(cfg, NewState(), log), now: time.Unix(1_700_000_000, 0), ids: 100}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func (r *rig) id() int { r.ids++; return r.ids }

// ev applies one event and returns its actions.
func (r *rig) ev(e Event) []Action {
	r.t.Helper()
	a := r.c.Handle(r.now, e)
	r.got = append(r.got, a...)
	return a
}

func (r *rig) after(d time.Duration) { r.now = r.now.Add(d) }

// fire fires the newest timer of a kind (as the shell would, once due).
func (r *rig) fire(kind TimerKind) []Action {
	r.t.Helper()
	for i := len(r.got) - 1; i >= 0; i-- {
		if a, ok := r.got[i].(Arm); ok && a.Key.Kind == kind {
			r.after(a.After)
			return r.ev(TimerFired{Key: a.Key})
		}
	}
	r.t.Fatalf("no timer of kind %d armed", kind)
	return nil
}

// spawned answers a SpawnWorker: a worker the holder started, linked and
// set up (hello). It returns the worker's ID.
func (r *rig) spawned(pid int, successor bool) int {
	r.t.Helper()
	id := r.id()
	r.ev(WorkerSpawned{ID: id, PID: pid, Successor: successor})
	link := r.id()
	mustHave(r.t, r.ev(PeerLinked{Link: link, Worker: id, PID: pid, PPID: 1, UIDOK: true, ExeOK: true, HasPidfd: true}), AcceptLink{Link: link, Worker: id})
	r.ev(LinkMsg{Worker: id, Msg: link2Hello()})
	return id
}

func link2Hello() link.Msg { return link.Msg{Type: link.Hello, Version: "v", Proto: link.Proto} }

func (r *rig) msg(w int, m link.Msg, procIDs ...int) []Action {
	r.t.Helper()
	return r.ev(LinkMsg{Worker: w, Msg: m, ProcIDs: procIDs})
}

// started reports handlers (or apps) a worker started; it returns their IDs.
func (r *rig) started(w int, app bool, pids ...int) []int {
	r.t.Helper()
	var ids []int
	m := link.Msg{Type: link.Procs}
	for i, pid := range pids {
		ids = append(ids, r.id())
		m.Started = append(m.Started, link.Proc{PID: pid, Start: r.now.UnixNano(), App: app, Slot: i})
	}
	r.msg(w, m, ids...)
	return ids
}

// running starts a holder with one serving worker (PID 10).
func (r *rig) running() int {
	r.t.Helper()
	mustHave(r.t, r.ev(Started{}), SpawnWorker{})
	w := r.spawned(10, false)
	r.msg(w, link.Msg{Type: link.Serving})
	if r.c.Current != w || !r.c.Workers[w].Serving {
		r.t.Fatalf("worker %d not serving: %+v", w, r.c.Workers[w])
	}
	return w
}

// upgradeToWorkerPhase requests an upgrade (ctl > 0: from control) and
// answers the holder check: the binary on disk is a new one, so the holder
// re-executes itself; the state travels through JSON as it would.
func (r *rig) upgradeToWorkerPhase(ctl int) {
	r.t.Helper()
	var a []Action
	if ctl > 0 {
		a = r.ev(ControlAsk{Ctl: ctl, Verb: "upgrade", Wait: true})
	} else {
		a = r.ev(Signal{Sig: syscall.SIGHUP})
	}
	mustHave(r.t, a, CheckHolder{Seq: r.c.UpgradeSeq})
	mustHave(r.t, r.ev(HolderChecked{Seq: r.c.UpgradeSeq}), ExecHolder{})
	r.reexec()
	old := r.c.Current
	mustHave(r.t, r.ev(Resumed{}), Send{Worker: old, Msg: link.Msg{Type: link.Upgrade, Seq: r.c.UpgradeSeq, Indices: r.c.appIndices(0)}})
}

// reexec hands the state to a new core through JSON, as a holder that
// re-executes its binary does.
func (r *rig) reexec() {
	r.t.Helper()
	b, err := json.Marshal(r.c.State)
	if err != nil {
		r.t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		r.t.Fatal(err)
	}
	r.c = New(r.c.cfg, st, r.c.log)
}

// mustHave fails unless every want is among acts (compared by value).
func mustHave(t *testing.T, acts []Action, want ...Action) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, a := range acts {
			if reflect.DeepEqual(a, w) {
				found = true
			}
		}
		if !found {
			t.Fatalf("want %#v among:\n%s", w, show(acts))
		}
	}
}

// mustNot fails if acts has an action matching bad.
func mustNot(t *testing.T, acts []Action, what string, bad func(Action) bool) {
	t.Helper()
	for _, a := range acts {
		if bad(a) {
			t.Fatalf("%s: %#v among:\n%s", what, a, show(acts))
		}
	}
}

func show(acts []Action) string {
	var b strings.Builder
	for _, a := range acts {
		fmt.Fprintf(&b, "  %#v\n", a)
	}
	return b.String()
}

func replyOf(acts []Action, ctl int) (ControlReply, bool) {
	for _, a := range acts {
		if r, ok := a.(Reply); ok && r.Ctl == ctl {
			return r.Rep, true
		}
	}
	return ControlReply{}, false
}
