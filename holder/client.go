package holder

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff/listen"
	"github.com/sockhold/sockhold/holder/config"
)

// ClientOptions say which sockhold a control command talks to.
type ClientOptions struct {
	Control string   // explicit control socket path
	Port    string   // or: the PORT the instance listens on
	Listen  []string // or: its first --listen URI
	Wait    bool
	Timeout time.Duration
	JSON    bool
}

// Client runs `sockhold upgrade|status|stop` and returns the exit status:
// 0 when the holder says it succeeded, 1 when it says it failed, 2 when it
// cannot be reached or the command line is wrong.
func Client(verb string, o ClientOptions) int {
	path, err := findControl(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sockhold:", err)
		return ExitUsage
	}
	req := ControlRequest{Verb: verb, Wait: o.Wait, TimeoutMS: o.Timeout.Milliseconds()}
	deadline := 15 * time.Second
	if o.Wait {
		deadline = o.Timeout + 5*time.Second
	}
	rep, err := ask(path, req, deadline)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sockhold: %s: %v\n", path, err)
		return ExitUsage
	}
	if !rep.OK {
		fmt.Fprintln(os.Stderr, "sockhold: "+verb+" failed: "+rep.Error)
		return ExitFailure
	}
	switch {
	case verb == "status" && o.JSON:
		b, _ := json.MarshalIndent(rep.Status, "", "  ")
		fmt.Println(string(b))
	case verb == "status":
		printStatus(rep.Status)
	case verb == "upgrade" && rep.Message == "upgraded":
		holder := "holder unchanged"
		if rep.HolderReplaced {
			holder = fmt.Sprintf("holder replaced in %.1f ms", rep.HolderMS)
		}
		fmt.Printf("upgraded: generation %d, version %s, in %.1f ms (%s)\n", rep.Generation, rep.Version, rep.TookMS, holder)
	default:
		fmt.Println(rep.Message)
	}
	return ExitOK
}

// dialControl connects to the control socket, waiting up to timeout for
// room in its accept queue: a full queue (EAGAIN, a burst of other
// clients, a holder busy for a moment) is a wait, as a blocking connect
// would make it, not a failure.
func dialControl(path string, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for pause := time.Millisecond; ; pause = min(2*pause, 100*time.Millisecond) {
		c, err := net.DialTimeout("unix", path, time.Until(deadline))
		if err == nil || !errors.Is(err, unix.EAGAIN) || time.Now().Add(pause).After(deadline) {
			return c, err
		}
		if pause == time.Millisecond {
			fmt.Fprintf(os.Stderr, "sockhold: %s: the holder's queue is full; waiting up to %v\n", path, timeout)
		}
		time.Sleep(pause)
	}
}

func ask(path string, req ControlRequest, deadline time.Duration) (controlReply, error) {
	var rep controlReply
	c, err := dialControl(path, 5*time.Second)
	if err != nil {
		return rep, err
	}
	defer c.Close()
	// Whoever listens on the path answers: only a holder of this user (or
	// root) is believed.
	if uid, err := peerUID(c.(*net.UnixConn)); err != nil {
		return rep, err
	} else if uid != 0 && uid != os.Geteuid() {
		return rep, fmt.Errorf("the control socket is served by uid %d, not by sockhold's user: not trusting its answer", uid)
	}
	c.SetDeadline(time.Now().Add(deadline))
	b, _ := json.Marshal(req)
	_, werr := c.Write(append(b, '\n'))
	// Even if the write failed, the holder may have said why.
	line, err := bufio.NewReader(io.LimitReader(c, 1<<20)).ReadBytes('\n')
	if err != nil && len(line) == 0 && werr != nil {
		return rep, werr
	}
	if err != nil && len(line) == 0 {
		return rep, fmt.Errorf("no answer: %v", err)
	}
	if err := json.Unmarshal(line, &rep); err != nil {
		return rep, fmt.Errorf("bad answer: %v", err)
	}
	return rep, nil
}

// findControl picks the control socket: --control, or the path derived from
// PORT / --listen as the daemon derives it, or the only one in the default
// directory.
func findControl(o ClientOptions) (string, error) {
	if o.Control != "" {
		return o.Control, nil
	}
	if o.Port != "" {
		specs, err := listen.FromPort(o.Port, "", false, false)
		if err != nil {
			return "", err
		}
		return config.DefaultControlPath(specs[0]), nil
	}
	if len(o.Listen) > 0 {
		s, err := listen.Parse(o.Listen[0])
		if err != nil {
			return "", err
		}
		return config.DefaultControlPath(s), nil
	}
	found, _ := filepath.Glob(filepath.Join(config.ControlDir(), "*.ctl"))
	sort.Strings(found)
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("no running sockhold found in %s; give --control PATH or the PORT it listens on", config.ControlDir())
	}
	return "", fmt.Errorf("several sockhold instances (%s); give --control PATH or the PORT", strings.Join(found, ", "))
}

func peerUID(c *net.UnixConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	uid := -1
	var credErr error
	rc.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			credErr = err
			return
		}
		uid = int(cred.Uid)
	})
	return uid, credErr
}
