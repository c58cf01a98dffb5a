// Command testhandler is the program the integration tests run behind
// sockhold. Its first argument picks what it does; every mode reports on
// stdout, which sockhold connects to the client.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "testhandler: mode?")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "echo": // echo TEXT
		fmt.Println(strings.Join(args, " "))
	case "env":
		for _, k := range strings.Fields("PROTO TCPREMOTEIP TCPREMOTEPORT TCPLOCALIP TCPLOCALPORT REMOTE_ADDR REMOTE_PORT UNIXREMOTEEUID UNIXREMOTEEGID UNIXREMOTEPID UNIXLOCALPATH SOCKHOLD_VERSION SOCKHOLD_GENERATION") {
			if v, ok := os.LookupEnv(k); ok {
				fmt.Printf("%s=%s\n", k, v)
			}
		}
		// sockhold's internal variables must never reach a handler.
		for _, kv := range os.Environ() {
			for _, p := range []string{"SOCKHOLD_ROLE=", "SOCKHOLD_CONFIG=", "SOCKHOLD_FDS=", "TABLEFLIP_", "LISTEN_", "NOTIFY_SOCKET="} {
				if strings.HasPrefix(kv, p) {
					fmt.Printf("LEAK %s\n", kv)
				}
			}
		}
	case "version": // the version and generation of the sockhold serving it
		fmt.Printf("%s %s\n", os.Getenv("SOCKHOLD_VERSION"), os.Getenv("SOCKHOLD_GENERATION"))
	case "sleep": // sleep DURATION: then "ok"
		d, _ := time.ParseDuration(args[0])
		time.Sleep(d)
		fmt.Println("ok")
	case "count": // count FILE DURATION [ORDERFILE]: concurrency counter
		count(args)
	case "hold": // "ready", then wait for EOF on stdin; hold FILE also counts live ones
		if len(args) > 0 {
			update(args[0], +1)
			defer update(args[0], -1)
		}
		fmt.Println("ready")
		drain()
		fmt.Println("bye")
	case "ignore-term": // like hold, but SIGTERM does nothing
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		drain()
	case "stream": // stream BYTES [DURATION]: deterministic data, paced over DURATION
		n, _ := strconv.Atoi(args[0])
		var d time.Duration
		if len(args) > 1 {
			d, _ = time.ParseDuration(args[1])
		}
		stream(n, d)
	case "fake-control": // fake-control PATH: answer every request as a holder would, forged
		fakeControl(args[0])
	case "einhorn-ack": // einhorn-ack PATH PID: send einhorn's worker:ack claiming PID
		c, err := net.Dial("unix", args[0])
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Fprintf(c, "{\"command\":\"worker:ack\",\"pid\":%s}\n", args[1])
		c.Close()
	case "einhorn-cmd": // einhorn-cmd PATH COMMAND: send an einhorn command, print the one-line answer
		c, err := net.Dial("unix", args[0])
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Fprintf(c, "{\"command\":\"%s\"}\n", args[1])
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Println("no answer:", err)
			os.Exit(1)
		}
		fmt.Print(line)
	case "dial": // dial NETWORK PATH: connect to a unix socket; exit 0 if it could, else say why and exit 1
		c, err := net.Dial(args[0], args[1])
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		c.Close()
	default:
		fmt.Fprintln(os.Stderr, "testhandler: unknown mode", os.Args[1])
		os.Exit(2)
	}
}

func drain() {
	buf := make([]byte, 4096)
	for {
		if _, err := os.Stdin.Read(buf); err != nil {
			return
		}
	}
}

// count keeps a count of live handlers in FILE under flock and records the
// highest value seen in FILE.max; ORDERFILE gets the line the client sent.
func count(args []string) {
	file := args[0]
	d, _ := time.ParseDuration(args[1])
	if len(args) > 2 {
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		appendLine(args[2], strings.TrimSpace(line))
	}
	update(file, +1)
	time.Sleep(d)
	update(file, -1)
	fmt.Println("ok")
}

func update(file string, delta int) {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	cur, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	cur += delta
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(cur)+"\n"), 0)
	mb, _ := os.ReadFile(file + ".max")
	max, _ := strconv.Atoi(strings.TrimSpace(string(mb)))
	if cur > max {
		os.WriteFile(file+".max", []byte(strconv.Itoa(cur)+"\n"), 0o644)
	}
}

func appendLine(file, line string) {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		panic(err)
	}
	f.WriteString(line + "\n")
	f.Close()
}

// stream writes n bytes of a xorshift sequence in 50 chunks spread over d.
func stream(n int, d time.Duration) {
	w := bufio.NewWriterSize(os.Stdout, 64<<10)
	var x uint32 = 2463534242
	chunk := n/50 + 1
	for i := 0; i < n; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		w.WriteByte(byte(x))
		if d > 0 && (i+1)%chunk == 0 {
			w.Flush()
			time.Sleep(d / 50)
		}
	}
	w.Flush()
}

// fakeControl impersonates a holder on a control socket: every request is
// answered with a forged success.
func fakeControl(path string) {
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake-control:", err)
		os.Exit(1)
	}
	os.Chmod(path, 0o777)
	fmt.Println("listening")
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			bufio.NewReader(c).ReadString('\n')
			c.Write([]byte(`{"ok":true,"message":"upgraded","gen":99,"version":"forged","took_ms":1}` + "\n"))
		}()
	}
}
