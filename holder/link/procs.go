package link

import (
	"encoding/binary"
	"errors"
)

// Reports (Procs messages) are the one message sent per loop turn of a
// busy worker, so they travel in a compact binary form rather than JSON:
// encoding and decoding them costs a few hundred nanoseconds instead of
// microseconds, on the spawn path and in the holder.
//
//	'P' started:uvarint { pid:varint start:varint app:byte slot:uvarint peer:bytes }
//	    exited:uvarint { pid:varint } accepted:uvarint rejected:uvarint spawn_failures:uvarint
//	    [ app_exits:uvarint { pid:varint status:varint } ]
//
// The last part is optional, so that an older holder (which ignores what
// follows) and a newer one (which finds nothing more) read either form.
// bytes is a uvarint length and the bytes.

const procsTag = 'P'

var errBadProcs = errors.New("link: malformed report")

// AppendProcs appends m (a Procs message) in the binary form to b.
func AppendProcs(b []byte, m *Msg) []byte {
	b = append(b, procsTag)
	b = binary.AppendUvarint(b, uint64(len(m.Started)))
	for _, p := range m.Started {
		b = binary.AppendVarint(b, int64(p.PID))
		b = binary.AppendVarint(b, p.Start)
		app := byte(0)
		if p.App {
			app = 1
		}
		b = append(b, app)
		b = binary.AppendUvarint(b, uint64(p.Slot))
		b = binary.AppendUvarint(b, uint64(len(p.Peer)))
		b = append(b, p.Peer...)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Exited)))
	for _, pid := range m.Exited {
		b = binary.AppendVarint(b, int64(pid))
	}
	var c Counts
	if m.Counts != nil {
		c = *m.Counts
	}
	b = binary.AppendUvarint(b, uint64(c.Accepted))
	b = binary.AppendUvarint(b, uint64(c.Rejected))
	b = binary.AppendUvarint(b, uint64(c.SpawnFailures))
	if len(m.AppExits) > 0 {
		b = binary.AppendUvarint(b, uint64(len(m.AppExits)))
		for _, e := range m.AppExits {
			b = binary.AppendVarint(b, int64(e.PID))
			b = binary.AppendVarint(b, int64(e.Status))
		}
	}
	return b
}

// isProcs tells the binary form from JSON.
func isProcs(b []byte) bool { return len(b) > 0 && b[0] == procsTag }

// decodeProcs reads the binary form into m.
func decodeProcs(b []byte, m *Msg) error {
	r := reader{b: b[1:]}
	*m = Msg{Type: Procs}
	if n := r.uvarint(); n > 0 && n <= MaxFDs {
		m.Started = make([]Proc, n)
		for i := range m.Started {
			p := &m.Started[i]
			p.PID = int(r.varint())
			p.Start = r.varint()
			p.App = r.byte() == 1
			p.Slot = int(r.uvarint())
			p.Peer = string(r.bytes())
		}
	}
	if n := r.uvarint(); n > 0 && n <= 1<<16 {
		m.Exited = make([]int, n)
		for i := range m.Exited {
			m.Exited[i] = int(r.varint())
		}
	}
	c := Counts{Accepted: int(r.uvarint()), Rejected: int(r.uvarint()), SpawnFailures: int(r.uvarint())}
	if !c.Zero() {
		m.Counts = &c
	}
	if len(r.b) > 0 {
		if n := r.uvarint(); n > 0 && n <= 1<<16 {
			m.AppExits = make([]AppExit, n)
			for i := range m.AppExits {
				m.AppExits[i] = AppExit{PID: int(r.varint()), Status: int(r.varint())}
			}
		}
	}
	if r.bad {
		return errBadProcs
	}
	return nil
}

type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}
