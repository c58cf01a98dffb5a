package holder

import (
	"strconv"
	"testing"
)

// knownFormat is a string only so that a build can lower it; unlowered it
// must be the format this binary writes.
func TestKnownFormatIsStateFormat(t *testing.T) {
	if knownFormat != strconv.Itoa(StateFormat) {
		t.Fatalf("knownFormat %q, StateFormat %d", knownFormat, StateFormat)
	}
	if err := acceptsFormat(StateFormat + 1); err == nil {
		t.Fatal("a newer format accepted")
	}
	if err := acceptsFormat(StateFormat); err != nil {
		t.Fatal(err)
	}
}

// A state that names no binary to go back to (or names stdio) has none:
// the resuming holder must never close or exec descriptor 0.
func TestStateWithoutPrevHasNone(t *testing.T) {
	for _, doc := range []string{`{"format":1}`, `{"format":1,"prev":0}`, `{"format":1,"prev":2}`} {
		s, err := decodeState([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if s.Prev != -1 {
			t.Errorf("%s: prev %d, want -1", doc, s.Prev)
		}
	}
	s, err := decodeState([]byte(`{"format":1,"prev":7}`))
	if err != nil || s.Prev != 7 {
		t.Fatalf("prev 7 read as %v (%v)", s.Prev, err)
	}
}
