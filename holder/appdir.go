package holder

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// removeAppDir removes a gone worker's app-socket directory, which the
// worker removes itself unless it was killed. The path comes from the
// worker's hello, so it is only acted on if it is what a worker creates:
// a directory sockhold-app-* of the holder's own user, directly in the
// temporary directory (never a symlink; RemoveAll follows none inside).
func removeAppDir(log *slog.Logger, path string) {
	clean := filepath.Clean(path)
	if filepath.Dir(clean) != filepath.Clean(os.TempDir()) || !strings.HasPrefix(filepath.Base(clean), "sockhold-app-") {
		log.Warn("not removing a worker's app directory outside the temporary directory", "path", path)
		return
	}
	var st unix.Stat_t
	if err := unix.Lstat(clean, &st); err != nil {
		return // the worker removed it
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() {
		log.Warn("not removing a worker's app directory that is not the holder's", "path", path)
		return
	}
	if err := os.RemoveAll(clean); err != nil {
		log.Warn("cannot remove a worker's app directory", "path", path, "error", err)
		return
	}
	log.Debug("removed the app directory of a worker that did not", "path", path)
}
