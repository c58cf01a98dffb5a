package holder

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A burst of refusals is one line at once and one summing up the rest an
// interval later, whether or not another refusal comes to trigger it.
func TestRefusalBurstIsSummedUpOnItsOwn(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	var r refusalLog
	for pid := 1; pid <= 50; pid++ {
		r.note(log, pid, "runs as another user")
	}
	if n := strings.Count(out.String(), "\n"); n != 1 {
		t.Fatalf("%d lines for a burst, want 1 now:\n%s", n, out.String())
	}
	due := r.due()
	if due.IsZero() || due.Sub(r.last) != refusalInterval {
		t.Fatalf("the rest are not due an interval later: due %v, last %v", due, r.last)
	}
	r.deadline(log, due.Add(-time.Millisecond))
	if strings.Count(out.String(), "\n") != 1 {
		t.Fatal("summed up early")
	}
	r.deadline(log, due)
	if !strings.Contains(out.String(), "count=49") || !strings.Contains(out.String(), "last_pid=50") {
		t.Fatalf("the summary does not count the rest:\n%s", out.String())
	}
	if !r.due().IsZero() {
		t.Fatal("still due with nothing counted")
	}
}
