package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/cores"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/sdnotify"
	"github.com/pias-net/pias/tunnel"
	"github.com/pias-net/pias/web"
)

func init() {
	register("proxy", "run a proxy (no root, no host interface)", runProxy)
	register("target", "run a target: join its groups and serve them", runTarget)
	register("client", "run a client: reach groups through its proxy", runClient)
}

// configError prints a config problem as its one line and returns 2.
func configError(stderr io.Writer, cmd string, err error) int {
	var ce *config.Error
	if errors.As(err, &ce) {
		fmt.Fprintln(stderr, ce)
	} else {
		fmt.Fprintf(stderr, "pias %s: %v\n", cmd, err)
	}
	return 2
}

// nodeOptions are the options every real node runs with: events logged,
// wireguard-go's errors on stderr, and the UAPI socket for `wg show` when
// this user may create it (root, usually); without it a node still runs.
func nodeOptions(name string, stdout, stderr io.Writer, events bool) node.Options {
	o := node.Options{Logf: log.New(stderr, name+": ", logFlags(log.LstdFlags)).Printf, UAPI: uapiWritable()}
	if events {
		o.OnEvent = eventLogger(stdout)
	}
	if !o.UAPI {
		fmt.Fprintf(stderr, "pias: note: %s is not writable, so `wg show` will not see %s\n", tunnel.UAPIDir, name)
	}
	return o
}

func uapiWritable() bool {
	if os.MkdirAll(tunnel.UAPIDir, 0o755) != nil {
		return false
	}
	f, err := os.CreateTemp(tunnel.UAPIDir, ".pias-probe-")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}

// serveStatus opens the node's admin endpoint for `pias status`; a node
// runs on without it (with a note) when the socket cannot be made.
// d, if not nil, answers pias drain and undrain.
func serveStatus(name string, status func() any, d node.Drainer, stderr io.Writer) func() {
	c, err := node.ServeAdmin(node.AdminSocket(name), status, d)
	if err != nil {
		fmt.Fprintf(stderr, "pias: note: pias status will not see %s: %v\n", name, err)
		return func() {}
	}
	return func() { c.Close() }
}

// logFlags is flags, less the date and time when systemd started the node:
// journald stamps every line itself.
func logFlags(flags int) int {
	if sdnotify.UnderSystemd() {
		return flags &^ (log.Ldate | log.Ltime | log.Lmicroseconds)
	}
	return flags
}

// notify tells systemd how the node is doing, when it started the node as
// a Type=notify unit: sdnotify.Ready once the node is up and answers pias
// status, sdnotify.Stopping when it begins to stop.
func notify(stderr io.Writer, state string) {
	if _, err := sdnotify.Notify(state); err != nil {
		fmt.Fprintf(stderr, "pias: note: cannot tell systemd %s: %v\n", state, err)
	}
}

// untilSignal blocks until SIGINT or SIGTERM. On SIGHUP it calls reload
// (if not nil), which re-reads the node's file and applies it.
func untilSignal(reload func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for s := range sigs {
		if s != syscall.SIGHUP {
			return
		}
		if reload != nil {
			reload()
		}
	}
}

// reloader is a node's SIGHUP: it loads the file at path with load and,
// if it loads, applies it with apply; either way it says what happened on
// stderr, one line each. A file that fails to load changes nothing.
func reloader[C any](role, path string, stderr io.Writer, load func(string) (C, error), apply func(C) ([]string, error)) func() {
	return func() {
		cfg, err := load(path)
		if err != nil {
			for _, e := range config.Errors(err) {
				fmt.Fprintln(stderr, e)
			}
			if len(config.Errors(err)) == 0 {
				fmt.Fprintf(stderr, "pias %s: reload: %v\n", role, err)
			}
			fmt.Fprintf(stderr, "pias %s: reload of %s failed: nothing changed\n", role, path)
			return
		}
		changes, err := apply(cfg)
		if err != nil {
			fmt.Fprintf(stderr, "pias %s: reload of %s: %v\n", role, path, err)
			return
		}
		if len(changes) == 0 {
			fmt.Fprintf(stderr, "pias %s: reloaded %s: no change\n", role, path)
		}
		for _, c := range changes {
			fmt.Fprintf(stderr, "pias %s: reloaded %s: %s\n", role, path, c)
		}
	}
}

