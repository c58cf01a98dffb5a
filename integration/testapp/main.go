// Command testapp is the long-running server the serve-mode tests run
// behind sockhold. It takes its listeners in the dialect named by -dialect,
// answers each connection with "TAG PID", and records its life (ready,
// stop signal) with timestamps in -events, so tests can check ordering
// from the apps' own clocks.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

func main() {
	dialect := flag.String("dialect", "systemd", "systemd | einhorn | einhorn-fds")
	ready := flag.String("ready", "notify", "notify | einhorn | none")
	readyDelay := flag.Duration("ready-delay", 0, "wait this long before READY=1")
	tag := flag.String("tag", "app", "first word of every answer")
	events := flag.String("events", "", "append life events here")
	exitAtStart := flag.Int("exit-at-start", -1, "exit with this status at once")
	ignoreTerm := flag.Bool("ignore-term", false, "ignore SIGTERM")
	chatty := flag.Bool("chatty", false, "write to stdout and stderr at start and while stopping")
	hold := flag.Bool("hold", false, "keep each connection open until the client closes it")
	drainDelay := flag.Duration("drain-delay", 0, "on the stop signal, close the listeners at once but exit only after this")
	drainChecks := flag.Bool("drain-checks", false, "half-way through -drain-delay, record whether NOTIFY_SOCKET, EINHORN_SOCK_PATH and EINHORN_MASTER_PID still hold")
	modeFile := flag.String("mode-file", "", "read how this copy misbehaves: \"exit N\", \"never-ready\", \"drain-delay D\" or \"fail-copy INDEX\"")
	flag.Parse()
	if *modeFile != "" {
		b, _ := os.ReadFile(*modeFile)
		switch f := strings.Fields(string(b)); {
		case len(f) == 2 && f[0] == "exit":
			n, _ := strconv.Atoi(f[1])
			*exitAtStart = n
		case len(f) == 2 && f[0] == "drain-delay":
			*drainDelay, _ = time.ParseDuration(f[1])
		case len(f) == 1 && f[0] == "never-ready":
			*readyDelay = time.Hour
		case len(f) == 2 && f[0] == "fail-copy" && os.Getenv("EINHORN_CHILD_INDEX") == f[1]:
			*exitAtStart = 1
		}
	}
	pid := os.Getpid()
	record := func(what string) {
		if *events == "" {
			return
		}
		f, err := os.OpenFile(*events, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err == nil {
			fmt.Fprintf(f, "%s %d %d\n", what, pid, time.Now().UnixNano())
			f.Close()
		}
	}
	if *exitAtStart >= 0 {
		record("start-fail")
		os.Exit(*exitAtStart)
	}
	sigs := make(chan os.Signal, 4)
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
		signal.Notify(sigs, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGWINCH)
	} else {
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGWINCH)
	}
	lns, names, err := listeners(*dialect)
	if err != nil || len(lns) == 0 {
		fmt.Fprintln(os.Stderr, "testapp: no listeners:", err)
		os.Exit(3)
	}
	record("listeners " + strings.Join(names, ","))
	if *chatty {
		fmt.Printf("hello stdout %d\n", pid)
		fmt.Fprintf(os.Stderr, "hello stderr %d\n", pid)
	}
	var wg sync.WaitGroup
	for _, l := range lns {
		wg.Add(1)
		go func(l net.Listener) {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s %d\n", *tag, pid)
				if *hold {
					go func(c net.Conn) {
						b := make([]byte, 512)
						for {
							if _, err := c.Read(b); err != nil {
								break
							}
						}
						c.Close()
					}(c)
					continue
				}
				c.Close()
			}
		}(l)
	}
	// A stop signal before it is ready stops it too, as a real server would.
	var early os.Signal
	select {
	case <-time.After(*readyDelay):
	case early = <-sigs:
	}
	if early != nil && early != syscall.SIGUSR1 && early != syscall.SIGWINCH {
		record("signal before ready " + early.String())
		for _, l := range lns {
			l.Close()
		}
		wg.Wait()
		return
	}
	if *drainChecks {
		record("sockets " + os.Getenv("NOTIFY_SOCKET") + " " + os.Getenv("EINHORN_SOCK_PATH"))
		record("index " + os.Getenv("EINHORN_CHILD_INDEX"))
	}
	// Recorded before it is announced: sockhold may act on READY=1 at once.
	record("ready")
	switch *ready {
	case "notify":
		daemon.SdNotify(false, "READY=1\nSTATUS=serving as "+*tag)
	case "einhorn":
		// What Ruby's Einhorn::Client sends: YAML.dump, % and newlines escaped.
		if c, err := net.Dial("unix", os.Getenv("EINHORN_SOCK_PATH")); err == nil {
			fmt.Fprintf(c, "---%%0Acommand: worker:ack%%0Apid: %d%%0A\n", pid)
			c.Close()
		}
	}
	s := <-sigs
	for s == syscall.SIGUSR1 || s == syscall.SIGWINCH {
		record("got " + s.String()) // a forwarded signal: note it, keep serving
		s = <-sigs
	}
	record("signal " + s.String())
	if *chatty {
		time.Sleep(50 * time.Millisecond) // its worker is gone by now
		fmt.Printf("draining %d\n", pid)
	}
	for _, l := range lns {
		l.Close()
	}
	wg.Wait()
	record("closed")
	if *drainChecks {
		// Long after a worker that left at once would have gone.
		time.Sleep(*drainDelay / 2)
		drainCheck(record)
		time.Sleep(*drainDelay / 2)
		return
	}
	time.Sleep(*drainDelay)
}

