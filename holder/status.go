package holder

import (
	"fmt"
	"os"
	"time"

	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/link"
)

// Status is the answer to `sockhold status`.
type Status struct {
	HolderPID      int               `json:"holder_pid"`
	Binary         string            `json:"binary"`
	Version        string            `json:"version"`
	Uptime         string            `json:"uptime"`
	Generation     int               `json:"gen"`
	WorkerPID      int               `json:"worker_pid"`
	WorkerVersion  string            `json:"worker_version"`
	Serving        bool              `json:"serving"`
	Upgrading      bool              `json:"upgrading"`
	HandlersByGen  map[int]int       `json:"handlers_by_gen"`
	SlotsUsed      int               `json:"slots_used"`
	SlotsLimit     int               `json:"slots_limit"`
	Queues         []link.QueueStats `json:"queues"`
	Accepted       int               `json:"accepted"`
	Rejected       int               `json:"rejected"`
	SpawnFailures  int               `json:"spawn_failures"`
	UpgradesOK     int               `json:"upgrades_ok"`
	UpgradesFailed int               `json:"upgrades_failed"`
	Worker         *link.Stats       `json:"worker,omitempty"`
	Listeners      []string          `json:"listeners"`
}

// requestStatus asks the serving worker for its figures and answers once
// they arrive, or after a second without them.
func (h *Holder) requestStatus(r *controlRequest) {
	if h.current == nil || h.current.link < 0 {
		h.statusWaiters = append(h.statusWaiters, r)
		h.answerStatus(nil)
		return
	}
	h.statusWaiters = append(h.statusWaiters, r)
	if len(h.statusWaiters) == 1 {
		link.Send(h.current.link, link.Msg{Type: link.StatusAsk})
		h.statusSeq++
		h.after(time.Second, event{kind: evStatusTimeout, seq: h.statusSeq})
	}
}

func (h *Holder) answerStatus(st *link.Stats) {
	if len(h.statusWaiters) == 0 {
		return
	}
	s := h.status(st)
	for _, w := range h.statusWaiters {
		w.reply(controlReply{OK: true, Status: s})
	}
	h.statusWaiters = nil
}

func (h *Holder) status(st *link.Stats) *Status {
	s := &Status{
		HolderPID:      os.Getpid(),
		Binary:         h.exe,
		Version:        h.version,
		Uptime:         time.Since(h.started).Round(time.Second).String(),
		Upgrading:      h.upgrade != nil,
		HandlersByGen:  map[int]int{},
		Accepted:       h.totals.accepted,
		Rejected:       h.totals.rejected,
		SpawnFailures:  h.totals.spawnFailures,
		UpgradesOK:     h.totals.upgradesOK,
		UpgradesFailed: h.totals.upgradesFailed,
		SlotsLimit:     h.cfg.Processes,
		Worker:         st,
	}
	if c := h.current; c != nil {
		s.Generation, s.WorkerPID, s.WorkerVersion, s.Serving = c.gen, c.pid, c.version, c.serving
	}
	for _, o := range h.orphans {
		s.HandlersByGen[o.gen]++
		s.SlotsUsed++
	}
	if st != nil {
		s.HandlersByGen[st.Generation] += st.OwnHandlers
		s.SlotsUsed = st.SlotsUsed
		s.Accepted += st.Accepted
		s.Rejected += st.Rejected
		s.SpawnFailures += st.SpawnFailures
	}
	for _, sock := range h.sockets {
		s.Listeners = append(s.Listeners, sock.Addr)
		if q, err := listen.ReadQueue(sock.FD); err == nil {
			s.Queues = append(s.Queues, link.QueueStats{Listener: sock.Addr, Depth: q.Depth, Max: q.Max})
		}
	}
	return s
}

// statusLine is the one-line summary systemd shows (STATUS=).
func (h *Holder) statusLine() string {
	if h.current == nil {
		return "no worker"
	}
	return fmt.Sprintf("gen %d (%s) serving %d listener(s); %d upgrades ok, %d failed",
		h.current.gen, h.current.version, len(h.sockets), h.totals.upgradesOK, h.totals.upgradesFailed)
}
