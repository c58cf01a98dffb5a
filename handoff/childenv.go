package handoff

import (
	"fmt"
	"regexp"
	"strings"
)

// ChildEnv is what --env and --unset-env change in every child's
// environment (handlers and served apps), applied after sockhold's own
// filtering and --user's HOME/USER/LOGNAME, before the variables sockhold
// sets for the connection or the app's sockets.
type ChildEnv struct {
	Set   []string // NAME=VALUE
	Unset []string // NAME
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnv are the variables sockhold itself gives children (or uses
// internally): set by --env as well, a child would see two, and most
// readers take the first.
var reservedEnv = []string{"NOTIFY_SOCKET", "PROTO", "REMOTE_ADDR", "REMOTE_PORT"}
var reservedEnvPrefixes = []string{"LISTEN_", "EINHORN_", "SOCKHOLD_", "TABLEFLIP_", "TCPREMOTE", "TCPLOCAL", "UNIXREMOTE", "UNIXLOCAL"}

func checkEnvName(flag, name string) error {
	if !envName.MatchString(name) {
		return fmt.Errorf("%s %q: a variable name is letters, digits and _, not starting with a digit", flag, name)
	}
	for _, r := range reservedEnv {
		if name == r {
			return fmt.Errorf("%s %s: sockhold sets that variable itself", flag, name)
		}
	}
	for _, p := range reservedEnvPrefixes {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("%s %s: sockhold sets the %s* variables itself", flag, name, p)
		}
	}
	return nil
}

// ParseChildEnv validates --env NAME=VALUE and --unset-env NAME.
func ParseChildEnv(set, unset []string) (ChildEnv, error) {
	for _, kv := range set {
		name, value, ok := strings.Cut(kv, "=")
		if !ok {
			return ChildEnv{}, fmt.Errorf("--env %q: want NAME=VALUE", kv)
		}
		if err := checkEnvName("--env", name); err != nil {
			return ChildEnv{}, err
		}
		if strings.ContainsRune(value, 0) {
			return ChildEnv{}, fmt.Errorf("--env %s: a value cannot hold a NUL byte", name)
		}
	}
	for _, name := range unset {
		if err := checkEnvName("--unset-env", name); err != nil {
			return ChildEnv{}, err
		}
	}
	return ChildEnv{Set: set, Unset: unset}, nil
}

// Apply returns env without the unset names and with the set ones, each
// once (replacing what env had).
func (c ChildEnv) Apply(env []string) []string {
	if len(c.Set) == 0 && len(c.Unset) == 0 {
		return env
	}
	drop := map[string]bool{}
	for _, n := range c.Unset {
		drop[n] = true
	}
	for _, kv := range c.Set {
		n, _, _ := strings.Cut(kv, "=")
		drop[n] = true
	}
	out := make([]string, 0, len(env)+len(c.Set))
	for _, kv := range env {
		if n, _, _ := strings.Cut(kv, "="); !drop[n] {
			out = append(out, kv)
		}
	}
	return append(out, c.Set...)
}
