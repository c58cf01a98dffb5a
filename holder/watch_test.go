package holder

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/sockhold/sockhold/holder/evloop"
	"golang.org/x/sys/unix"
)

// A descriptor the kernel will not watch keeps its role and is offered
// again until it takes; then its events arrive like any other's. (epoll
// refuses regular files; the same number then becomes a pipe, as if the
// kernel had memory again.)
func TestRefusedWatchIsRetried(t *testing.T) {
	poll, err := evloop.NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer poll.Close()
	h := &Holder{poll: poll, roles: map[int]fdRole{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}

	f, err := os.Create(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := h.watch(fd, fdRelay, fd); err == nil {
		t.Fatal("epoll watched a regular file")
	}
	if h.roles[fd].kind != fdRelay || !h.unwatched[fd] || h.watchRetryAt.IsZero() {
		t.Fatalf("refused descriptor not kept for a retry: role %v, unwatched %v, retry at %v", h.roles[fd], h.unwatched, h.watchRetryAt)
	}
	if !h.next().Equal(h.watchRetryAt) {
		t.Fatal("the retry is not among the loop's deadlines")
	}
	h.retryWatches()
	if !h.unwatched[fd] || h.watchRetryAt.IsZero() {
		t.Fatal("a descriptor still refused was dropped from the retries")
	}

	// What it is to be watched for changes while it is refused: it is
	// watched for that once it takes (writable, not readable, though
	// input waits).
	h.setWatch(fd, false, true)
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if err := unix.Dup3(p[0], fd, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Write(p[1], []byte("x"))
	h.retryWatches()
	if len(h.unwatched) != 0 || !h.watchRetryAt.IsZero() {
		t.Fatalf("watchable now, yet still retried: %v", h.unwatched)
	}
	ready, err := poll.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(ready) != 1 || ready[0].FD != fd || !ready[0].Writable || ready[0].Readable {
		t.Fatalf("events after the retry: %+v, want writable only", ready)
	}
	h.unwatch(fd)
	if _, ok := h.roles[fd]; ok {
		t.Fatal("unwatch left the role")
	}
}

// Unwatching a descriptor that was never taken forgets it: no retry adds
// it (or whatever reuses its number) later.
func TestUnwatchForgetsARefusedDescriptor(t *testing.T) {
	poll, err := evloop.NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer poll.Close()
	h := &Holder{poll: poll, roles: map[int]fdRole{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f, err := os.Create(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	h.watch(fd, fdRelay, fd)
	h.unwatch(fd)
	if len(h.unwatched) != 0 || len(h.roles) != 0 {
		t.Fatalf("left behind: unwatched %v, roles %v", h.unwatched, h.roles)
	}
}
