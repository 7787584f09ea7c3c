package lab

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/tunnel"
)

// Harness is an in-process lab: every node of a generated lab running in
// this process, each with its own wireguard-go device, edges on userspace
// netstacks, the underlay on loopback UDP. No root, any OS.
type Harness struct {
	Dir     string
	Lab     *Lab
	Proxies map[string]*node.Proxy
	Edges   map[string]*node.Edge

	opts    HarnessOptions
	killed  map[string]bool
	mu      sync.Mutex
	binds   map[string]*tunnel.LossyBind // every node's underlay, by name; guarded by mu
	servers []func()
	// services: what ServeTargets started, for StopService; guarded by mu.
	services []*labService
	served   map[string]bool // targets ServeTargets has served
	tempDir  bool
}

// HarnessOptions adjust a harness beyond the lab's shape.
type HarnessOptions struct {
	// Dir receives the generated configs; empty means a temporary directory
	// that Close removes.
	Dir     string
	OnEvent func(overlay.Event)
	// Logf hears every node's log, each line after its node's name.
	Logf func(format string, args ...any)
	// Generated, if set, sees the lab after it is written and before any
	// node starts.
	Generated func(*Lab)
	// Hold names nodes that Start does not start; StartNode starts them.
	Hold []string
	// Attach is every edge's probing and switching rule (node.Options.Attach).
	Attach edge.AttachConfig
}

// Start generates a lab of the given shape on loopback and starts all of it.
func Start(shape Options, hopts HarnessOptions) (*Harness, error) {
	var lastErr error
	for try := 0; try < 5; try++ {
		h, err := start(shape, hopts)
		if err == nil {
			return h, nil
		}
		lastErr = err
		if !errors.Is(err, errPortsTaken) {
			break
		}
	}
	return nil, lastErr
}

var errPortsTaken = errors.New("lab ports taken")

func start(shape Options, hopts HarnessOptions) (h *Harness, err error) {
	h = &Harness{opts: hopts, Proxies: map[string]*node.Proxy{}, Edges: map[string]*node.Edge{}, binds: map[string]*tunnel.LossyBind{}}
	h.Dir = hopts.Dir
	if h.Dir == "" {
		if h.Dir, err = os.MkdirTemp("", "pias-lab-"); err != nil {
			return nil, err
		}
		h.tempDir = true
	}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	shape.Out = h.Dir
	shape.Underlay = netip.MustParsePrefix("127.0.0.1/32")
	n := shape.Proxies + shape.Targets + shape.Clients
	if shape.BasePort, err = freePorts(n); err != nil {
		return h, err
	}
	if h.Lab, err = Generate(shape); err != nil {
		return h, err
	}
	if hopts.Generated != nil {
		hopts.Generated(h.Lab)
	}
	for _, nd := range h.Lab.Nodes {
		if slices.Contains(hopts.Hold, nd.Name) {
			continue
		}
		if err := h.startNode(nd); err != nil {
			return h, err
		}
	}
	return h, nil
}

func (h *Harness) startNode(nd Node) error {
	path := filepath.Join(h.Dir, nd.Config)
	nopts := h.nodeOptions(nd.Name)
	switch nd.Role {
	case config.RoleProxy:
		cfg, err := config.LoadProxy(path)
		if err != nil {
			return err
		}
		p, err := node.StartProxy(cfg, nopts)
		if err != nil {
			return fmt.Errorf("%w: %v", errPortsTaken, err)
		}
		h.mu.Lock()
		h.Proxies[nd.Name] = p
		h.mu.Unlock()
	default:
		load := config.LoadClient
		if nd.Role == config.RoleTarget {
			load = config.LoadTarget
		}
		cfg, err := load(path)
		if err != nil {
			return err
		}
		e, err := node.StartEdge(cfg, nopts)
		if err != nil {
			return fmt.Errorf("%w: %v", errPortsTaken, err)
		}
		h.mu.Lock()
		h.Edges[nd.Name] = e
		h.mu.Unlock()
	}
	return nil
}

