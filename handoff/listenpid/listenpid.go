// Package listenpid is the LISTEN_PID shim. systemd's LISTEN_PID must
// equal the app's own PID, which a parent cannot know before it forks and
// Go cannot set between fork and exec. So the worker starts sockhold's own
// binary as the shim, which sets LISTEN_PID to its PID and execs the app:
// exec keeps the PID.
//
// The shim does all its work in this package's init, which imports only
// syscall: Go initialises packages in dependency order, so the shim execs
// the app before the rest of sockhold's packages (flags, logging, encoders)
// have initialised, which takes a third of the time off every app start.
// It touches no descriptor: the listeners at 3.. pass through the second
// exec as they came (the Go runtime's own descriptors are close-on-exec).
package listenpid

import "syscall"

// Env marks a process started as the LISTEN_PID shim.
const Env = "SOCKHOLD_LISTEN_PID_SHIM"

// Arg is the shim's argv[1], so that it is recognisable in ps.
const Arg = "listen-pid-shim"

// Args is how a served app is started through the shim: sockhold's own
// binary, re-executed, with the app's path and argv after it.
func Args(self, path string, argv []string) (string, []string) {
	return self, append([]string{self, Arg, path}, argv...)
}

func init() {
	if v, _ := syscall.Getenv(Env); v != "1" {
		return
	}
	args, err := cmdline()
	if err != nil {
		syscall.Write(2, []byte("sockhold "+Arg+": /proc/self/cmdline: "+err.Error()+"\n"))
		syscall.Exit(127)
	}
	syscall.Exit(run(args))
}

// cmdline reads the shim's argv (os.Args is not set before package os
// initialises, and importing os would defeat the point).
func cmdline() ([]string, error) {
	fd, err := syscall.Open("/proc/self/cmdline", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	var all []byte
	buf := make([]byte, 4096)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		all = append(all, buf[:n]...)
	}
	var args []string
	for len(all) > 0 {
		i := 0
		for i < len(all) && all[i] != 0 {
			i++
		}
		args = append(args, string(all[:i]))
		all = all[min(i+1, len(all)):]
	}
	return args, nil
}

func run(args []string) int {
	if len(args) < 4 {
		syscall.Write(2, []byte("sockhold "+Arg+": no command\n"))
		return 127
	}
	path, argv := args[2], args[3:]
	err := syscall.Exec(path, argv, env(syscall.Environ(), syscall.Getpid()))
	syscall.Write(2, []byte("sockhold: exec "+path+": "+err.Error()+"\n"))
	return 127
}

// env is the app's environment: the shim's own without its marker, and
// LISTEN_PID set to pid.
func env(in []string, pid int) []string {
	out := make([]string, 0, len(in)+1)
	for _, kv := range in {
		if hasPrefix(kv, Env+"=") || hasPrefix(kv, "LISTEN_PID=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "LISTEN_PID="+itoa(pid))
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
