package worker

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/holder/config"
	"github.com/sockhold/sockhold/holder/link"
	"github.com/sockhold/sockhold/holder/logs"
	"github.com/sockhold/sockhold/throttle"
)

// serveState is a serve-mode worker's one app copy and what it waits for.
type serveState struct {
	cfg     *config.ServeSettings
	notify  *handoff.NotifySocket
	einhorn *handoff.EinhornSocket
	acks    map[int][]byte // einhorn clients connected: unread input by fd
	timer   *timer
	backoff *throttle.Backoff
	env     []string // the app's environment, every dialect included

	app            *app
	restartAt      time.Time // a restart is due (zero: none)
	readySignalled bool      // tableflip told: the new generation is ready
	servingSent    bool      // the holder told
}

// app is one running copy of the served program.
type app struct {
	pid, pidfd int
	start      time.Time
	ready      bool
	stopping   bool // sockhold asked it to stop
}

func (w *Worker) setupServe() error {
	s := &serveState{cfg: w.cfg.Serve, backoff: throttle.NewBackoff(100*time.Millisecond, 30*time.Second)}
	var err error
	if s.notify, err = handoff.ListenNotify(); err != nil {
		return fmt.Errorf("notify socket: %v", err)
	}
	if s.timer, err = newTimer(); err != nil {
		return err
	}
	if err := w.watch(s.notify.FD, kindNotify); err != nil {
		return err
	}
	if s.einhorn, err = handoff.ListenEinhorn(); err != nil {
		return fmt.Errorf("einhorn socket: %v", err)
	}
	s.acks = map[int][]byte{}
	if err := w.watch(s.einhorn.FD, kindEinhorn); err != nil {
		return err
	}
	if err := w.watch(s.timer.fd, kindServeTimer); err != nil {
		return err
	}
	var names []string
	for _, l := range w.listeners {
		names = append(names, l.Name)
		// Nobody in sockhold accepts in serve mode: hand the app the
		// sockets in blocking mode, as systemd does by default.
		unix.SetNonblock(l.FD, false)
	}
	drop := append(append(append([]string{"SOCKHOLD_VERSION", "SOCKHOLD_GENERATION", handoff.ShimEnv}, handoff.ConnVars...), config.InternalEnv...), handoff.AppVars...)
	if w.cfg.RunAs != nil {
		drop = append(drop, handoff.IdentityVars...)
	}
	s.env = handoff.FilterEnv(os.Environ(), drop, append(config.InternalEnvPrefixes, handoff.AppVarPrefixes...))
	if w.cfg.RunAs != nil {
		s.env = append(s.env, w.cfg.RunAs.Env...)
	}
	s.env = append(s.env, "SOCKHOLD_VERSION="+w.version)
	s.env = append(s.env, handoff.AppEnv(names, os.Getpid(), 0, s.notify.Addr, s.einhorn.Path)...)
	w.serve = s
	return nil
}

// startApp starts a copy of the app as it is on disk now.
func (w *Worker) startApp() {
	s := w.serve
	path, argv, env := w.cfg.CommandPath, w.cfg.Command, s.env
	if !s.cfg.NoListenPID {
		path, argv = handoff.ShimArgs(os.Args[0], path, argv)
		env = append(append([]string{}, env...), handoff.ShimEnv+"=1")
	}
	var fds []int
	for _, l := range w.listeners {
		fds = append(fds, l.FD)
	}
	pid, pidfd, err := handoff.StartApp(path, argv, env, fds, w.cfg.RunAs)
	if err != nil {
		reason := fmt.Sprintf("cannot start %s: %v", w.cfg.CommandPath, err)
		if path != w.cfg.CommandPath {
			reason = fmt.Sprintf("cannot start %s through the LISTEN_PID shim %s (the app's user must be able to execute it; or use --no-listen-pid): %v",
				w.cfg.CommandPath, path, err)
		}
		w.appFailed(reason)
		return
	}
	s.app = &app{pid: pid, pidfd: pidfd, start: time.Now()}
	w.watch(pidfd, kindApp)
	w.log.Info("app started", "app_pid", pid, "ready", s.cfg.String())
}

