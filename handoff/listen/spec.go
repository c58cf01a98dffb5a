// Package listen turns listen URIs and ports into listening sockets: it parses
// the URI forms, creates sockets with exactly the options asked for (backlog
// included, which net.Listen cannot do), guards unix socket paths, and adopts
// sockets passed in by a service manager.
package listen

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// Spec is one parsed --listen value (or the PORT form).
type Spec struct {
	URI     string // as the user wrote it, for messages
	Network string // tcp, tcp4, tcp6, unix or fd
	Host    string // tcp: empty means every address
	Port    int    // tcp
	Path    string // unix: absolute path, or "@name" for an abstract socket
	FD      int    // fd: a descriptor number, or -1 when FDName is used
	FDName  string // fd: a name from LISTEN_FDNAMES
	Name    string // the name given to children (LISTEN_FDNAMES); see DefaultName
	NameSet bool   // Name was given (?name=, --fd-name), not derived

	// Unix socket file options.
	Mode    os.FileMode
	HasMode bool
	UID     int // -1 = leave
	GID     int // -1 = leave
}

// Abstract reports whether a unix spec names an abstract socket.
func (s Spec) Abstract() bool { return strings.HasPrefix(s.Path, "@") }

// Parse reads a listen URI:
//
//	tcp://host:port  tcp4://host:port  tcp6://[host]:port
//	unix:///abs/path  unix:rel/path  unix:@abstract
//	fd://3  fd://name (a LISTEN_FDNAMES entry)
//
// Unix URIs take ?mode=0660&owner=USER&group=GROUP; every URI takes ?name=.
func Parse(raw string) (Spec, error) {
	s := Spec{URI: raw, FD: -1, UID: -1, GID: -1}
	if len(raw) > maxURI {
		return s, fmt.Errorf("listen URI of %d bytes: at most %d", len(raw), maxURI)
	}
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok || rest == "" {
		return s, fmt.Errorf("listen %q: want scheme:address (tcp://host:port, unix:///path, fd://3)", raw)
	}
	rest, query, _ := strings.Cut(rest, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		return s, fmt.Errorf("listen %q: bad options: %v", raw, err)
	}
	s.Network = strings.ToLower(scheme)
	switch s.Network {
	case "tcp", "tcp4", "tcp6":
		err = s.parseTCP(strings.TrimPrefix(rest, "//"))
	case "unix":
		err = s.parseUnix(rest)
	case "fd":
		err = s.parseFD(strings.TrimPrefix(rest, "//"))
	default:
		err = fmt.Errorf("unknown scheme %q (want tcp, tcp4, tcp6, unix or fd)", scheme)
	}
	if err != nil {
		return s, fmt.Errorf("listen %q: %v", raw, err)
	}
	if err := s.applyOptions(q); err != nil {
		return s, fmt.Errorf("listen %q: %v", raw, err)
	}
	if !s.NameSet {
		s.Name = DefaultName(s)
	}
	return s, nil
}

// UnixSpec is the spec of a unix socket at an absolute path with a mode,
// for paths that are not written as URIs (the control socket's).
func UnixSpec(path string, mode os.FileMode) (Spec, error) {
	s := Spec{URI: "unix://" + path, Network: "unix", FD: -1, UID: -1, GID: -1, Mode: mode, HasMode: true}
	if err := s.parseUnix("//" + path); err != nil {
		return s, err
	}
	s.Name = DefaultName(s)
	return s, nil
}

// DefaultName is the LISTEN_FDNAMES name of a listener given none: its
// address in a form systemd accepts as a name, since the URI itself cannot
// be one (its ':' is LISTEN_FDNAMES' separator, and libsystemd rejects the
// whole variable): tcp://127.0.0.1:8080 is "tcp-127.0.0.1-8080",
// tcp://:8080 "tcp-8080", tcp6://[::1]:80 "tcp6-__1-80", unix:///run/a.sock
// "unix-/run/a.sock", fd://3 "fd-3", fd://web "web".
func DefaultName(s Spec) string {
	var n string
	switch s.Network {
	case "tcp", "tcp4", "tcp6":
		n = s.Network + "-" + strconv.Itoa(s.Port)
		if s.Host != "" {
			n = s.Network + "-" + s.Host + "-" + strconv.Itoa(s.Port)
		}
	case "unix":
		n = "unix-" + s.Path
	case "fd":
		if s.FDName != "" {
			return s.FDName
		}
		n = "fd-" + strconv.Itoa(s.FD)
	default:
		n = s.Network
	}
	b := []byte(n)
	for i, c := range b {
		if c < ' ' || c >= 127 || c == ':' {
			b[i] = '_'
		}
	}
	return string(b[:min(len(b), maxFDName)])
}

// RenameFromURI gives a listener still named by its URI, as binaries
// before DefaultName named one, its default name: a holder resumed from
// such a binary's state must not go on handing libsystemd a name it
// refuses. A name that was given (?name=, --fd-name, LISTEN_FDNAMES) never
// equals the URI, since a name cannot hold the URI's ':'.
func (s *Spec) RenameFromURI() {
	if !s.NameSet && s.Name == s.URI {
		s.Name = DefaultName(*s)
	}
}

