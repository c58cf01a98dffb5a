package handoff

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// RunAs is the identity children (handlers, served apps) run as: sockhold
// binds and holds the sockets with its own privileges and drops them only
// for what it starts.
type RunAs struct {
	UID, GID int
	Groups   []uint32 // supplementary groups
	Env      []string // HOME, USER, LOGNAME for the target user
	Dir      string   // working directory: the user's home if it exists, else /
	Same     bool     // sockhold's own identity (non-root): no credential to apply
}

// LookupRunAs resolves --user and --group (names or numbers). The primary
// group is the user's unless --group names another; the supplementary
// groups are the user's, as login would give them.
func LookupRunAs(userName, groupName string) (*RunAs, error) {
	if userName == "" && groupName == "" {
		return nil, nil
	}
	r := &RunAs{UID: os.Geteuid(), GID: os.Getegid()}
	if userName != "" {
		u, err := user.Lookup(userName)
		if err != nil {
			if _, nerr := strconv.Atoi(userName); nerr == nil {
				u, err = user.LookupId(userName)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("--user %s: %v", userName, err)
		}
		r.UID, _ = strconv.Atoi(u.Uid)
		r.GID, _ = strconv.Atoi(u.Gid)
		gids, err := u.GroupIds()
		if err != nil {
			return nil, fmt.Errorf("--user %s: groups: %v", userName, err)
		}
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil {
				r.Groups = append(r.Groups, uint32(n))
			}
		}
		r.Env = []string{"HOME=" + u.HomeDir, "USER=" + u.Username, "LOGNAME=" + u.Username}
		// Not sockhold's own directory, which the user may not be able
		// to read (a shell's getcwd, git and Python's os.getcwd fail).
		r.Dir = "/"
		if st, err := os.Stat(u.HomeDir); err == nil && st.IsDir() && u.HomeDir != "" {
			r.Dir = u.HomeDir
		}
	}
	if groupName != "" {
		g, err := user.LookupGroup(groupName)
		if err != nil {
			if _, nerr := strconv.Atoi(groupName); nerr == nil {
				g, err = user.LookupGroupId(groupName)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("--group %s: %v", groupName, err)
		}
		r.GID, _ = strconv.Atoi(g.Gid)
	}
	if os.Geteuid() != 0 && (r.UID != os.Geteuid() || r.GID != os.Getegid()) {
		return nil, fmt.Errorf("--user/--group: changing identity needs root (sockhold runs as uid %d)", os.Geteuid())
	}
	if os.Geteuid() != 0 {
		// sockhold's own identity: nothing to change, and setting the
		// groups (what a change of identity does) needs root, so every
		// start would fail with EPERM. Children keep sockhold's identity,
		// with the user's HOME, USER, LOGNAME and directory.
		r.Same = true
	}
	if r.Groups == nil {
		r.Groups = []uint32{uint32(r.GID)}
	}
	return r, nil
}

// credential is what fork+exec applies; nil keeps sockhold's identity.
func (r *RunAs) credential() *syscall.Credential {
	if r == nil || r.Same {
		return nil
	}
	return &syscall.Credential{Uid: uint32(r.UID), Gid: uint32(r.GID), Groups: r.Groups}
}

// IdentityVars are the variables RunAs replaces in a child's environment,
// and sockhold's own session's, which belong to sockhold's user (its
// runtime directory, its D-Bus session, its SSH agent) and are not passed
// to a child running as someone else.
var IdentityVars = []string{"HOME", "USER", "LOGNAME", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "SSH_AUTH_SOCK", "XAUTHORITY"}

// dir is the working directory a child of this identity starts in ("" keeps
// sockhold's).
func (r *RunAs) dir() string {
	if r == nil {
		return ""
	}
	return r.Dir
}
