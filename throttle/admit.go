package throttle

// Verdict is the answer to "may one more connection be handed on now?".
type Verdict int

const (
	Admit      Verdict = iota // a slot is free and the load allows it
	Full                      // --processes handlers are alive
	Overloaded                // the load average is at or above --load-average
)

func (v Verdict) String() string {
	switch v {
	case Admit:
		return "admit"
	case Full:
		return "full"
	case Overloaded:
		return "overloaded"
	}
	return "unknown"
}

// Admission combines the slot count and the load gate.
type Admission struct {
	Slots *Slots
	Load  LoadGate
}

// Check decides for the next connection. Load is returned for logging.
func (a *Admission) Check() (Verdict, float64) {
	if !a.Slots.Free() {
		return Full, 0
	}
	ok, load := a.Load.Open(a.Slots.Used())
	if !ok {
		return Overloaded, load
	}
	return Admit, load
}
