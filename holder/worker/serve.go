package worker

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/handoff/listenpid"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/evloop"
	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/holder/logs"
	"github.com/sockhold/sockhold/throttle"
)

// serveState is a serve-mode worker's copies of the app and what it waits
// for. Copies live in slots 0..N-1 (EINHORN_CHILD_INDEX); nil is empty.
type serveState struct {
	cfg     *config.ServeSettings
	sockets *handoff.AppSockets // NOTIFY_SOCKET and EINHORN_SOCK_PATH
	notify  *handoff.NotifySocket
	einhorn *handoff.EinhornSocket
	acks    map[int]*einhornClient // einhorn clients connected, by fd
	timer   *evloop.Timer
	backoff *throttle.Backoff
	env     []string // every dialect but EINHORN_CHILD_INDEX, which is per copy
	names   []string

	apps           []*app
	restartAt      time.Time    // empty slots are refilled then (zero: none due)
	readySignalled bool         // tableflip told: the new generation is ready
	servingSent    bool         // the holder told
	rolledOut      []int        // old worker: slots stopped for a rolling restart
	demand         onDemand     // serve --on-demand
	othersIdx      map[int]bool // EINHORN_CHILD_INDEX values copies of other generations hold
}

// app is one running copy of the served program.
type app struct {
	slot       int // its place among this generation's copies
	index      int // EINHORN_CHILD_INDEX: the lowest no live copy of any generation held when it started
	pid, pidfd int
	start      time.Time
	ready      bool
	stopping   bool      // sockhold asked it to stop
	refill     bool      // start the slot again once this copy has exited
	stopAt     time.Time // stopped by the worker itself (idle): drain deadline from here
}

func (w *Worker) setupServe() error {
	s := &serveState{cfg: w.cfg.Serve, backoff: throttle.NewBackoff(100*time.Millisecond, 30*time.Second),
		apps: make([]*app, max(1, w.cfg.Serve.Copies))}
	var err error
	if s.sockets, err = handoff.OpenAppSockets(w.cfg.RunAs); err != nil {
		return err
	}
	defer func() {
		if w.serve == nil { // not set up: nobody else will remove them
			s.sockets.Close()
		}
	}()
	s.notify, s.einhorn = s.sockets.Notify, s.sockets.Einhorn
	if s.timer, err = evloop.NewTimer(); err != nil {
		return err
	}
	if err := w.watch(s.notify.FD, kindNotify); err != nil {
		return err
	}
	s.acks = map[int]*einhornClient{}
	if err := w.watch(s.einhorn.FD, kindEinhorn); err != nil {
		return err
	}
	if err := w.watch(s.timer.FD, kindServeTimer); err != nil {
		return err
	}
	// The sockets' mode (blocking unless --nonblocking) was set by the
	// holder before the first copy started, and is never changed: every
	// generation and copy shares one open file description.
	for _, l := range w.listeners {
		s.names = append(s.names, l.Name)
	}
	drop := append(append(append([]string{"SOCKHOLD_VERSION", "SOCKHOLD_GENERATION", listenpid.Env}, handoff.ConnVars...), config.InternalEnv...), handoff.AppVars...)
	if w.cfg.RunAs != nil {
		drop = append(drop, handoff.IdentityVars...)
	}
	s.env = handoff.FilterEnv(os.Environ(), drop, append(config.InternalEnvPrefixes, handoff.AppVarPrefixes...))
	if w.cfg.RunAs != nil {
		s.env = append(s.env, w.cfg.RunAs.Env...)
	}
	s.env = w.cfg.ChildEnv.Apply(s.env)
	s.env = append(s.env, "SOCKHOLD_VERSION="+w.version)
	s.othersIdx = config.DecodeIndices(os.Getenv(config.IndicesEnv))
	w.serve = s
	return nil
}

// copiesLeft: a serve worker that is stopping still has copies draining.
// It stays until they have exited (the holder kills them after
// --drain-timeout), so that until then each keeps its parent
// (EINHORN_MASTER_PID), its NOTIFY_SOCKET (STOPPING=1, STATUS=) and its
// EINHORN_SOCK_PATH.
func (w *Worker) copiesLeft() bool {
	if w.serve == nil {
		return false
	}
	for _, a := range w.serve.apps {
		if a != nil {
			return true
		}
	}
	return false
}

