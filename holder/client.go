package holder

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

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
		fmt.Printf("upgraded: generation %d, version %s, in %.1f ms\n", rep.Generation, rep.Version, rep.TookMS)
	default:
		fmt.Println(rep.Message)
	}
	return ExitOK
}

func ask(path string, req ControlRequest, deadline time.Duration) (controlReply, error) {
	var rep controlReply
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return rep, err
	}
	defer c.Close()
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

func printStatus(s *Status) {
	if s == nil {
		return
	}
	fmt.Printf("holder      pid %d, %s (version %s), up %s\n", s.HolderPID, s.Binary, s.Version, s.Uptime)
	fmt.Printf("worker      pid %d, generation %d, version %s, serving %v, upgrading %v\n",
		s.WorkerPID, s.Generation, s.WorkerVersion, s.Serving, s.Upgrading)
	limit := "unlimited"
	if s.SlotsLimit > 0 {
		limit = fmt.Sprint(s.SlotsLimit)
	}
	fmt.Printf("handlers    %d of %s slots used", s.SlotsUsed, limit)
	gens := make([]int, 0, len(s.HandlersByGen))
	for g := range s.HandlersByGen {
		gens = append(gens, g)
	}
	sort.Ints(gens)
	for _, g := range gens {
		fmt.Printf("; gen %d: %d", g, s.HandlersByGen[g])
	}
	fmt.Println()
	for _, q := range s.Queues {
		fmt.Printf("queue       %s: %d waiting (max %d)\n", q.Listener, q.Depth, q.Max)
	}
	fmt.Printf("counters    accepted %d, rejected %d, spawn failures %d, upgrades ok %d, failed %d\n",
		s.Accepted, s.Rejected, s.SpawnFailures, s.UpgradesOK, s.UpgradesFailed)
}
