package listen

// Saved is a Socket as plain data, for a holder that re-executes itself:
// the descriptor survives exec, and the rest says what it is and which file
// (if any) to remove when sockhold stops.
type Saved struct {
	Spec      Spec   `json:"spec"`
	FD        int    `json:"fd"`
	Family    int    `json:"family"`
	Addr      string `json:"addr"`
	Inherited bool   `json:"inherited,omitempty"`
	Path      string `json:"path,omitempty"` // a unix socket file sockhold created
	Dev       uint64 `json:"dev,omitempty"`
	Ino       uint64 `json:"ino,omitempty"`
}

// Save describes s.
func (s *Socket) Save() Saved {
	v := Saved{Spec: s.Spec, FD: s.FD, Family: s.Family, Addr: s.Addr, Inherited: s.Inherited}
	if s.path != nil {
		v.Path, v.Dev, v.Ino = s.path.path, s.path.dev, s.path.ino
	}
	return v
}

// Restore makes a Socket of what Save described.
func Restore(v Saved) *Socket {
	s := &Socket{Spec: v.Spec, FD: v.FD, Family: v.Family, Addr: v.Addr, Inherited: v.Inherited}
	s.Spec.RenameFromURI()
	if v.Path != "" {
		s.path = &boundPath{path: v.Path, dev: v.Dev, ino: v.Ino}
	}
	return s
}