// serveRearm sets the serve timer to the next thing due: the app's
// readiness by timer, its ready deadline, or a restart after backoff.
func (w *Worker) serveRearm() {
	s := w.serve
	var due time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (due.IsZero() || t.Before(due)) {
			due = t
		}
	}
	if a := s.app; a != nil && !a.ready && !a.stopping {
		if s.readyByTimer() {
			earliest(a.start.Add(s.cfg.ReadyAfter))
		}
		earliest(a.start.Add(s.cfg.ReadyTimeout))
	}
	if s.app == nil && !w.stopping {
		earliest(s.restartAt)
	}
	if due.IsZero() || w.stopping {
		s.timer.disarm()
		return
	}
	s.timer.arm(time.Until(due))
}

// serveTimer handles whatever came due.
func (w *Worker) serveTimer() {
	s := w.serve
	s.timer.fired()
	now := time.Now()
	if a := s.app; a != nil && !a.ready && !a.stopping {
		switch {
		case s.readyByTimer() && !now.Before(a.start.Add(s.cfg.ReadyAfter)):
			w.appReady("timer")
		case !now.Before(a.start.Add(s.cfg.ReadyTimeout)):
			unix.PidfdSendSignal(a.pidfd, unix.SIGKILL, nil, 0)
			a.stopping = true
			w.appFailed(fmt.Sprintf("app %d not ready within --ready-timeout %v", a.pid, s.cfg.ReadyTimeout))
		}
	}
	if s.app == nil && !s.restartAt.IsZero() && !now.Before(s.restartAt) && !w.stopping {
		s.restartAt = time.Time{}
		w.startApp()
	}
}

// fromNotify reads sd_notify messages; only the app's own PID counts.
func (w *Worker) fromNotify() {
	s := w.serve
	for {
		m, ok := s.notify.Read()
		if !ok {
			return
		}
		if s.app == nil || m.PID != s.app.pid {
			w.log.Debug("notify message from another process ignored", "sender", m.PID)
			continue
		}
		if st, ok := m.Fields["STATUS"]; ok {
			w.log.Info("app status", "app_pid", m.PID, "status", st)
		}
		if m.Fields["STOPPING"] == "1" {
			w.log.Info("app stopping", "app_pid", m.PID)
		}
		if m.Fields["READY"] == "1" && s.cfg.ReadyNotify && !s.app.ready {
			w.appReady("notify")
		}
	}
}

// readyByTimer: an app counts as ready after --ready timer:D only when no
// message is asked for; with notify or einhorn only the message counts.
func (s *serveState) readyByTimer() bool { return !s.cfg.ReadyNotify && !s.cfg.ReadyEinhorn }

// fromEinhorn accepts einhorn clients on EINHORN_SOCK_PATH.
func (w *Worker) fromEinhorn() {
	s := w.serve
	for {
		fd := s.einhorn.Accept()
		if fd < 0 {
			return
		}
		if len(s.acks) >= 16 || w.watch(fd, kindEinhornConn) != nil {
			unix.Close(fd)
			continue
		}
		s.acks[fd] = nil
	}
}

// einhornInput reads what an einhorn client sent: one message a line. A
// "worker:ack" for the app's own PID makes it ready (with --ready einhorn).
func (w *Worker) einhornInput(fd int) {
	s := w.serve
	buf := make([]byte, 4096)
	n, err := unix.Read(fd, buf)
	if n > 0 {
		s.acks[fd] = append(s.acks[fd], buf[:n]...)
	}
	for {
		line, rest, ok := cutLine(s.acks[fd])
		if !ok {
			break
		}
		s.acks[fd] = rest
		m, perr := handoff.ParseEinhornLine(line)
		switch {
		case perr != nil:
			w.log.Warn("einhorn message ignored", "error", perr)
		case m.Command == "worker:ack" && s.app != nil && m.PID == s.app.pid:
			if s.cfg.ReadyEinhorn && !s.app.ready {
				w.appReady("einhorn")
			}
		default:
			w.log.Debug("einhorn command ignored", "command", m.Command, "pid", m.PID)
		}
	}
	if n == 0 || (err != nil && err != unix.EAGAIN && err != unix.EINTR) || len(s.acks[fd]) > 64<<10 {
		delete(s.acks, fd)
		delete(w.kinds, fd)
		w.poll.del(fd)
		unix.Close(fd)
	}
}

