package listen

import (
	"fmt"
	"net"
	"strconv"
)

// FromPort builds the specs for socket-burst-dampener's command line:
// PORT [--address A] [--ipv4] [--ipv6]. With no address every address is
// used: one dual-stack IPv6 socket where the host allows it (--ipv4 or --ipv6
// alone narrows that to one family). With an address, each address it
// resolves to gets a socket of its own.
func FromPort(port, address string, ipv4, ipv6 bool) ([]Spec, error) {
	p, err := ParsePort(port)
	if err != nil {
		return nil, fmt.Errorf("PORT: %v", err)
	}
	scheme := "tcp"
	switch {
	case ipv4 && !ipv6:
		scheme = "tcp4"
	case ipv6 && !ipv4:
		scheme = "tcp6"
	}
	uri := scheme + "://" + net.JoinHostPort(address, strconv.Itoa(p))
	s, err := Parse(uri)
	if err != nil {
		return nil, err
	}
	return []Spec{s}, nil
}
