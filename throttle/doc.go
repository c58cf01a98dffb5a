// Package throttle decides when a connection may be admitted: how many
// handler slots are in use across every generation, whether the load average
// allows another handler, and how long to back off after failures.
//
// Nothing here touches a socket. The worker asks Admit before each accept and
// leaves the listener alone while the answer is "wait", so excess connections
// stay in the kernel's accept queue in arrival order.
package throttle