// nodeFlags is flags for a node command, whose -c FILE is required: parse
// returns the file, or an exit status ≥ 0 to return at once.
// The flag --http ADDR, in the set too, goes to *httpAddr. The flag
// --pprof ADDR starts Go's profiler at parse (see startPprof); the caller
// defers *stopPprof, which is never nil.
func nodeFlags(role, synopsis string, stdout, stderr io.Writer, httpAddr *string, stopPprof *func()) (*flag.FlagSet, func([]string) (string, int)) {
	fs, parse := flags(role, synopsis, stdout, stderr)
	path := fs.String("c", "", "the "+role+"'s config file (required)")
	fs.StringVar(httpAddr, "http", "", "serve metrics, the API and the live map on `ADDR` (IP:PORT; overrides http_listen)")
	pprofAddr := fs.String("pprof", "", "serve Go's profiler (net/http/pprof) on `ADDR`, a loopback IP:PORT such as 127.0.0.1:6060")
	*stopPprof = func() {}
	return fs, func(args []string) (string, int) {
		if rc := parse(args); rc >= 0 {
			return "", rc
		}
		if *path == "" {
			fmt.Fprintf(stderr, "pias %s: -c FILE is required\n", role)
			return "", 2
		}
		stop, rc := startPprof(role, *pprofAddr, stdout, stderr)
		if rc >= 0 {
			return "", rc
		}
		*stopPprof = stop
		return *path, -1
	}
}

// proxyGC collects a proxy's heap at 1.3 times its live size rather than
// Go's 2: under load the live heap is mostly wireguard-go's 64 KiB packet
// buffers (up to about 38 MiB with the gate's caps), and the default lets
// RSS reach 100-130 MB, most of it garbage. Measured on the namespace lab
// with 8 TCP streams (paired runs): peak RSS 53-57 MB; throughput at GOGC
// 30 over 40 median 1.05, at 40 over Go's default with the old caps
// median 1.02. GOGC set in the environment wins.
func proxyGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(30)
	}
}

// startCores runs a node on one core while one is enough (package cores);
// GOMAXPROCS in the environment turns it off.
func startCores(name string, stderr io.Writer) (stop func()) {
	return cores.Start(os.Getenv, log.New(stderr, name+": ", logFlags(log.LstdFlags)).Printf)
}

func runProxy(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var httpAddr string
	var stopPprof func()
	_, parse := nodeFlags("proxy", "proxy -c proxy.toml", stdout, stderr, &httpAddr, &stopPprof)
	path, rc := parse(args)
	defer stopPprof()
	if rc >= 0 {
		return rc
	}
	cfg, err := config.LoadProxy(path)
	if err != nil {
		return configError(stderr, "proxy", err)
	}
	proxyGC(os.Getenv)
	defer startCores(cfg.InterfaceName, stderr)()
	ws, rc := startWeb("proxy", &cfg.Node, httpAddr, stderr)
	if rc >= 0 {
		return rc
	}
	p, err := node.StartProxy(cfg, withWeb(nodeOptions(cfg.InterfaceName, stdout, stderr, true), ws))
	if err != nil {
		fmt.Fprintf(stderr, "pias proxy: %v\n", err)
		return 1
	}
	defer serveWeb(ws, web.ProxySource(p), "proxy "+cfg.Name, stdout)()
	defer serveStatus(cfg.InterfaceName, func() any { return p.Status() }, nil, stderr)()
	port, _ := p.ListenPort()
	if cfg.CAMode() {
		fmt.Fprintf(stdout, "proxy %s up: cluster %s, overlay %s, WireGuard on UDP %d, CA %s, %d seeds, admitting by certificate\n",
			cfg.Name, cfg.Cluster, joinAddrs(cfg.Address), port, logStr(cfg.CA.Name), len(cfg.Proxies))
	} else {
		fmt.Fprintf(stdout, "proxy %s up: cluster %s, overlay %s, WireGuard on UDP %d, %d proxies, %d edges\n",
			cfg.Name, cfg.Cluster, joinAddrs(cfg.Address), port, len(cfg.Proxies)+1, len(cfg.Edges))
	}
	notify(stderr, sdnotify.Ready)
	untilSignal(reloader("proxy", path, stderr, config.LoadProxy, p.Reload))
	notify(stderr, sdnotify.Stopping)
	p.Close()
	fmt.Fprintf(stdout, "proxy %s stopped\n", cfg.Name)
	return 0
}