// drainCheck records what a draining copy can still reach: its
// NOTIFY_SOCKET (puma sends STOPPING=1 from its stop hook, uwsgi writes
// its status there), its EINHORN_SOCK_PATH, and its parent, which einhorn
// apps expect to be EINHORN_MASTER_PID.
func drainCheck(record func(string)) {
	verdict := func(err error) string {
		if err != nil {
			return "failed"
		}
		return "ok"
	}
	_, err := daemon.SdNotify(false, "STOPPING=1\nSTATUS=draining")
	record("draining notify " + verdict(err))
	c, err := net.Dial("unix", os.Getenv("EINHORN_SOCK_PATH"))
	if err == nil {
		c.Close()
	}
	record("draining einhorn " + verdict(err))
	if strconv.Itoa(os.Getppid()) == os.Getenv("EINHORN_MASTER_PID") {
		record("draining parent ok")
	} else {
		record("draining parent failed")
	}
}

func listeners(dialect string) ([]net.Listener, []string, error) {
	switch dialect {
	case "systemd":
		// A real third-party reader: it checks LISTEN_PID against its PID.
		byName, err := activation.ListenersWithNames()
		if err != nil {
			return nil, nil, err
		}
		var lns []net.Listener
		var names []string
		for name, ls := range byName {
			for _, l := range ls {
				lns = append(lns, l)
				names = append(names, name)
			}
		}
		return lns, names, nil
	case "einhorn":
		n, _ := strconv.Atoi(os.Getenv("EINHORN_FD_COUNT"))
		var fds []int
		for i := 0; i < n; i++ {
			fd, _ := strconv.Atoi(os.Getenv("EINHORN_FD_" + strconv.Itoa(i)))
			fds = append(fds, fd)
		}
		return fromFDs(fds)
	case "einhorn-fds":
		var fds []int
		for _, f := range strings.Fields(os.Getenv("EINHORN_FDS")) {
			fd, _ := strconv.Atoi(f)
			fds = append(fds, fd)
		}
		return fromFDs(fds)
	}
	return nil, nil, fmt.Errorf("unknown dialect %q", dialect)
}

func fromFDs(fds []int) ([]net.Listener, []string, error) {
	var lns []net.Listener
	var names []string
	for _, fd := range fds {
		l, err := net.FileListener(os.NewFile(uintptr(fd), "fd"+strconv.Itoa(fd)))
		if err != nil {
			return nil, nil, err
		}
		lns = append(lns, l)
		names = append(names, strconv.Itoa(fd))
	}
	return lns, names, nil
}
