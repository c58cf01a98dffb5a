package worker

import (
	"testing"

	"golang.org/x/sys/unix"
)

// FIOASYNC differs between architectures; on this one it must switch
// O_ASYNC on a socket's open file description and off again.
func TestFIOASYNCTogglesOAsync(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, on := range []bool{true, false} {
		if err := setAsync(fd, on); err != nil {
			t.Fatalf("setAsync(%v): %v", on, err)
		}
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := fl&unix.O_ASYNC != 0; got != on {
			t.Fatalf("after setAsync(%v), O_ASYNC is %v", on, got)
		}
	}
}
