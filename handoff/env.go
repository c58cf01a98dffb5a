package handoff

import "strings"

// FilterEnv returns env without the variables named in drop and without any
// variable whose name starts with one of dropPrefixes.
func FilterEnv(env []string, drop []string, dropPrefixes []string) []string {
	out := make([]string, 0, len(env))
next:
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		for _, d := range drop {
			if name == d {
				continue next
			}
		}
		for _, p := range dropPrefixes {
			if strings.HasPrefix(name, p) {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}
