package worker

import (
	"os"
	"os/signal"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// arrivalWatch tells an on-demand worker that connections arrived on
// listeners the running app accepts from, however quickly the app takes
// them.
//
// Watching the listener with epoll (even edge-triggered) is not enough:
// epoll re-polls a descriptor before reporting it, and a listener whose
// queue the app has already emptied reports nothing, so a busy app looked
// idle and was stopped mid-traffic. Signal-driven I/O is raised by the
// kernel at the moment a connection joins the queue (sock_def_readable →
// SIGIO to the file's owner), before anyone can accept it, and a pending
// signal is kept while the worker is not scheduled.
//
// One signal is enough until the next idle check: the first one turns the
// signals off and the check turns them back on, so a busy app costs the
// worker one signal per check, not one per connection.
//
// O_ASYNC and the owner belong to the open file, which the app shares. An
// app that clears O_ASYNC with F_SETFL would silence the watch until the
// next check, which puts it back.
type arrivalWatch struct {
	fds     []int
	arrived atomic.Bool
	on      atomic.Bool // signals wanted (an app runs)
}

func newArrivalWatch(fds []int) *arrivalWatch {
	a := &arrivalWatch{fds: fds}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGIO)
	go func() {
		for range sigc {
			// Off first, then the flag: a check in between turns the
			// signals back on and the flag still reaches the next one.
			a.setAll(false)
			a.arrived.Store(true)
		}
	}()
	return a
}

// start makes this worker the owner of the listeners' SIGIO.
func (a *arrivalWatch) start() error {
	a.on.Store(true)
	a.arrived.Store(false)
	for _, fd := range a.fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETOWN, os.Getpid()); err != nil {
			return err
		}
	}
	return a.setAll(true)
}

// stop turns the signals off while no app runs (the worker then watches
// the listeners itself).
func (a *arrivalWatch) stop() {
	a.on.Store(false)
	a.setAll(false)
}

// take reports whether a connection arrived since the last call, and
// asks to hear of the next one.
func (a *arrivalWatch) take() bool {
	arrived := a.arrived.Swap(false)
	a.setAll(true)
	return arrived
}

// setAll turns O_ASYNC on or off on every listener; on only while an app
// runs.
func (a *arrivalWatch) setAll(on bool) error {
	on = on && a.on.Load()
	var first error
	for _, fd := range a.fds {
		if err := setAsync(fd, on); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// setAsync uses FIOASYNC, not F_GETFL+F_SETFL: the file's flags are the
// app's too, and a read-modify-write racing with the app setting
// O_NONBLOCK could leave its listener blocking.
func setAsync(fd int, on bool) error {
	v := 0
	if on {
		v = 1
	}
	return unix.IoctlSetPointerInt(fd, fioAsync, v)
}
