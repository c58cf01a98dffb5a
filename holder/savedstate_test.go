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