func cutLine(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", b, false
}

func (w *Worker) appReady(how string) {
	s := w.serve
	s.app.ready = true
	s.backoff.Reset()
	w.log.Info("app ready", "app_pid", s.app.pid, "by", how, "after", time.Since(s.app.start).Round(time.Millisecond).String())
	if !s.readySignalled {
		s.readySignalled = true
		// For an upgrade, this is the moment the old generation learns
		// that the new one is ready, and only now may it stop its app.
		if err := w.upg.Ready(); err != nil {
			w.log.Warn("tableflip could not tell the previous worker", "error", err)
		}
	}
	w.sayServing()
}

// sayServing tells the holder once the app is ready and the generation known.
func (w *Worker) sayServing() {
	s := w.serve
	if s.servingSent || !w.adopted || s.app == nil || !s.app.ready {
		return
	}
	s.servingSent = true
	link.Send(w.holder, link.Msg{Type: link.Serving, Generation: w.gen, Version: w.version})
	w.log.Info("worker serving", "app_pid", s.app.pid, "version", w.version)
}

// appExited reaps the app and decides what follows.
func (w *Worker) appExited() {
	s := w.serve
	a := s.app
	s.app = nil
	delete(w.kinds, a.pidfd)
	w.poll.del(a.pidfd)
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(a.pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	unix.Close(a.pidfd)
	attrs := append([]any{"app_pid", a.pid, "ran", time.Since(a.start).Round(time.Millisecond).String()}, logs.WaitAttrs(ws)...)
	switch {
	case a.stopping:
		w.log.Info("app exited", attrs...)
	case !a.ready:
		w.log.Warn("app exited before it was ready", attrs...)
		w.appFailed(fmt.Sprintf("app %d exited before it was ready (%s)", a.pid, describe(ws)))
	default:
		w.log.Warn("app exited unexpectedly; restarting it", attrs...)
		w.scheduleAppRestart()
	}
}

// appFailed handles an app that never became ready. In a worker started
// by an upgrade that is the upgrade failing: the worker says why and exits,
// tableflip reports it, and the old generation keeps serving. Otherwise the
// app is restarted with backoff.
func (w *Worker) appFailed(reason string) {
	if w.upg.HasParent() && !w.serve.readySignalled {
		link.Send(w.holder, link.Msg{Type: link.UpgradeFailed, Reason: reason})
		w.log.Warn("upgrade abandoned", "reason", reason)
		w.stopping, w.exitCode = true, 1
		return
	}
	w.log.Warn("app failed", "reason", reason)
	if w.serve.app == nil {
		w.scheduleAppRestart()
	}
}

func (w *Worker) scheduleAppRestart() {
	if w.stopping {
		return
	}
	d := w.serve.backoff.Fail()
	w.serve.restartAt = time.Now().Add(d)
	w.log.Info("app restart scheduled", "in", d.String(), "failures", w.serve.backoff.Failures())
}

// stopApp asks the app to stop with --stop-signal; the holder, its parent
// once this worker has exited, enforces --drain-timeout.
func (w *Worker) stopApp() []int {
	a := w.serve.app
	if a == nil {
		return nil
	}
	a.stopping = true
	unix.PidfdSendSignal(a.pidfd, unix.Signal(w.serve.cfg.StopSignal), nil, 0)
	w.log.Info("app asked to stop", "app_pid", a.pid, "signal", unix.SignalName(unix.Signal(w.serve.cfg.StopSignal)))
	return []int{a.pid}
}

func describe(ws syscall.WaitStatus) string {
	a := logs.WaitAttrs(ws)
	return fmt.Sprintf("%v %v", a[0], a[1])
}