// StartNode starts a node that HarnessOptions.Hold kept back.
func (h *Harness) StartNode(name string) error {
	nd := h.Node(name)
	if nd == nil {
		return fmt.Errorf("lab: no node %s", name)
	}
	h.mu.Lock()
	_, p := h.Proxies[name]
	_, e := h.Edges[name]
	h.mu.Unlock()
	if p || e {
		return fmt.Errorf("lab: %s is running", name)
	}
	return h.startNode(*nd)
}

// freePorts finds n consecutive UDP ports that are free right now, on both
// IPv4 and IPv6 wildcard addresses as wireguard-go binds them.
func freePorts(n int) (uint16, error) {
	for try := 0; try < 50; try++ {
		base := 20000 + rand.IntN(40000-n)
		ok := true
		for p := base; p < base+n && ok; p++ {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: p})
			if err != nil {
				ok = false
				break
			}
			c.Close()
		}
		if ok {
			return uint16(base), nil
		}
	}
	return 0, errors.New("no free block of UDP ports on loopback")
}

// Close stops every node and removes what the harness created.
func (h *Harness) Close() {
	h.mu.Lock()
	servers := h.servers
	h.servers = nil
	h.mu.Unlock()
	for _, stop := range servers {
		stop()
	}
	for _, e := range h.Edges {
		e.Close()
	}
	for _, p := range h.Proxies {
		p.Close()
	}
	if h.tempDir {
		os.RemoveAll(h.Dir)
	}
}

// Node returns the lab's description of a node.
func (h *Harness) Node(name string) *Node {
	for i := range h.Lab.Nodes {
		if h.Lab.Nodes[i].Name == name {
			return &h.Lab.Nodes[i]
		}
	}
	return nil
}

// Names lists the nodes of a role, in lab order.
func (h *Harness) Names(role string) []string {
	var out []string
	for _, n := range h.Lab.Nodes {
		if n.Role == role {
			out = append(out, n.Name)
		}
	}
	return out
}

// Home is the proxy an edge is attached to now. (In a CA lab that is the
// first proxy to admit it, which need not be the home its file lists
// first.)
func (h *Harness) Home(edge string) *node.Proxy {
	h.mu.Lock()
	e := h.Edges[edge]
	h.mu.Unlock()
	return h.Proxies[e.Status().Edge.Attached]
}

// TargetsOf names the targets that join g, in lab order.
func (h *Harness) TargetsOf(g router.Group) []string {
	var out []string
	for _, n := range h.Lab.Nodes {
		for _, s := range n.Groups {
			if s.Group == g.String() {
				out = append(out, n.Name)
			}
		}
	}
	return out
}

// ProxyByAddr finds a proxy by its IPv4 overlay address.
func (h *Harness) ProxyByAddr(a netip.Addr) *node.Proxy {
	for _, p := range h.Proxies {
		if p.Config.Addr4() == a {
			return p
		}
	}
	return nil
}

// WaitReady waits until every running proxy sees every other as alive,
// every target has joined its groups, and every group's RAPs list each JAP
// that has targets for it.
func (h *Harness) WaitReady(ctx context.Context) error {
	// In a CA lab, proxies admit each other by handshakes that may run
	// into a proxy not started yet, and retry.
	if err := waitFor(ctx, h.meshed); err != nil {
		return err
	}
	// Live is not yet heard from: a proxy waits for the first word of one
	// that joined (and WireGuard for its call: node/callfirst.go), so
	// tests that kill a proxy next would find it never heard.
	if err := waitFor(ctx, h.heard); err != nil {
		return err
	}
	for name, e := range h.Edges {
		if e.Target == nil {
			continue
		}
		if err := e.Target.WaitJoined(ctx); err != nil {
			return fmt.Errorf("target %s: %w", name, err)
		}
	}
	return waitFor(ctx, func() error { return h.registered() })
}

// meshed checks that every running proxy sees exactly the running proxies
// as live.
func (h *Harness) meshed() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.liveAgreed()
	return err
}

// liveAgreed returns the running proxies, sorted, and checks that each
// sees exactly them as live (the caller holds mu, or nothing starts or
// stops proxies meanwhile).
func (h *Harness) liveAgreed() ([]string, error) {
	var running []string
	for name := range h.Proxies {
		running = append(running, name)
	}
	slices.Sort(running)
	for name, p := range h.Proxies {
		if live := p.Overlay.Live(); !slices.Equal(live, running) {
			return nil, fmt.Errorf("%s sees live proxies %v, running are %v", name, live, running)
		}
	}
	return running, nil
}

