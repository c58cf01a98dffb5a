package listen

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// boundPath remembers the file a unix socket was bound to, so that on exit
// sockhold removes its own socket and never a file someone put there since.
type boundPath struct {
	path     string
	dev, ino uint64
}

func (b *boundPath) remove() {
	var st unix.Stat_t
	if unix.Lstat(b.path, &st) != nil {
		return
	}
	if uint64(st.Dev) == b.dev && st.Ino == b.ino {
		os.Remove(b.path)
	}
}

// boundByLiveSocket reports whether a live unix socket is bound at path,
// from the kernel's table (/proc/net/unix: "Num RefCount Protocol Flags
// Type St Inode Path", the path last and possibly holding spaces).
func boundByLiveSocket(path string) (bool, error) {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		rest := line
		for range 7 { // skip the seven fields before the path
			rest = strings.TrimLeft(rest, " ")
			i := strings.IndexByte(rest, ' ')
			if i < 0 {
				rest = ""
				break
			}
			rest = rest[i:]
		}
		if strings.TrimPrefix(rest, " ") == path {
			return true, nil
		}
	}
	return false, nil
}

// clearStalePath makes room for a new socket at path. Nothing there: fine. A
// socket nobody answers on (left by a crashed process): removed. A socket
// that answers: in use. Anything else: refused and left exactly as it is.
func clearStalePath(path string) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	switch err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); {
	case err == nil, errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINPROGRESS):
		return fmt.Errorf("%s is in use by a running server", path)
	case errors.Is(err, unix.ECONNREFUSED):
		// Refused: nobody listens. But a process may have bound it and
		// not called listen() yet (a server starting): the kernel still
		// lists a socket bound at that path.
		if bound, err := boundByLiveSocket(path); err != nil || bound {
			if err != nil {
				return fmt.Errorf("probe existing socket %s: %v", path, err)
			}
			return fmt.Errorf("%s is bound by a running process (not listening yet); refusing to replace it", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove stale socket: %v", err)
		}
		return nil
	default:
		return fmt.Errorf("probe existing socket %s: %v", path, err)
	}
}

func openUnix(spec Spec, backlog int) (*Socket, error) {
	fail := func(step string, err error) (*Socket, error) {
		return nil, fmt.Errorf("listen %s: %s: %w", spec.URI, step, err)
	}
	if !spec.Abstract() {
		if err := clearStalePath(spec.Path); err != nil {
			return fail("path", err)
		}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if spec.HasMode {
		// Bind under a strict umask so that no one can connect in the
		// moment between bind and chmod.
		old := unix.Umask(0o177)
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: spec.Path})
		unix.Umask(old)
	} else {
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: spec.Path})
	}
	if err != nil {
		return fail("bind", err)
	}
	var bp *boundPath
	if !spec.Abstract() {
		var st unix.Stat_t
		if err := unix.Lstat(spec.Path, &st); err != nil {
			return fail("stat", err)
		}
		bp = &boundPath{path: spec.Path, dev: uint64(st.Dev), ino: st.Ino}
		if err := applyFileOptions(spec); err != nil {
			bp.remove()
			return fail("socket file", err)
		}
	}
	if err := unix.Listen(fd, backlog); err != nil {
		if bp != nil {
			bp.remove()
		}
		return fail("listen", err)
	}
	ok = true
	return &Socket{Spec: spec, FD: fd, Family: unix.AF_UNIX, Addr: spec.Path, path: bp}, nil
}

func applyFileOptions(spec Spec) error {
	if spec.HasMode {
		if err := os.Chmod(spec.Path, spec.Mode); err != nil {
			return err
		}
	}
	if spec.UID >= 0 || spec.GID >= 0 {
		if err := os.Lchown(spec.Path, spec.UID, spec.GID); err != nil {
			return err
		}
	}
	return nil
}
