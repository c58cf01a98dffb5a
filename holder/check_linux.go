package holder

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockhold/sockhold/handoff"
	"github.com/sockhold/sockhold/holder/core"
)

// Before the holder execs the binary on disk in its own place, it runs it
// once in check mode: the new binary reads the state the holder would hand
// it and must answer with the nonce inside. A binary that is missing, not
// executable, not sockhold, an older sockhold that does not know the state
// format, or one that hangs, fails here, and the old holder keeps serving.
// The file checked is the very one exec'd: the holder keeps it open.

// CheckArg is argv[1] of the check mode.
const CheckArg = "holder-check"

// checkTimeout bounds the check; a new binary needs milliseconds.
const checkTimeout = 5 * time.Second

type checkRun struct {
	seq      int
	bin      int // the binary on disk, held open: the one exec'd if it passes
	pid      int
	pidfd    int
	out      int // its stdout and stderr
	output   []byte
	nonce    string
	deadline time.Time
	exited   bool
	status   syscall.WaitStatus
	outEOF   bool
	answered bool // the core has its verdict
}

func (h *Holder) startCheck(seq int) {
	answer := func(same bool, err error) {
		ev := core.HolderChecked{Seq: seq, Same: same}
		if err != nil {
			ev.Err = err.Error()
		}
		h.feed(ev)
	}
	h.abortCheck()
	bin, err := unix.Open(h.exe, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		answer(false, fmt.Errorf("open %s: %v", h.exe, err))
		return
	}
	if id, err := fileIDOf(bin); err == nil && id == h.selfExe {
		unix.Close(bin)
		answer(true, nil) // the very binary already running: nothing to replace
		return
	}
	c := &checkRun{seq: seq, bin: bin, pidfd: -1, out: -1, nonce: newNonce()}
	if err := h.launchCheck(c); err != nil {
		unix.Close(bin)
		answer(false, err)
		return
	}
	h.check = c
}

// newNonce is what the check mode must read out of the state: proof that
// the new binary parsed it (a script that prints "ok" cannot know it).
func newNonce() string { return fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64()) }

func (h *Holder) launchCheck(c *checkRun) error {
	st, _ := h.save(c.nonce)
	state, err := memfdWith(st)
	if err != nil {
		return err
	}
	defer unix.Close(state)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(p[1])
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), c.bin)
	handoff.WithEmptySignalMask(func() {
		c.pid, err = syscall.ForkExec(path, []string{h.exe, CheckArg}, &syscall.ProcAttr{
			Env:   os.Environ(),
			Files: []uintptr{uintptr(state), uintptr(p[1]), uintptr(p[1])},
			Sys:   &syscall.SysProcAttr{Setpgid: true, PidFD: &c.pidfd},
		})
	})
	if err != nil {
		unix.Close(p[0])
		return fmt.Errorf("cannot run it: %v", err)
	}
	c.out = p[0]
	c.deadline = time.Now().Add(checkTimeout)
	unix.SetNonblock(c.out, true)
	h.watch(c.out, fdCheckOut, 0)
	if c.pidfd >= 0 {
		h.watch(c.pidfd, fdCheckExit, 0)
	}
	return nil
}

// memfdWith writes b to an anonymous file and rewinds it.
func memfdWith(b []byte) (int, error) {
	fd, err := unix.MemfdCreate("sockhold-state", unix.MFD_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("memfd: %v", err)
	}
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(fd, b[off:], int64(off))
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("memfd: %v", err)
		}
		off += n
	}
	return fd, nil
}

func (h *Holder) checkOutput() {
	c := h.check
	var buf [4096]byte
	for {
		n, err := unix.Read(c.out, buf[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if n > 0 && len(c.output) < 64<<10 {
			c.output = append(c.output, buf[:n]...)
		}
		if n <= 0 || err != nil {
			c.outEOF = true
			h.unwatch(c.out)
			h.checkDone()
			return
		}
	}
}

func (h *Holder) checkExited() {
	c := h.check
	ws, reaped, err := reapHandle(c.pidfd)
	if !reaped && err == nil {
		return // still running: an event for the number's previous owner
	}
	c.exited, c.status = true, ws
	h.unwatch(c.pidfd)
	h.checkDone()
}

// checkReaped: the SIGCHLD pass reaped the check process (status ws).
func (h *Holder) checkReaped(ws syscall.WaitStatus) {
	c := h.check
	c.exited, c.status = true, ws
	h.unwatch(c.pidfd)
	h.checkDone()
}

func (h *Holder) checkTimedOut() {
	c := h.check
	c.deadline = time.Time{}
	if !c.exited {
		// Reaped, its handle and PID no longer name it: never signalled.
		c.kill()
	}
	if !c.answered {
		c.answered = true
		h.feed(core.HolderChecked{Seq: c.seq, Err: fmt.Sprintf("no answer within %v in check mode", checkTimeout)})
	}
}

// abortCheck kills a check the upgrade no longer waits for; an exited one
// left unreaped is reaped like any child.
func (h *Holder) abortCheck() {
	h.execWanted = false
	c := h.check
	if c == nil {
		return
	}
	if !c.exited {
		c.kill()
	}
	c.answered = true
	h.releaseCheck()
}

// checkDone gives the core the verdict once the check process has exited
// and closed its output; on success the core asks for ExecHolder at once,
// which execs c.bin.
func (h *Holder) checkDone() {
	c := h.check
	if c == nil {
		return
	}
	if c.answered {
		if c.exited {
			h.releaseCheck()
		}
		return
	}
	if !c.exited || !c.outEOF {
		return
	}
	c.answered = true
	ev := core.HolderChecked{Seq: c.seq}
	want := fmt.Sprintf("sockhold holder-check ok nonce=%s", c.nonce)
	if !(c.status.Exited() && c.status.ExitStatus() == 0 && bytes.Contains(c.output, []byte(want))) {
		ev.Err = "check mode: " + describeWait(c.status) + firstLine(c.output)
	}
	h.feed(ev)
	if h.check == c && !(ev.Err == "" && h.execWanted) {
		h.releaseCheck() // kept only for the exec the core asked for
	}
}

// kill ends the check process and anything it started: it leads its own
// process group, and while it is unreaped the group's ID is its own.
func (c *checkRun) kill() { signalHandle(c.pidfd, unix.SIGKILL, true, c.pid) }

func (h *Holder) releaseCheck() {
	c := h.check
	h.check = nil
	if c.out >= 0 {
		h.unwatch(c.out)
		unix.Close(c.out)
	}
	if c.pidfd >= 0 {
		h.unwatch(c.pidfd)
		unix.Close(c.pidfd)
	}
	unix.Close(c.bin)
}

func describeWait(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + ws.Signal().String()
	}
	return "no answer"
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return ""
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return ": " + s
}

// CheckMode is the new binary's side: read the state on stdin as a
// resuming holder would, say so with its nonce, and exit.
func CheckMode() int {
	b, err := io.ReadAll(io.LimitReader(os.Stdin, 256<<20))
	if err != nil {
		fmt.Println("sockhold holder-check: read state:", err)
		return 1
	}
	st, err := decodeState(b)
	if err == nil {
		_, err = decodeConfig(st)
	}
	if err != nil {
		fmt.Println("sockhold holder-check:", err)
		return 1
	}
	fmt.Printf("sockhold holder-check ok nonce=%s format=%d\n", st.Nonce, st.Format)
	return 0
}
