package link

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func pair(t *testing.T) (int, int) {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

func TestMessageCarriesDescriptors(t *testing.T) {
	a, b := pair(t)
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Send(a, Msg{Type: Adopt, Generation: 7, PIDs: []int{42}}, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	m, fds, err := Recv(b)
	if err != nil || m.Type != Adopt || m.Generation != 7 || len(fds) != 1 || m.PIDs[0] != 42 {
		t.Fatalf("%+v %v %v", m, fds, err)
	}
	var st1, st2 unix.Stat_t
	unix.Fstat(int(f.Fd()), &st1)
	unix.Fstat(fds[0], &st2)
	if st1.Ino != st2.Ino {
		t.Fatal("received descriptor is not the file sent")
	}
	if flags, _ := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
		t.Fatal("received descriptor is not close-on-exec")
	}
	unix.Close(fds[0])
}

func TestGarbageAndClosedPeer(t *testing.T) {
	a, b := pair(t)
	unix.Write(a, []byte("not json"))
	if _, _, err := Recv(b); err == nil {
		t.Fatal("garbage accepted")
	}
	unix.Close(a)
	if _, _, err := Recv(b); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed peer: %v", err)
	}
}

func TestRendezvousReportsCallerPID(t *testing.T) {
	l, name, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l)
	c, err := Dial(name)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(c)
	fd, pid, uid, err := Accept(l)
	if err != nil || pid != os.Getpid() || uid != os.Geteuid() {
		t.Fatalf("fd %d pid %d uid %d %v", fd, pid, uid, err)
	}
	unix.Close(fd)
}

func TestTooManyDescriptorsRefused(t *testing.T) {
	a, _ := pair(t)
	fds := make([]int, maxFDs+1)
	if err := Send(a, Msg{Type: Adopt}, fds...); err == nil {
		t.Fatal("more than SCM_MAX_FD descriptors accepted")
	}
}
