package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"time"
)

// startPprof serves Go's profiler (net/http/pprof) at addr, an IP:PORT on
// the loopback, for `go tool pprof http://ADDR/debug/pprof/profile`. It is
// a flag of its own, off by default, rather than a path of the node's HTTP
// listener: that listener may face the network behind a token meant for a
// metrics scraper, and a profile is a debugging tool one turns on for an
// hour, on the host itself. Anyone on the host may read it, as anyone may
// run ps. It returns the server's closer, and rc ≥ 0 after a one-line
// error. Empty addr serves nothing.
func startPprof(cmd, addr string, stdout, stderr io.Writer) (func(), int) {
	if addr == "" {
		return func() {}, -1
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		fmt.Fprintf(stderr, "pias %s: --pprof %q: want a loopback IP:PORT, e.g. 127.0.0.1:6060\n", cmd, addr)
		return nil, 2
	}
	if !ap.Addr().IsLoopback() {
		fmt.Fprintf(stderr, "pias %s: --pprof %s: only a loopback address (127.0.0.1, ::1): a profile is for this host's eyes\n", cmd, ap)
		return nil, 2
	}
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		fmt.Fprintf(stderr, "pias %s: --pprof %s: %v\n", cmd, ap, err)
		return nil, 1
	}
	// Its own mux: the package's init registers on http.DefaultServeMux,
	// which pias serves nowhere.
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	fmt.Fprintf(stdout, "pias %s: pprof on http://%s/debug/pprof/\n", cmd, ln.Addr())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}, -1
}
