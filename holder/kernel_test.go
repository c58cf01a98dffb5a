package holder

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestKernelCheck(t *testing.T) {
	ok := func() error { return nil }
	if err := checkKernel(realKernel); err != nil {
		t.Fatalf("this machine: %v", err)
	}
	for _, c := range []struct {
		p    kernelProbes
		want string
	}{
		{kernelProbes{pidfdOpen: func() error { return unix.ENOSYS }, children: ok}, "Linux 5.3"},
		{kernelProbes{pidfdOpen: func() error { return unix.EPERM }, children: ok}, "pidfd_open: operation not permitted"},
		{kernelProbes{pidfdOpen: ok, children: func() error { return &os.PathError{Op: "stat", Path: "children", Err: errors.New("no such file")} }}, "CONFIG_PROC_CHILDREN"},
	} {
		err := checkKernel(c.p)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v, want one line with %q", err, c.want)
		}
	}
}
