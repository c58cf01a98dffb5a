package link

import (
	"errors"
	"os"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func pair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := NewConn(p[0], nil)
	b, _ := NewConn(p[1], nil)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestMessageCarriesDescriptors(t *testing.T) {
	a, b := pair(t)
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := a.Send(Msg{Type: Adopt, Generation: 7, PIDs: []int{42}}, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	m, fds, err := b.Recv()
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
	unix.Write(a.FD, []byte("not json"))
	if _, _, err := b.Recv(); err == nil {
		t.Fatal("garbage accepted")
	}
	if _, _, err := b.Recv(); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("nothing waiting: %v, want EAGAIN", err)
	}
	unix.Close(a.FD)
	if _, _, err := b.Recv(); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed peer: %v", err)
	}
}

// A peer that does not read never blocks the sender: messages queue (with
// their descriptors kept) until it reads again, and a queue that reaches
// its bound says the peer is wedged.
func TestSendNeverBlocksAndQueueIsBounded(t *testing.T) {
	a, b := pair(t)
	a.maxKeep = 50
	f, _ := os.Open("/dev/null")
	defer f.Close()
	sent := 0
	var err error
	for ; sent < 100000; sent++ {
		if err = a.Send(Msg{Type: Procs, Exited: make([]int, 200)}, int(f.Fd())); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrBacklog) || !a.Pending() {
		t.Fatalf("after %d sends: %v, pending %v; want the bounded queue to fill", sent, err, a.Pending())
	}
	got := 0
	for got < sent {
		m, fds, err := b.Recv()
		if errors.Is(err, unix.EAGAIN) {
			if err := a.Flush(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err != nil || m.Type != Procs || len(fds) != 1 {
			t.Fatalf("message %d: %+v %v %v", got, m, fds, err)
		}
		unix.Close(fds[0])
		got++
	}
	if a.Pending() {
		t.Fatal("queue not empty after the peer read everything")
	}
}

// Descriptors that do not fit the receiver's table are reported as a
// failed handover, never as a shorter list.
func TestTruncatedDescriptorsAreAnError(t *testing.T) {
	a, b := pair(t)
	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	f, _ := os.Open("/dev/null")
	defer f.Close()
	fds := make([]int, 10)
	for i := range fds {
		fds[i] = int(f.Fd())
	}
	if err := a.Send(Msg{Type: Adopt}, fds...); err != nil {
		t.Fatal(err)
	}
	// Fill this process's table so that the 10 cannot all be installed.
	var hog []int
	defer func() {
		for _, fd := range hog {
			unix.Close(fd)
		}
		unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}()
	small := lim
	small.Cur = 64
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &small); err != nil {
		t.Skip(err)
	}
	for {
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			break
		}
		hog = append(hog, fd)
	}
	unix.Close(hog[len(hog)-1]) // room for the buffers Recv needs, not for 10 fds
	hog = hog[:len(hog)-1]
	if _, _, err := b.Recv(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("recv at the descriptor limit: %v, want ErrTruncated", err)
	}
}

func TestRendezvousReportsCaller(t *testing.T) {
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
	p, err := Accept(l)
	if err != nil || p.PID != os.Getpid() || p.UID != os.Geteuid() {
		t.Fatalf("%+v %v", p, err)
	}
	defer unix.Close(p.FD)
	if p.Pidfd >= 0 {
		defer unix.Close(p.Pidfd)
		if err := unix.PidfdSendSignal(p.Pidfd, 0, nil, 0); err != nil {
			t.Fatalf("peer pidfd does not reach this process: %v", err)
		}
	}
	if _, err := Accept(l); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("accept with nobody waiting: %v, want EAGAIN", err)
	}
}

func TestTooManyDescriptorsRefused(t *testing.T) {
	a, _ := pair(t)
	fds := make([]int, MaxFDs+1)
	if err := a.Send(Msg{Type: Adopt}, fds...); err == nil {
		t.Fatal("more than SCM_MAX_FD descriptors accepted")
	}
}

// Reports travel in their binary form and come out as they went in.
func TestReportsRoundTrip(t *testing.T) {
	a, b := pair(t)
	f, _ := os.Open("/dev/null")
	defer f.Close()
	want := Msg{Type: Procs,
		Started: []Proc{{PID: 4242, Start: 1764631234567890123, Peer: "[::1]:54321"}, {PID: 7, Start: -1, App: true, Slot: 3}},
		Exited:  []int{4000, 1}, AppExits: []AppExit{{PID: 1, Status: 9}},
		Counts: &Counts{Accepted: 2, Rejected: 300, SpawnFailures: 1}}
	if err := a.Send(want, int(f.Fd()), int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	got, fds, err := b.Recv()
	if err != nil || len(fds) != 2 {
		t.Fatalf("%v %v", fds, err)
	}
	closeAll(fds)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if err := decodeProcs([]byte{procsTag, 5, 1}, &got); err == nil {
		t.Fatal("a truncated report decoded")
	}
	// The form without app exits (an older worker's) still reads.
	old := want
	old.AppExits = nil
	if err := decodeProcs(AppendProcs(nil, &old), &got); err != nil || !reflect.DeepEqual(got, old) {
		t.Fatalf("report without app exits: %+v %v", got, err)
	}
}
