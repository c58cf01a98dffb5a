package integration

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The flagship use: the real rsync daemon in inetd mode behind sockhold.
// Several clients pull a module at once through --processes 2 and every copy
// is identical to the source.
func TestRsyncMirror(t *testing.T) {
	rsync, err := exec.LookPath("rsync")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("rsync is not installed; .ci/run installs it")
		}
		t.Skip("rsync not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "module")
	makeTree(t, src)
	conf := filepath.Join(dir, "rsyncd.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`use chroot = no
uid = %d
gid = %d
[mirror]
    path = %s
    read only = yes
`, os.Getuid(), os.Getgid(), src)), 0o644)

	in := start(t, "--listen", "tcp://127.0.0.1:0", "--processes", "2",
		"--", rsync, "--daemon", "--config="+conf)
	const clients = 6
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			dst := filepath.Join(dir, fmt.Sprintf("copy%d", i))
			cmd := exec.Command(rsync, "-a", "--timeout=60", fmt.Sprintf("rsync://%s/mirror/", in.addr(0)), dst+"/")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				errs <- fmt.Errorf("client %d: %v: %s", i, err, out.String())
				return
			}
			if got, want := treeSum(t, dst), treeSum(t, src); got != want {
				errs <- fmt.Errorf("client %d: copy differs from the source", i)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	exits := in.waitForN(10*time.Second, clients, msgIs("EXIT"))
	for _, r := range exits {
		if r.str("status") != "0" {
			t.Errorf("rsync daemon exited %v", r)
		}
	}
	if n := in.count(msgIs("FAIL")); n != 0 {
		t.Errorf("%d connections failed", n)
	}
}

// makeTree writes a few MB of random files in nested directories.
func makeTree(t *testing.T, root string) {
	t.Helper()
	rng := rand.New(rand.NewSource(873))
	for i := 0; i < 40; i++ {
		d := filepath.Join(root, fmt.Sprintf("d%d", i%5), fmt.Sprintf("e%d", i%3))
		os.MkdirAll(d, 0o755)
		b := make([]byte, rng.Intn(200<<10))
		rng.Read(b)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d.bin", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// treeSum hashes every path and file content under root.
func treeSum(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(h, "%s %v\n", rel, d.IsDir())
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Error(err)
			}
			h.Write(b)
		}
		return nil
	})
	return fmt.Sprintf("%x", h.Sum(nil))
}