// maxURI bounds a listen URI: the longest real one (a 107-byte unix path
// with options) is far shorter.
const maxURI = 4096

// maxFDName is systemd's FDNAME_MAX.
const maxFDName = 255

// CheckFDName applies systemd's rule for a LISTEN_FDNAMES name
// (fdname_is_valid, FileDescriptorName=): 1 to 255 bytes of printable
// ASCII, without ':'.
func CheckFDName(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("name %q: must not be empty", n)
	case len(n) > maxFDName:
		return fmt.Errorf("name of %d bytes: systemd allows at most %d", len(n), maxFDName)
	}
	for _, c := range []byte(n) {
		if c < ' ' || c >= 127 {
			return fmt.Errorf("name %q: only printable ASCII is allowed", n)
		}
		if c == ':' {
			return fmt.Errorf("name %q: ':' separates LISTEN_FDNAMES entries and is not allowed in one", n)
		}
	}
	return nil
}

func (s *Spec) parseTCP(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	p, err := ParsePort(port)
	if err != nil {
		return err
	}
	s.Host, s.Port = host, p
	return nil
}

// ParsePort accepts a decimal TCP port, 0 meaning "any free port".
func ParsePort(port string) (int, error) {
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || port[0] < '0' || port[0] > '9' {
		return 0, fmt.Errorf("bad port %q: want a number from 0 to 65535", port)
	}
	return p, nil
}

func (s *Spec) parseUnix(rest string) error {
	switch {
	case strings.HasPrefix(rest, "//"):
		rest = strings.TrimPrefix(rest, "//")
		if !strings.HasPrefix(rest, "/") && !strings.HasPrefix(rest, "@") {
			return fmt.Errorf("unix:// needs an absolute path (unix:///run/x.sock) or use unix:relative/path")
		}
	case rest == "":
		return fmt.Errorf("empty unix socket path")
	}
	if strings.HasPrefix(rest, "@") {
		if len(rest) < 2 {
			return fmt.Errorf("empty abstract socket name")
		}
		s.Path = rest
	} else {
		abs, err := filepath.Abs(rest)
		if err != nil {
			return err
		}
		s.Path = abs
	}
	// sun_path holds 108 bytes including the terminating NUL.
	if len(s.Path) > 107 {
		return fmt.Errorf("unix socket path is %d bytes, the kernel allows 107", len(s.Path))
	}
	return nil
}

func (s *Spec) parseFD(rest string) error {
	if rest == "" {
		return fmt.Errorf("fd:// needs a number or a LISTEN_FDNAMES name")
	}
	if n, err := strconv.Atoi(rest); err == nil {
		if n < 3 {
			return fmt.Errorf("fd %d is stdin/stdout/stderr, not a listening socket", n)
		}
		s.FD = n
		return nil
	}
	s.FDName = rest
	return nil
}

func (s *Spec) applyOptions(q url.Values) error {
	for key, vals := range q {
		v := vals[len(vals)-1]
		switch key {
		case "name":
			if err := CheckFDName(v); err != nil {
				return err
			}
			s.Name, s.NameSet = v, true
		case "mode", "owner", "group":
			if s.Network != "unix" {
				return fmt.Errorf("option %q applies to unix sockets only", key)
			}
			if s.Abstract() {
				return fmt.Errorf("option %q does not apply to an abstract socket", key)
			}
			if err := s.applyUnixOption(key, v); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown option %q (want name, mode, owner, group)", key)
		}
	}
	return nil
}

func (s *Spec) applyUnixOption(key, v string) error {
	switch key {
	case "mode":
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m > 0o777 {
			return fmt.Errorf("mode %q: want octal permissions such as 0660", v)
		}
		s.Mode, s.HasMode = os.FileMode(m), true
	case "owner":
		uid, err := lookupID(v, func(n string) (string, error) {
			u, err := user.Lookup(n)
			if err != nil {
				return "", err
			}
			return u.Uid, nil
		})
		if err != nil {
			return fmt.Errorf("owner %q: %v", v, err)
		}
		s.UID = uid
	case "group":
		gid, err := lookupID(v, func(n string) (string, error) {
			g, err := user.LookupGroup(n)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		})
		if err != nil {
			return fmt.Errorf("group %q: %v", v, err)
		}
		s.GID = gid
	}
	return nil
}

// lookupID accepts a number or a name resolved by lookup.
func lookupID(v string, lookup func(string) (string, error)) (int, error) {
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		// uid_t is 32 bits, and 2^32-1 is chown's "leave it": a larger
		// number would wrap (4294967296 to uid 0, root).
		if n >= 1<<32-1 {
			return 0, fmt.Errorf("%d is not a valid id (at most %d)", n, uint32(1<<32-2))
		}
		return int(n), nil
	}
	id, err := lookup(v)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(id)
}