// heard checks that every running proxy has heard from every other.
func (h *Harness) heard() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, p := range h.Proxies {
		for _, m := range p.Overlay.Members() {
			if m.Name != name && h.Proxies[m.Name] != nil && !m.Heard {
				return unheardError{name, m.Name}
			}
		}
	}
	return nil
}

// unheardError is heard's: proxy has not heard from proxy from. Two
// proxies that do not probe each other hear each other only through their
// start announcements, and a proxy announces a second time only to those
// it has not heard from: if it heard the other, whose words to it were
// lost, the two never speak again.
type unheardError struct{ proxy, from string }

func (e unheardError) Error() string {
	return fmt.Sprintf("%s has not heard from %s yet", e.proxy, e.from)
}

// registered checks that RAP state matches JAP state for every group.
func (h *Harness) registered() error {
	for _, jap := range h.Proxies {
		for _, g := range h.groups() {
			if len(jap.Router.Targets(g)) == 0 {
				continue
			}
			for _, rapName := range jap.Overlay.RAPs(g) {
				rap := h.Proxies[rapName]
				if rap == nil {
					return fmt.Errorf("JAP %s still counts dead %s as RAP of %s", jap.Name, rapName, g)
				}
				if !slices.ContainsFunc(rap.Overlay.RAPTable()[g], func(j router.JAP) bool { return j.Addr == jap.Config.Addr4() }) {
					return fmt.Errorf("RAP %s does not know JAP %s for %s yet", rapName, jap.Name, g)
				}
			}
		}
	}
	return nil
}

func (h *Harness) groups() []router.Group {
	var gs []router.Group
	for _, s := range h.Lab.Groups {
		g, err := router.ParseGroup(s)
		if err == nil {
			gs = append(gs, g)
		}
	}
	return gs
}

// waitFor polls cond until it returns nil or ctx ends, returning cond's last
// complaint on timeout.
func waitFor(ctx context.Context, cond func() error) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", err, ctx.Err())
		case <-t.C:
		}
	}
}

// WaitFor polls cond until it returns nil or ctx ends.
func WaitFor(ctx context.Context, cond func() error) error { return waitFor(ctx, cond) }

// KillProxy stops a proxy the way SIGKILL would: it stops answering at once
// and says goodbye to nobody. It leaves Proxies; RestartProxy brings it back.
func (h *Harness) KillProxy(name string) error {
	p := h.Proxies[name]
	if p == nil {
		return fmt.Errorf("lab: no running proxy %s", name)
	}
	p.Close()
	h.mu.Lock()
	delete(h.Proxies, name)
	h.mu.Unlock()
	if h.killed == nil {
		h.killed = map[string]bool{}
	}
	h.killed[name] = true
	return nil
}

// RestartProxy starts a killed proxy again from its config, with empty
// state, on the same ports.
func (h *Harness) RestartProxy(name string) error {
	if !h.killed[name] {
		return fmt.Errorf("lab: proxy %s was not killed", name)
	}
	nd := h.Node(name)
	cfg, err := config.LoadProxy(filepath.Join(h.Dir, nd.Config))
	if err != nil {
		return err
	}
	var p *node.Proxy
	// The old socket may take a moment to be released.
	for try := 0; ; try++ {
		p, err = node.StartProxy(cfg, h.nodeOptions(name))
		if err == nil || try == 20 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	delete(h.killed, name)
	h.mu.Lock()
	h.Proxies[name] = p
	h.mu.Unlock()
	return nil
}

// Running is a copy of Proxies, safe to take while another goroutine
// kills or restarts proxies (a web page of the demo's lab does).
func (h *Harness) Running() map[string]*node.Proxy {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.Proxies)
}

