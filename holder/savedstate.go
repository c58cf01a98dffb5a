package holder

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/core"
)

// The state a holder hands to the binary it re-executes: every descriptor
// it holds (they survive exec), what each one is, and the core's state.
// JSON, versioned: a binary that does not know the format refuses it in
// check mode, before the holder commits to it.

// StateFormat is the version of savedState this binary writes and reads.
const StateFormat = 1

// knownFormat (StateFormat, spelt as a string) can lower, at build time, the newest format this binary
// accepts; the integration tests build such a binary to stand for an older
// sockhold (-ldflags "-X .../holder.knownFormat=0").
var knownFormat = "1"

func acceptsFormat(f int) error {
	known, _ := strconv.Atoi(knownFormat)
	if f > known || f < 1 {
		return fmt.Errorf("holder state format %d, this sockhold understands up to %d", f, known)
	}
	return nil
}

type savedState struct {
	Format     int             `json:"format"`
	Nonce      string          `json:"nonce"`
	Version    string          `json:"version"` // of the holder that wrote it
	Config     json.RawMessage `json:"config"`
	Exe        string          `json:"exe"`
	Started    time.Time       `json:"started"`
	NextID     int             `json:"next_id"`
	Sockets    []listen.Saved  `json:"sockets"`
	Control    savedControl    `json:"control"`
	Rendezvous int             `json:"rendezvous"`
	RendName   string          `json:"rendezvous_name"`
	Workers    []savedWorker   `json:"workers"`
	Procs      []savedProc     `json:"procs"`
	LastGood   int             `json:"last_good"`
	Prev       int             `json:"prev"` // the binary being replaced, to go back to (-1: none)
	Relays     []*relay        `json:"relays,omitempty"`
	LinkDowns  []savedTimer    `json:"link_downs,omitempty"` // workers whose link closed, by ID (Key.ID)
	Timers     []savedTimer    `json:"timers,omitempty"`
	Notify     string          `json:"notify,omitempty"`
	Signals    []int           `json:"signals,omitempty"` // taken before exec, for the new holder to act on
	Refusals   int             `json:"refusals,omitempty"`
	Fresh      bool            `json:"fresh,omitempty"` // a holder shedding its start-up: it starts, it does not resume
	Core       core.State      `json:"core"`
}

type savedControl struct {
	Socket listen.Saved `json:"socket"`
	Path   string       `json:"path"`
	Conns  []savedConn  `json:"conns,omitempty"`
}

type savedConn struct {
	ctlConn
	DeadlineIn time.Duration `json:"deadline_in"`
}

type savedWorker struct {
	ID        int      `json:"id"`
	PID       int      `json:"pid"`
	Pidfd     int      `json:"pidfd"`
	Link      int      `json:"link"`    // -1: not linked
	Reports   int      `json:"reports"` // -1: none
	LinkEOF   bool     `json:"link_eof,omitempty"`
	Queued    [][]byte `json:"queued,omitempty"` // messages waiting for room, with their descriptors
	QueuedFDs [][]int  `json:"queued_fds,omitempty"`
}

type savedProc struct {
	ID    int `json:"id"`
	PID   int `json:"pid"`
	Pidfd int `json:"pidfd"`
}

type savedTimer struct {
	Key core.Timer    `json:"key"`
	In  time.Duration `json:"in"`
}

// fds lists every descriptor the state names, for exec to keep open.
func (s *savedState) fds() []int {
	fds := []int{s.Control.Socket.FD, s.Rendezvous, s.LastGood}
	for _, k := range s.Sockets {
		fds = append(fds, k.FD)
	}
	for _, c := range s.Control.Conns {
		fds = append(fds, c.FD)
	}
	for _, w := range s.Workers {
		fds = append(fds, w.Pidfd)
		if w.Link >= 0 {
			fds = append(fds, w.Link)
		}
		if w.Reports >= 0 {
			fds = append(fds, w.Reports)
		}
		for _, q := range w.QueuedFDs {
			fds = append(fds, q...)
		}
	}
	for _, p := range s.Procs {
		fds = append(fds, p.Pidfd)
	}
	for _, r := range s.Relays {
		fds = append(fds, r.FD)
	}
	return fds
}

// decodeState reads a state and checks it is one this binary can take.
func decodeState(b []byte) (*savedState, error) {
	var head struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("holder state: %v", err)
	}
	if err := acceptsFormat(head.Format); err != nil {
		return nil, err
	}
	s := savedState{Prev: -1} // absent is none, never descriptor 0
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("holder state: %v", err)
	}
	if s.Prev < 3 {
		s.Prev = -1 // 0-2 are stdio: never a binary to go back to
	}
	return &s, nil
}