// upgrading: this worker was started by a restart that is not done yet.
func (w *Worker) upgrading() bool { return w.successor && !w.serve.readySignalled }

// rolling: this restart replaces one copy at a time.
func (s *serveState) rolling() bool { return !s.cfg.Fleet && len(s.apps) > 1 }

// startCopies starts the first copies: all of them, except that a rolling
// restart starts one and the next only once the one before is ready.
func (w *Worker) startCopies() {
	if w.upgrading() && w.serve.rolling() {
		w.startApp(0)
		return
	}
	for slot := range w.serve.apps {
		w.startApp(slot)
	}
}

// startApp starts a copy of the app, as it is on disk now, in slot.
func (w *Worker) startApp(slot int) {
	s := w.serve
	if w.stopping {
		return // a stopping worker only waits for its copies
	}
	path, argv := w.cfg.CommandPath, w.cfg.Command
	index := s.freeIndex()
	env := append(append([]string{}, s.env...), handoff.AppEnv(s.names, os.Getpid(), index, s.notify.Addr, s.einhorn.Path)...)
	if !s.cfg.NoListenPID {
		path, argv = listenpid.Args(os.Args[0], path, argv)
		env = append(env, listenpid.Env+"=1")
	}
	var fds []int
	for _, l := range w.listeners {
		fds = append(fds, l.FD)
	}
	out := [2]int{-1, -1}
	if s.cfg.Capture {
		// The read end goes to the holder at once: an app still draining
		// after this worker has gone keeps a reader, and never meets
		// SIGPIPE.
		if err := unix.Pipe2(out[:], unix.O_CLOEXEC); err != nil {
			w.appFailed(fmt.Sprintf("output pipe: %v", err))
			return
		}
		defer unix.Close(out[0])
		defer unix.Close(out[1])
	}
	pid, pidfd, err := handoff.StartApp(path, argv, env, fds, w.cfg.RunAs, out[1])
	if err == nil && s.cfg.Capture {
		w.send(link.Msg{Type: link.Output, PIDs: []int{pid}}, out[0])
	}
	if err != nil {
		reason := fmt.Sprintf("cannot start %s: %v", w.cfg.CommandPath, err)
		if path != w.cfg.CommandPath {
			reason = fmt.Sprintf("cannot start %s through the LISTEN_PID shim %s (the app's user must be able to execute it; or use --no-listen-pid): %v",
				w.cfg.CommandPath, path, err)
		}
		w.appFailed(reason)
		return
	}
	a := &app{slot: slot, index: index, pid: pid, pidfd: pidfd, start: time.Now()}
	s.apps[slot] = a
	w.watch(pidfd, kindApp)
	w.startedProc(pid, pidfd, a.start, "", true, index)
	w.log.Info("app started", "app_pid", pid, "copy", index, "ready", s.cfg.String())
}

// freeIndex is the lowest EINHORN_CHILD_INDEX no live copy holds, of this
// generation or, as far as the holder last said, of another (einhorn's
// rule: a new copy never shares an index with one still serving).
func (s *serveState) freeIndex() int {
	for i := 0; ; i++ {
		taken := s.othersIdx[i]
		for _, a := range s.apps {
			taken = taken || (a != nil && a.index == i)
		}
		if !taken {
			return i
		}
	}
}

func (s *serveState) byPID(pid int) *app {
	for _, a := range s.apps {
		if a != nil && a.pid == pid {
			return a
		}
	}
	return nil
}

func (s *serveState) allReady() bool {
	for _, a := range s.apps {
		if a == nil || !a.ready || a.stopping {
			return false
		}
	}
	return true
}

// serveRearm sets the serve timer to the next thing due: a copy's
// readiness by timer, its ready deadline, or refilling empty slots.
func (w *Worker) serveRearm() {
	s := w.serve
	var due time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (due.IsZero() || t.Before(due)) {
			due = t
		}
	}
	for _, a := range s.apps {
		if a != nil && !a.ready && !a.stopping {
			if s.readyByTimer() {
				earliest(a.start.Add(s.cfg.ReadyAfter))
			}
			earliest(a.start.Add(s.cfg.ReadyTimeout))
		}
	}
	if !w.upgrading() {
		earliest(s.restartAt)
	}
	if s.cfg.OnDemand {
		earliest(w.demandDue())
	}
	if due.IsZero() || w.stopping {
		s.timer.Disarm()
		return
	}
	s.timer.Arm(time.Until(due))
}

