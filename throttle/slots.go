package throttle

// Slots counts live handlers against a limit. Limit 0 means unlimited, as in
// socket-burst-dampener's --processes 0.
type Slots struct {
	limit int
	used  int
}

// NewSlots returns a counter with the given limit (0 = unlimited).
func NewSlots(limit int) *Slots { return &Slots{limit: limit} }

// Take records one more live handler. It does not refuse: callers ask Free
// first, and handlers inherited from an earlier generation must be counted
// even when they already exceed the limit.
func (s *Slots) Take() { s.used++ }

// Release records that a live handler has gone.
func (s *Slots) Release() {
	if s.used > 0 {
		s.used--
	}
}

// Free reports whether another handler may start now.
func (s *Slots) Free() bool { return s.limit == 0 || s.used < s.limit }

// Used is the number of live handlers counted.
func (s *Slots) Used() int { return s.used }

// Limit is the configured maximum (0 = unlimited).
func (s *Slots) Limit() int { return s.limit }