// nodeOptions are the options a node of the harness starts with: its own
// LossyBind, fresh, carrying the rules its previous bind (if any) had, so
// that a restarted node is still partitioned or delayed as before.
func (h *Harness) nodeOptions(name string) node.Options {
	b := tunnel.NewLossyBind(nil)
	h.mu.Lock()
	if old := h.binds[name]; old != nil {
		b.SetRules(old.Rules())
	}
	h.binds[name] = b
	h.mu.Unlock()
	var logf func(string, ...any)
	if inner := h.opts.Logf; inner != nil {
		logf = func(f string, a ...any) { inner(name+": "+f, a...) }
	}
	return node.Options{Logf: logf, OnEvent: h.opts.OnEvent, Bind: b, Attach: h.opts.Attach, CheckNetstack: true}
}

// Bind is the underlay of the named node (the one it runs on now, or ran on
// last if it was killed); nil if there is no such node.
func (h *Harness) Bind(name string) *tunnel.LossyBind {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.binds[name]
}

// endpoint is a node's WireGuard address on the underlay: what other nodes
// send to, and so what a LossyBind rule names.
func (h *Harness) endpoint(name string) (netip.AddrPort, error) {
	nd := h.Node(name)
	if nd == nil {
		return netip.AddrPort{}, fmt.Errorf("lab: no node %s", name)
	}
	return nd.Endpoint, nil
}

// editRule changes the rule of from's underlay for packets to to.
func (h *Harness) editRule(from, to string, edit func(*tunnel.Rule)) error {
	ep, err := h.endpoint(to)
	if err != nil {
		return err
	}
	b := h.Bind(from)
	if b == nil {
		return fmt.Errorf("lab: no node %s", from)
	}
	h.mu.Lock() // serialises read-modify-write of one rule
	defer h.mu.Unlock()
	r := b.Rule(ep)
	edit(&r)
	b.SetRule(ep, r)
	return nil
}

// Partition cuts every node of a off from every node of b, both ways: each
// side's underlay drops what it sends to the other. Nodes in neither set
// are untouched, and delays set with SetDelay stay. Heal undoes it.
func (h *Harness) Partition(a, b []string) error {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return fmt.Errorf("lab: %s is on both sides of a partition", x)
			}
			for _, pair := range [][2]string{{x, y}, {y, x}} {
				if err := h.editRule(pair[0], pair[1], func(r *tunnel.Rule) { r.Drop = true }); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Heal removes every partition and every delay.
func (h *Harness) Heal() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.binds {
		b.Clear()
	}
}

// SetDelay delays what from sends to to by d (one direction; zero removes
// the delay). Delays add up with the loopback's own latency.
func (h *Harness) SetDelay(from, to string, d time.Duration) error {
	return h.editRule(from, to, func(r *tunnel.Rule) { r.Delay = d })
}

// Consistent checks that the control plane agrees with the running lab:
// every running proxy sees exactly the running proxies as live; no target
// is joined at two proxies, and one whose home proxy runs is joined
// somewhere (edges may move: emulated anycast); and every group's
// RAPs (by the hash over running proxies) list exactly the JAPs that have
// targets for it, with their counts, and no other proxy lists any.
func (h *Harness) Consistent() error {
	live, err := h.liveAgreed()
	if err != nil {
		return err
	}
	groups := h.groups()
	for _, name := range h.Names(config.RoleTarget) {
		e := h.Edges[name]
		if e == nil {
			continue // held back, not started
		}
		home := e.Config.Proxies[0].Name
		for _, s := range e.Config.Groups {
			var at []string
			for _, p := range h.Proxies {
				if slices.ContainsFunc(p.Router.Targets(s.Group), func(a netip.AddrPort) bool { return slices.Contains(e.Config.Address, a.Addr()) }) {
					at = append(at, p.Name)
				}
			}
			// A target is joined at one proxy: its home while that runs;
			// when it does not, the edge may have moved elsewhere.
			_, homeUp := h.Proxies[home]
			if len(at) > 1 || (homeUp && len(at) == 0) {
				return fmt.Errorf("target %s of %s is joined at %v (home %s)", name, s.Group, at, home)
			}
		}
	}
	// Expected RAP tables: group → JAP address → target count.
	want := map[router.Group]map[netip.Addr]int{}
	for _, p := range h.Proxies {
		for _, g := range groups {
			n := len(p.Router.Targets(g))
			if n == 0 {
				continue
			}
			for _, gg := range []router.Group{g, router.EchoGroup(g.Addr)} {
				if want[gg] == nil {
					want[gg] = map[netip.Addr]int{}
				}
				want[gg][p.Config.Addr4()] += n
			}
		}
	}
	for _, p := range h.Proxies {
		table := p.Overlay.RAPTable()
		for g, japs := range table {
			if !slices.Contains(overlay.RAPs(g, live, p.Config.RAPReplicas), p.Name) {
				return fmt.Errorf("%s is not a RAP of %s but lists JAPs %v", p.Name, g, japs)
			}
		}
		for g, w := range want {
			if !slices.Contains(overlay.RAPs(g, live, p.Config.RAPReplicas), p.Name) {
				continue
			}
			got := map[netip.Addr]int{}
			for _, j := range table[g] {
				got[j.Addr] = j.Targets
			}
			if !sameKeys(got, w) || (!g.IsEcho() && !maps.Equal(got, w)) {
				return fmt.Errorf("RAP %s of %s lists %v, want %v", p.Name, g, got, w)
			}
		}
	}
	return nil
}

