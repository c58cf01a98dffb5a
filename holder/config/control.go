package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/sockhold/sockhold/handoff/listen"
)

// ControlDir is where control sockets live unless --control says otherwise:
// $XDG_RUNTIME_DIR/sockhold, /run/sockhold for root, else a per-user
// directory under the temporary directory.
func ControlDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "sockhold")
	}
	if os.Geteuid() == 0 {
		return "/run/sockhold"
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("sockhold-%d", os.Geteuid()))
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._]+`)

// DefaultControlPath derives the control socket's path from the first
// listener, so that `sockhold upgrade 873` finds the instance serving 873.
func DefaultControlPath(first listen.Spec) string {
	var name string
	switch first.Network {
	case "unix":
		name = "unix-" + first.Path
	case "fd":
		name = "fd-" + strings.TrimPrefix(first.URI, "fd://")
	default:
		host := first.Host
		if host == "" {
			host = "any"
		}
		name = fmt.Sprintf("%s-%s-%d", first.Network, host, first.Port)
	}
	name = strings.Trim(unsafeChars.ReplaceAllString(name, "-"), "-")
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	return filepath.Join(ControlDir(), name+".ctl")
}
