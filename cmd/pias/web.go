package main

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/web"
)

// startWeb opens the node's HTTP listener, at --http ADDR (flagAddr) or
// else at the file's http_listen; it returns nil when neither asks for
// one, and rc ≥ 0 after printing a one-line error. The listener is bound
// before the node starts, so that a port in use stops it at once.
func startWeb(cmd string, n *config.Node, flagAddr string, stderr io.Writer) (*web.Server, int) {
	addr, where := n.HTTP.Listen, fmt.Sprintf("%s:%d: http_listen", n.Path, n.HTTP.Line)
	if flagAddr != "" {
		ap, err := netip.ParseAddrPort(flagAddr)
		if err != nil || ap.Port() == 0 {
			fmt.Fprintf(stderr, "pias %s: --http %q: want IP:PORT, e.g. 127.0.0.1:9586\n", cmd, flagAddr)
			return nil, 2
		}
		addr, where = ap, "pias "+cmd+": --http"
	}
	sep := ": "
	if flagAddr != "" {
		sep = " "
	}
	if !addr.IsValid() {
		return nil, -1
	}
	s, err := web.Listen(addr, n.HTTP.Token)
	if err != nil {
		fmt.Fprintf(stderr, "%s%s%s: %v\n", where, sep, addr, err)
		return nil, 1
	}
	return s, -1
}

// withWeb makes the node's events reach s too.
func withWeb(o node.Options, s *web.Server) node.Options {
	if s == nil {
		return o
	}
	prev := o.OnEvent
	o.OnEvent = func(e overlay.Event) {
		if prev != nil {
			prev(e)
		}
		s.Event(e)
	}
	return o
}

// serveWeb starts answering for src and says where; it returns the
// listener's closer.
func serveWeb(s *web.Server, src web.Source, name string, stdout io.Writer) func() {
	if s == nil {
		return func() {}
	}
	s.Serve(src)
	fmt.Fprintf(stdout, "%s: map and metrics on %s (metrics at %smetrics)\n", name, s.URL(), s.URL())
	return func() { s.Close() }
}
