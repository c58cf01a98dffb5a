package holder

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/core"
	"github.com/sockhold/sockhold/holder/link"
)

// Status is the answer to `sockhold status`: what the holder itself knows,
// from its ledger of handles and the kernel's queues, so it never waits on
// a worker.
type Status struct {
	HolderPID      int                 `json:"holder_pid"`
	Binary         string              `json:"binary"`
	Version        string              `json:"version"`
	Uptime         string              `json:"uptime"`
	HolderReplaced int                 `json:"holder_replaced"`
	Generation     int                 `json:"gen"`
	WorkerPID      int                 `json:"worker_pid"`
	WorkerVersion  string              `json:"worker_version"`
	Serving        bool                `json:"serving"`
	Upgrading      bool                `json:"upgrading"`
	HandlersByGen  map[int]int         `json:"handlers_by_gen"`
	SlotsUsed      int                 `json:"slots_used"`
	SlotsLimit     int                 `json:"slots_limit"`
	Apps           []AppStatus         `json:"apps,omitempty"`
	Queues         []link.QueueStats   `json:"queues"`
	Accepted       int                 `json:"accepted"`
	Rejected       int                 `json:"rejected"`
	SpawnFailures  int                 `json:"spawn_failures"`
	UpgradesOK     int                 `json:"upgrades_ok"`
	UpgradesFailed int                 `json:"upgrades_failed"`
	WorkerRestarts int                 `json:"worker_restarts"`
	LastUpgrade    *core.UpgradeResult `json:"last_upgrade,omitempty"`
	Listeners      []string            `json:"listeners"`
}

// AppStatus is one served app copy.
type AppStatus struct {
	PID      int  `json:"pid"`
	Copy     int  `json:"copy"`
	Gen      int  `json:"gen"`
	Stopping bool `json:"stopping,omitempty"`
}

func (h *Holder) status() *Status {
	c := h.core
	s := &Status{
		HolderPID:      os.Getpid(),
		Binary:         h.exe,
		Version:        h.version,
		Uptime:         time.Since(h.started).Round(time.Second).String(),
		HolderReplaced: c.HolderReplaced,
		Upgrading:      c.Upgrade != nil,
		HandlersByGen:  map[int]int{},
		SlotsLimit:     h.cfg.Processes,
		Accepted:       c.Totals.Accepted,
		Rejected:       c.Totals.Rejected,
		SpawnFailures:  c.Totals.SpawnFailures,
		UpgradesOK:     c.Totals.UpgradesOK,
		UpgradesFailed: c.Totals.UpgradesFailed,
		WorkerRestarts: c.Totals.WorkerRestarts,
		LastUpgrade:    c.LastUpgrade,
	}
	if w := c.Workers[c.Current]; w != nil {
		s.Generation, s.WorkerPID, s.WorkerVersion, s.Serving = w.Gen, w.PID, w.Version, w.Serving
	}
	for _, p := range c.Procs {
		if p.App {
			s.Apps = append(s.Apps, AppStatus{PID: p.PID, Copy: p.Slot, Gen: p.Gen, Stopping: p.Stopping})
			continue
		}
		s.HandlersByGen[p.Gen]++
		s.SlotsUsed++
	}
	sort.Slice(s.Apps, func(i, j int) bool {
		if s.Apps[i].Gen != s.Apps[j].Gen {
			return s.Apps[i].Gen < s.Apps[j].Gen
		}
		return s.Apps[i].Copy < s.Apps[j].Copy
	})
	for _, sock := range h.sockets {
		s.Listeners = append(s.Listeners, sock.Addr)
		if q, err := listen.ReadQueue(sock.FD); err == nil {
			s.Queues = append(s.Queues, link.QueueStats{Listener: sock.Addr, Depth: q.Depth, Max: q.Max})
		}
	}
	return s
}

func printStatus(s *Status) {
	if s == nil {
		return
	}
	fmt.Printf("holder      pid %d, %s (version %s), up %s, replaced %d times\n", s.HolderPID, s.Binary, s.Version, s.Uptime, s.HolderReplaced)
	fmt.Printf("worker      pid %d, generation %d, version %s, serving %v, upgrading %v\n",
		s.WorkerPID, s.Generation, s.WorkerVersion, s.Serving, s.Upgrading)
	limit := "unlimited"
	if s.SlotsLimit > 0 {
		limit = fmt.Sprint(s.SlotsLimit)
	}
	fmt.Printf("handlers    %d of %s slots used", s.SlotsUsed, limit)
	gens := make([]int, 0, len(s.HandlersByGen))
	for g := range s.HandlersByGen {
		gens = append(gens, g)
	}
	sort.Ints(gens)
	for _, g := range gens {
		fmt.Printf("; gen %d: %d", g, s.HandlersByGen[g])
	}
	fmt.Println()
	for _, a := range s.Apps {
		state := "running"
		if a.Stopping {
			state = "stopping"
		}
		fmt.Printf("app         pid %d, copy %d, generation %d, %s\n", a.PID, a.Copy, a.Gen, state)
	}
	for _, q := range s.Queues {
		fmt.Printf("queue       %s: %d waiting (max %d)\n", q.Listener, q.Depth, q.Max)
	}
	fmt.Printf("counters    accepted %d, rejected %d, spawn failures %d, upgrades ok %d, failed %d, worker restarts %d\n",
		s.Accepted, s.Rejected, s.SpawnFailures, s.UpgradesOK, s.UpgradesFailed, s.WorkerRestarts)
	if u := s.LastUpgrade; u != nil && !u.OK {
		fmt.Printf("last upgrade failed: %s\n", u.Reason)
	}
}
