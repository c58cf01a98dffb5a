module github.com/sockhold/sockhold

go 1.26.0

require (
	github.com/alecthomas/kong v1.17.0
	github.com/cloudflare/tableflip v1.2.3
	github.com/coreos/go-systemd/v22 v22.7.0
	golang.org/x/sys v0.49.0
)