func runTarget(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var httpAddr string
	var stopPprof func()
	_, parse := nodeFlags("target", "target -c target.toml", stdout, stderr, &httpAddr, &stopPprof)
	path, rc := parse(args)
	defer stopPprof()
	if rc >= 0 {
		return rc
	}
	cfg, err := config.LoadTarget(path)
	if err != nil {
		return configError(stderr, "target", err)
	}
	defer startCores(cfg.InterfaceName, stderr)()
	ws, rc := startWeb("target", &cfg.Node, httpAddr, stderr)
	if rc >= 0 {
		return rc
	}
	e, err := node.StartEdge(cfg, withWeb(nodeOptions(cfg.InterfaceName, stdout, stderr, true), ws))
	if err != nil {
		fmt.Fprintf(stderr, "pias target: %v\n", err)
		return 1
	}
	defer e.Close()
	defer serveWeb(ws, web.EdgeSource(e), "target "+cfg.Name, stdout)()
	defer serveStatus(e.Status().Interface, func() any { return e.Status() }, e, stderr)()
	// On the userspace netstack, the group's traffic reaches the service
	// that runs on this host's loopback, on the configured local port; on a
	// kernel TUN it reaches the service directly.
	for _, s := range cfg.Groups {
		if e.Host.Net == nil {
			fmt.Fprintf(stdout, "target %s: %s → port %d/%s on %s\n", cfg.Name, s.Group, s.Port, router.ProtoName(s.Group.Proto), e.Host.Name)
			continue
		}
		for _, a := range cfg.Address {
			f, err := e.Host.ServeFromHost(netip.AddrPortFrom(a, s.Port), s.Group.Proto == router.ProtoUDP)
			if err != nil {
				fmt.Fprintf(stderr, "pias target: serve %s: %v\n", s.Group, err)
				return 1
			}
			defer f.Close()
		}
		fmt.Fprintf(stdout, "target %s: %s → localhost:%d/%s\n", cfg.Name, s.Group, s.Port, router.ProtoName(s.Group.Proto))
	}
	fmt.Fprintf(stdout, "target %s up: overlay %s, attached to %s\n", cfg.Name, joinAddrs(cfg.Address), proxyName(cfg.Proxies[0]))
	notify(stderr, sdnotify.Ready)
	untilSignal(reloader("target", path, stderr, config.LoadTarget, func(c *config.Edge) ([]string, error) { return e.Reload(context.Background(), c) }))
	notify(stderr, sdnotify.Stopping)
	fmt.Fprintf(stdout, "target %s leaving its groups\n", cfg.Name)
	return 0
}

// forwardFlag collects --forward LISTEN=GROUP values.
type forwardFlag []string

func (f *forwardFlag) String() string     { return strings.Join(*f, ",") }
func (f *forwardFlag) Set(v string) error { *f = append(*f, v); return nil }

