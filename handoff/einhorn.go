package handoff

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// EinhornMessage is one command an einhorn client sent on EINHORN_SOCK_PATH.
type EinhornMessage struct {
	Command string
	PID     int
}

// ParseEinhornLine reads einhorn's wire format: one message per line, the
// message a YAML document (Ruby's Einhorn::Client) or JSON (Go and Python
// clients; JSON is YAML too), with "%" and newlines escaped as %25 and %0A.
func ParseEinhornLine(line string) (EinhornMessage, error) {
	doc := strings.NewReplacer("%0A", "\n", "%0a", "\n", "%25", "%").Replace(strings.TrimRight(line, "\r\n"))
	fields := map[string]string{}
	if t := strings.TrimSpace(doc); strings.HasPrefix(t, "{") {
		var m map[string]any
		if err := json.Unmarshal([]byte(t), &m); err != nil {
			return EinhornMessage{}, fmt.Errorf("einhorn message: %v", err)
		}
		for k, v := range m {
			fields[k] = fmt.Sprint(v)
		}
	} else {
		// The flat mappings einhorn clients send: "key: value" lines,
		// keys and values possibly quoted or symbol-like (":command").
		for _, l := range strings.Split(doc, "\n") {
			l = strings.TrimSpace(l)
			if l == "" || l == "---" || l == "..." {
				continue
			}
			k, v, ok := strings.Cut(l, ": ")
			if !ok {
				return EinhornMessage{}, fmt.Errorf("einhorn message: cannot read %q", l)
			}
			fields[unquote(k)] = unquote(v)
		}
	}
	msg := EinhornMessage{Command: fields["command"]}
	if p, ok := fields["pid"]; ok {
		n, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return msg, fmt.Errorf("einhorn message: pid %q", p)
		}
		msg.PID = int(n)
	}
	if msg.Command == "" {
		return msg, fmt.Errorf("einhorn message without a command")
	}
	return msg, nil
}

func unquote(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, ":")
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		s = s[1 : len(s)-1]
	}
	return s
}
