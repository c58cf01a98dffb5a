package throttle

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSlotsLimitAndUnlimited(t *testing.T) {
	s := NewSlots(2)
	if !s.Free() {
		t.Fatal("empty slots not free")
	}
	s.Take()
	s.Take()
	if s.Free() {
		t.Fatal("2 of 2 used but Free")
	}
	s.Take() // inherited handlers may exceed the limit
	s.Release()
	if s.Free() {
		t.Fatal("still 2 of 2 used after overshoot and one release")
	}
	s.Release()
	if !s.Free() || s.Used() != 1 {
		t.Fatalf("used=%d free=%v", s.Used(), s.Free())
	}
	u := NewSlots(0)
	for i := 0; i < 1000; i++ {
		u.Take()
	}
	if !u.Free() {
		t.Fatal("unlimited slots not free")
	}
}

func writeLoad(t *testing.T, path, v string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(v+" 0.00 0.00 1/100 42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadGateFirstAlwaysThenThreshold(t *testing.T) {
	p := filepath.Join(t.TempDir(), "loadavg")
	writeLoad(t, p, "5.00")
	a := Admission{Slots: NewSlots(0), Load: LoadGate{Limit: 1, Path: p}}
	if v, _ := a.Check(); v != Admit {
		t.Fatalf("first connection: %v, want admit", v)
	}
	a.Slots.Take()
	if v, load := a.Check(); v != Overloaded || load != 5 {
		t.Fatalf("second at load 5: %v %v", v, load)
	}
	writeLoad(t, p, "0.50")
	if v, _ := a.Check(); v != Admit {
		t.Fatalf("second at load 0.5: %v", v)
	}
	writeLoad(t, p, "1.00")
	if v, _ := a.Check(); v != Overloaded {
		t.Fatalf("load equal to limit must not admit: %v", v)
	}
}

func TestLoadGateUnreadableFailsOpen(t *testing.T) {
	g := LoadGate{Limit: 1, Path: filepath.Join(t.TempDir(), "missing")}
	if ok, _ := g.Open(3); !ok {
		t.Fatal("unreadable load file closed the gate")
	}
}

func TestReadLoadRejectsGarbage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "loadavg")
	os.WriteFile(p, []byte("abc"), 0o644)
	if _, err := ReadLoad(p); err == nil {
		t.Fatal("garbage parsed")
	}
}

func TestFullBeatsLoad(t *testing.T) {
	a := Admission{Slots: NewSlots(1), Load: LoadGate{}}
	a.Slots.Take()
	if v, _ := a.Check(); v != Full {
		t.Fatalf("got %v", v)
	}
}

func TestBackoffDoublesCapsAndResets(t *testing.T) {
	b := NewBackoff(10*time.Millisecond, 50*time.Millisecond)
	want := []time.Duration{10, 20, 40, 50, 50}
	for i, w := range want {
		if got := b.Fail(); got != w*time.Millisecond {
			t.Fatalf("fail %d: %v want %v", i, got, w*time.Millisecond)
		}
	}
	if b.Failures() != 5 {
		t.Fatal(b.Failures())
	}
	b.Reset()
	if got := b.Fail(); got != 10*time.Millisecond {
		t.Fatalf("after reset %v", got)
	}
}