func runClient(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var httpAddr string
	var stopPprof func()
	fs, parse := nodeFlags("client", "client -c client.toml [--forward 127.0.0.1:8080=100.65.0.1:80/tcp ...]", stdout, stderr, &httpAddr, &stopPprof)
	var fwd forwardFlag
	fs.Var(&fwd, "forward", "relay a local `LISTEN=GROUP` (host address:port = anycast group) through the overlay; repeatable")
	path, rc := parse(args)
	defer stopPprof()
	if rc >= 0 {
		return rc
	}
	type forward struct {
		listen netip.AddrPort
		group  router.Group
	}
	var forwards []forward
	for _, v := range fwd {
		l, g, ok := strings.Cut(v, "=")
		listen, err1 := netip.ParseAddrPort(l)
		group, err2 := router.ParseGroup(g)
		if !ok || err1 != nil || err2 != nil {
			fmt.Fprintf(stderr, "pias client: --forward %q: want LISTEN=GROUP, e.g. 127.0.0.1:8080=100.65.0.1:80/tcp\n", v)
			return 2
		}
		forwards = append(forwards, forward{listen, group})
	}
	cfg, err := config.LoadClient(path)
	if err != nil {
		return configError(stderr, "client", err)
	}
	for _, f := range forwards {
		if !cfg.InAnycast(f.group.Addr) {
			fmt.Fprintf(stderr, "pias client: --forward %s: %s is outside the anycast prefixes of %s\n", f.group, f.group.Addr, path)
			return 2
		}
	}
	if len(forwards) > 0 && cfg.Interface != config.InterfaceNetstack {
		fmt.Fprintf(stderr, "pias client: --forward needs interface = \"netstack\"; with a kernel TUN, programs reach groups directly\n")
		return 2
	}
	defer startCores(cfg.InterfaceName, stderr)()
	ws, rc := startWeb("client", &cfg.Node, httpAddr, stderr)
	if rc >= 0 {
		return rc
	}
	e, err := node.StartEdge(cfg, withWeb(nodeOptions(cfg.InterfaceName, stdout, stderr, false), ws))
	if err != nil {
		fmt.Fprintf(stderr, "pias client: %v\n", err)
		return 1
	}
	defer e.Close()
	defer serveWeb(ws, web.EdgeSource(e), "client "+cfg.Name, stdout)()
	defer serveStatus(e.Status().Interface, func() any { return e.Status() }, nil, stderr)()
	for _, f := range forwards {
		from := cfg.AddrLike(f.group.Addr)
		if !from.IsValid() {
			fmt.Fprintf(stderr, "pias client: --forward %s: %s has no overlay address of that family\n", f.group, cfg.Name)
			return 2
		}
		fw, err := e.Host.ForwardToOverlay(f.listen, netip.AddrPortFrom(f.group.Addr, f.group.Port), from, f.group.Proto == router.ProtoUDP)
		if err != nil {
			fmt.Fprintf(stderr, "pias client: --forward %s: %v\n", f.listen, err)
			return 1
		}
		defer fw.Close()
		fmt.Fprintf(stdout, "client %s: %s/%s → %s\n", cfg.Name, f.listen, router.ProtoName(f.group.Proto), f.group)
	}
	fmt.Fprintf(stdout, "client %s up: overlay %s, anycast %s via %s\n", cfg.Name, joinAddrs(cfg.Address), joinPrefixes(cfg.AnycastPrefix), proxyName(cfg.Proxies[0]))
	notify(stderr, sdnotify.Ready)
	untilSignal(reloader("client", path, stderr, config.LoadClient, func(c *config.Edge) ([]string, error) { return e.Reload(context.Background(), c) }))
	notify(stderr, sdnotify.Stopping)
	fmt.Fprintf(stdout, "client %s stopped\n", cfg.Name)
	return 0
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// proxyName names a proxy of an edge's file: by its name, or in CA mode
// (where the name is optional) by its endpoint.
func proxyName(p config.ProxyPeer) string {
	if p.Name != "" {
		return p.Name
	}
	return p.Endpoint.String()
}