// serveTimer handles whatever came due.
func (w *Worker) serveTimer() {
	s := w.serve
	s.timer.Fired()
	now := time.Now()
	for _, a := range s.apps {
		if a == nil || a.ready || a.stopping {
			continue
		}
		switch {
		case s.readyByTimer() && !now.Before(a.start.Add(s.cfg.ReadyAfter)):
			w.appReady(a, "timer")
		case !now.Before(a.start.Add(s.cfg.ReadyTimeout)):
			// Asked to stop, not killed: a copy not ready yet may already
			// have taken connections on the shared socket, and they are
			// answered. The holder kills it after --drain-timeout.
			w.send(link.Msg{Type: link.Drain, Drain: []int{w.stopApp(a)}, DrainMS: s.cfg.DrainTimeout.Milliseconds()})
			w.appFailed(fmt.Sprintf("app %d not ready within --ready-timeout %v", a.pid, s.cfg.ReadyTimeout))
		}
	}
	if s.cfg.OnDemand {
		w.drainIdleStops(now)
		w.checkIdle(now)
	}
	if !w.upgrading() && !s.restartAt.IsZero() && !now.Before(s.restartAt) && !w.stopping {
		s.restartAt = time.Time{}
		for slot, a := range s.apps {
			if a == nil {
				w.startApp(slot)
			}
		}
	}
}

// fromNotify reads sd_notify messages; only a copy's own PID counts.
func (w *Worker) fromNotify() {
	s := w.serve
	for range 64 { // a batch a turn; epoll reports the rest
		m, ok := s.notify.Read()
		if !ok {
			return
		}
		a := s.byPID(m.PID)
		if a == nil {
			w.log.Debug("notify message from another process ignored", "sender", m.PID)
			continue
		}
		if st, ok := m.Fields["STATUS"]; ok {
			w.log.Info("app status", "app_pid", m.PID, "status", st)
		}
		if m.Fields["STOPPING"] == "1" {
			w.log.Info("app stopping", "app_pid", m.PID)
		}
		if m.Fields["READY"] == "1" && s.cfg.ReadyNotify && !a.ready && !a.stopping {
			w.appReady(a, "notify")
		}
	}
}

// readyByTimer: a copy counts as ready after --ready timer:D only when no
// message is asked for; with notify or einhorn only the message counts.
func (s *serveState) readyByTimer() bool { return !s.cfg.ReadyNotify && !s.cfg.ReadyEinhorn }

// fromEinhorn accepts einhorn clients on EINHORN_SOCK_PATH.
func (w *Worker) fromEinhorn() {
	s := w.serve
	for range 16 { // at most a batch a turn; epoll reports the rest
		fd, pid := s.einhorn.Accept()
		if fd < 0 {
			return
		}
		if len(s.acks) >= 16 || w.watch(fd, kindEinhornConn) != nil {
			unix.Close(fd)
			continue
		}
		s.acks[fd] = &einhornClient{pid: pid}
	}
}

// einhornClient is one connection on EINHORN_SOCK_PATH: who connected, as
// the kernel recorded it (SO_PEERCRED), and its unread input.
type einhornClient struct {
	pid int
	in  []byte
}

// einhornInput reads what an einhorn client sent: one message a line. A
// "worker:ack" from a copy itself makes it ready (with --ready einhorn);
// the "pid" the message claims is not what decides.
func (w *Worker) einhornInput(fd int) {
	s := w.serve
	c := s.acks[fd]
	buf := make([]byte, 4096)
	n, err := unix.Read(fd, buf)
	if n > 0 {
		c.in = append(c.in, buf[:n]...)
	}
	for {
		line, rest, ok := cutLine(c.in)
		if !ok {
			break
		}
		c.in = rest
		m, perr := handoff.ParseEinhornLine(line)
		a := s.byPID(c.pid)
		switch {
		case perr != nil:
			w.log.Warn("einhorn message ignored", "error", perr)
		case m.Command == "worker:ack" && a == nil:
			w.log.Warn("einhorn ack from a process that is not a copy of the app ignored", "sender", c.pid, "claimed_pid", m.PID)
		case m.Command == "worker:ack":
			if s.cfg.ReadyEinhorn && !a.ready && !a.stopping {
				w.appReady(a, "einhorn")
			}
		default:
			// Every other command expects an answer (einhornsh waits for
			// one), even if it is that sockhold does not do it.
			einhornReply(fd, w.einhornAnswer(m.Command))
		}
	}
	if n == 0 || (err != nil && err != unix.EAGAIN && err != unix.EINTR) || len(c.in) > 64<<10 {
		delete(s.acks, fd)
		delete(w.kinds, fd)
		w.poll.Del(fd)
		unix.Close(fd)
	}
}

