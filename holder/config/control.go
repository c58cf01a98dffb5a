package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

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

// EnsureControlDir makes the directory of the control socket and checks
// that only sockhold's own user can put anything in it: a directory
// another user owns or can write to would let that user answer for
// sockhold. derived: the default directory, whose name anyone can know
// (the one under the temporary directory in particular).
func EnsureControlDir(dir string, derived bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("control socket: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("control socket: %v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("control socket: %s is not a directory", dir)
	}
	if !derived {
		return nil
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return fmt.Errorf("control directory %s belongs to uid %d with mode %04o, so another user could answer for sockhold: set XDG_RUNTIME_DIR or --control",
			dir, st.Uid, st.Mode&0o7777)
	}
	return nil
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