func sameKeys(a, b map[netip.Addr]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// AddNode signs a new node into the running CA lab (Lab.SignNode), on a
// free loopback port; StartNode starts it.
func (h *Harness) AddNode(n NewNode) (*Node, error) {
	port, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	n.Endpoint = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	return h.Lab.SignNode(n, time.Now())
}

// StartForged starts the target name with the groups lab.json gives it,
// past the config loader, which refuses a file whose groups its
// certificate does not grant: it stands for a node that skips that check
// (a modified pias), to meet the proxies' own. Its certificate must grant
// some group (the loader reads the file with that one).
func (h *Harness) StartForged(name string) error {
	nd := h.Node(name)
	if nd == nil || nd.Role != config.RoleTarget || nd.Cert == "" {
		return fmt.Errorf("lab: no target %s with a certificate", name)
	}
	text, err := os.ReadFile(h.Lab.Path(nd.Cert))
	if err != nil {
		return err
	}
	c, err := cert.ParsePEM(text)
	if err != nil {
		return err
	}
	if len(c.Groups) == 0 {
		return fmt.Errorf("lab: %s's certificate grants no group", name)
	}
	r := c.Groups[0]
	granted := router.Group{Addr: r.Prefix.Addr(), Port: max(r.Port, 1), Proto: r.Proto}
	path := filepath.Join(h.Dir, nd.Config)
	cfg, err := config.FileReader(func(p string) ([]byte, error) {
		b, err := os.ReadFile(p)
		if err != nil || p != path {
			return b, err
		}
		lines := strings.Split(string(b), "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, "group = ") {
				lines[i] = "group = " + strconv.Quote(granted.String())
			}
		}
		return []byte(strings.Join(lines, "\n")), nil
	}).LoadTarget(path)
	if err != nil {
		return err
	}
	cfg.Groups = nil
	for _, s := range nd.Groups {
		g, err := router.ParseGroup(s.Group)
		if err != nil {
			return err
		}
		cfg.Groups = append(cfg.Groups, config.Service{Group: g, Port: s.Port, Weight: 1})
	}
	e, err := node.StartEdge(cfg, h.nodeOptions(name))
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.Edges[name] = e
	h.mu.Unlock()
	return nil
}

// CloseEdge stops a running edge and forgets it (StartNode starts it again).
func (h *Harness) CloseEdge(name string) {
	if e := h.forgetEdge(name); e != nil {
		e.Close()
	}
}

// forgetEdge takes a running edge out of the lab, without stopping it.
func (h *Harness) forgetEdge(name string) *node.Edge {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.Edges[name]
	delete(h.Edges, name)
	delete(h.served, name)
	return e
}

// ReloadProxy re-reads a running proxy's file and applies it, as SIGHUP
// does (its revocation list too); it returns the changes, one line each.
func (h *Harness) ReloadProxy(name string) ([]string, error) {
	p, nd := h.Proxies[name], h.Node(name)
	if p == nil || nd == nil {
		return nil, fmt.Errorf("lab: no running proxy %s", name)
	}
	cfg, err := config.LoadProxy(h.Lab.Path(nd.Config))
	if err != nil {
		return nil, err
	}
	return p.Reload(cfg)
}