// einhornAnswer carries out an einhorn command (what sockhold can of it)
// and says what was done, in einhorn's words where it has them.
func (w *Worker) einhornAnswer(command string) string {
	switch command {
	case "ehlo":
		return fmt.Sprintf("Welcome! You are speaking to sockhold %s (einhorn-compatible commands: state, upgrade, reload) as worker %d.", w.version, os.Getpid())
	case "state":
		var b strings.Builder
		fmt.Fprintf(&b, "generation %d, worker %d", w.gen, os.Getpid())
		for _, a := range w.serve.apps {
			if a != nil {
				fmt.Fprintf(&b, "\ncopy %d: pid %d, ready %v, stopping %v", a.index, a.pid, a.ready, a.stopping)
			}
		}
		return b.String()
	case "upgrade", "reload":
		if w.stopping {
			return "This generation is stopping; the current one restarts."
		}
		w.log.Info("einhorn command: restarting", "command", command)
		w.send(link.Msg{Type: link.Restart})
		return "Upgrading, as commanded"
	default:
		return "Unrecognized command: " + command
	}
}

// einhornReply sends one message in einhorn's wire format: a JSON (so
// YAML) mapping with the text under "message", '%' and newlines escaped,
// one line. The client reads it at once; one that does not loses it, and
// the loop never waits for it.
func einhornReply(fd int, text string) {
	b, _ := json.Marshal(map[string]string{"message": text})
	line := strings.NewReplacer("%", "%25", "\n", "%0A").Replace(string(b)) + "\n"
	unix.Write(fd, []byte(line))
}

func cutLine(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", b, false
}

func (w *Worker) appReady(a *app, how string) {
	s := w.serve
	a.ready = true
	s.backoff.Reset()
	s.demand.startFailures = 0
	w.log.Info("app ready", "app_pid", a.pid, "copy", a.slot, "by", how, "after", time.Since(a.start).Round(10*time.Microsecond).String())
	if w.upgrading() && s.rolling() && a.slot < len(s.apps)-1 {
		// Rolling: one more new copy is ready, so one old copy may stop;
		// then the next new copy starts.
		w.send(link.Msg{Type: link.Rolled})
		w.startApp(a.slot + 1)
	}
	if !s.readySignalled && s.allReady() {
		s.readySignalled = true
		// For a restart, this is the moment the old generation learns
		// that the new one is ready, and only now may it stop its copies.
		if err := w.upg.Ready(); err != nil {
			w.log.Warn("tableflip could not tell the previous worker", "error", err)
		}
	}
	w.sayServing()
}

// sayServing tells the holder once every copy is ready and the generation
// known.
func (w *Worker) sayServing() {
	s := w.serve
	idle := s.cfg.OnDemand && s.demand.watching
	if s.servingSent || !w.adopted || !(s.allReady() || idle) {
		return
	}
	s.servingSent = true
	w.send(link.Msg{Type: link.Serving, Generation: w.gen, Version: w.version})
	w.log.Info("worker serving", "copies", len(s.apps), "version", w.version)
}

