// Package handoff is how sockets travel between processes: the environment a
// spawned handler is given about its connection (UCSPI and CGI spellings) and
// the fork+exec that puts the connection at fd 0 and 1.
//
// Listening sockets themselves (URIs, creation, inheritance from a service
// manager) live in the listen subpackage.
package handoff