// appExited reaps a copy and decides what follows.
func (w *Worker) appExited(pidfd int) {
	s := w.serve
	var a *app
	for _, c := range s.apps {
		if c != nil && c.pidfd == pidfd {
			a = c
		}
	}
	if a == nil {
		return
	}
	s.apps[a.slot] = nil
	delete(w.kinds, a.pidfd)
	w.poll.Del(a.pidfd)
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(a.pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	unix.Close(a.pidfd)
	w.reapedApp(a.pid, ws)
	attrs := append([]any{"app_pid", a.pid, "copy", a.slot, "ran", time.Since(a.start).Round(time.Millisecond).String()}, logs.WaitAttrs(ws)...)
	switch {
	case a.stopping && a.refill && !w.stopping:
		w.log.Info("app exited; starting its slot again", attrs...)
		w.startApp(a.slot)
	case a.stopping:
		w.log.Info("app exited", attrs...)
		if s.cfg.OnDemand && s.allEmpty() && !w.stopping && !w.upgrading() {
			w.watchForDemand()
		}
	case !a.ready:
		w.log.Warn("app exited before it was ready", attrs...)
		w.appFailed(fmt.Sprintf("app %d exited before it was ready (%s)", a.pid, describe(ws)))
	case w.upgrading():
		w.appFailed(fmt.Sprintf("app %d exited during the restart (%s)", a.pid, describe(ws)))
	default:
		w.log.Warn("app exited unexpectedly; restarting it", attrs...)
		w.scheduleAppRestart()
	}
}

// appFailed handles a copy that never became ready. In a worker started by
// a restart that is the restart failing: the worker stops what it started,
// says why and exits; tableflip reports it, and the old generation keeps
// (or gets back) all its copies. Otherwise the slot is refilled with backoff.
func (w *Worker) appFailed(reason string) {
	if w.upgrading() {
		drain := w.stopAll()
		w.send(link.Msg{Type: link.UpgradeFailed, Reason: reason, Drain: drain, DrainMS: w.serve.cfg.DrainTimeout.Milliseconds()})
		w.log.Warn("restart abandoned", "reason", reason)
		w.stopping, w.exitCode = true, 1
		return
	}
	w.log.Warn("app failed", "reason", reason)
	if w.onDemand() && w.startFailed() {
		return
	}
	w.scheduleAppRestart()
}

func (w *Worker) scheduleAppRestart() {
	if w.stopping || !w.serve.restartAt.IsZero() {
		return
	}
	d := w.serve.backoff.Fail()
	w.serve.restartAt = time.Now().Add(d)
	w.log.Info("app restart scheduled", "in", d.String(), "failures", w.serve.backoff.Failures())
}

// stopApp asks one copy to stop with --stop-signal; the holder, its parent
// once this worker has exited, enforces --drain-timeout.
func (w *Worker) stopApp(a *app) int {
	a.stopping = true
	unix.PidfdSendSignal(a.pidfd, unix.Signal(w.serve.cfg.StopSignal), nil, 0)
	w.log.Info("app asked to stop", "app_pid", a.pid, "copy", a.slot, "signal", unix.SignalName(unix.Signal(w.serve.cfg.StopSignal)))
	return a.pid
}

// stopAll asks every running copy to stop and returns their PIDs.
func (w *Worker) stopAll() []int {
	var pids []int
	for _, a := range w.serve.apps {
		if a != nil && !a.stopping {
			pids = append(pids, w.stopApp(a))
		}
	}
	return pids
}

// stopOne is the old generation's half of a rolling restart: one new copy
// is ready, so one old copy stops (the lowest slot still running).
func (w *Worker) stopOne() {
	for _, a := range w.serve.apps {
		if a != nil && !a.stopping {
			pid := w.stopApp(a)
			w.serve.rolledOut = append(w.serve.rolledOut, a.slot)
			w.send(link.Msg{Type: link.Drain, Drain: []int{pid}, DrainMS: w.serve.cfg.DrainTimeout.Milliseconds()})
			return
		}
	}
}

// restartFailed: the old generation gets back the copies a rolling restart
// had already stopped.
func (w *Worker) restartFailed() {
	s := w.serve
	if w.stopping {
		// Stopping (sockhold stops, or this generation was replaced):
		// nothing starts again.
		s.rolledOut = nil
		return
	}
	for _, slot := range s.rolledOut {
		if a := s.apps[slot]; a != nil {
			a.refill = true
		} else {
			w.startApp(slot)
		}
	}
	s.rolledOut = nil
}

// signalAll passes a forwarded signal to every copy.
func (w *Worker) signalAll(sig unix.Signal) {
	for _, a := range w.serve.apps {
		if a != nil {
			unix.PidfdSendSignal(a.pidfd, sig, nil, 0)
			w.log.Info("signal passed on to the app", "app_pid", a.pid, "copy", a.slot, "signal", unix.SignalName(sig))
		}
	}
}

func describe(ws syscall.WaitStatus) string {
	a := logs.WaitAttrs(ws)
	return fmt.Sprintf("%v %v", a[0], a[1])
}
