package node

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// caLab is a CA and what it signed, for nodes built in-process.
type caLab struct {
	t   *testing.T
	ca  *cert.CA
	key []byte
	mu  sync.Mutex
	ev  []overlay.Event
	// life is how long the certificates signed next are valid (default
	// an hour).
	life time.Duration
	// stay: the edges started next learn no proxies.
	stay bool
}

func newCALab(t *testing.T) *caLab {
	ca, key, err := cert.NewCA("test", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &caLab{t: t, ca: ca, key: key}
}

func (l *caLab) onEvent(e overlay.Event) {
	if testing.Verbose() {
		l.t.Logf("%s event %+v", time.Now().Format("15:04:05.000"), e)
	}
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

// events lists the events so far of kind k, as "proxy name reason".
func (l *caLab) events(k overlay.EventKind) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.ev {
		if e.Kind == k {
			out = append(out, e.Proxy+" "+e.Name+" "+e.Reason)
		}
	}
	return out
}

// sign makes a key and a certificate for a node.
func (l *caLab) sign(name string, role cert.Role, addrs []netip.Addr, cluster string, groups ...cert.GroupRight) (config.Key, *cert.Certificate) {
	l.t.Helper()
	k, err := config.GeneratePrivateKey()
	if err != nil {
		l.t.Fatal(err)
	}
	c := &cert.Certificate{Name: name, Role: role, PublicKey: k.PublicKey(), Addresses: addrs, Cluster: cluster, Groups: groups,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(cmp.Or(l.life, time.Hour))}
	if role == cert.RoleTarget {
		c.MaxWeight = 1
	}
	if err := l.ca.Sign(c, l.key); err != nil {
		l.t.Fatal(err)
	}
	return k, c
}

func (l *caLab) node(name string, k config.Key, c *cert.Certificate, seeds ...netip.AddrPort) config.Node {
	n := config.Node{Name: name, PrivateKey: k, PublicKey: k.PublicKey(), Address: c.Addresses,
		OverlayPrefix: config.DefaultOverlayPrefix(), AnycastPrefix: config.DefaultAnycastPrefix(),
		MTU: config.DefaultMTU, ControlPort: config.DefaultControlPort, Listen: netip.MustParseAddrPort("127.0.0.1:0"),
		InterfaceName: "pias-ca-" + name, CA: l.ca, Cert: c}
	for _, s := range seeds {
		n.Proxies = append(n.Proxies, config.ProxyPeer{Endpoint: s})
	}
	return n
}

func (l *caLab) proxy(name string, i int, seeds ...netip.AddrPort) (*Proxy, netip.AddrPort) {
	l.t.Helper()
	k, c := l.sign(name, cert.RoleProxy, []netip.Addr{netip.AddrFrom4([4]byte{100, 64, 0, byte(i)})}, "c1")
	p, err := StartProxy(&config.Proxy{Node: l.node(name, k, c, seeds...), Cluster: "c1", RAPReplicas: 2, Inaccuracy: 25, MaxFlows: config.DefaultMaxFlows},
		Options{OnEvent: l.onEvent})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(p.Close)
	port, err := p.ListenPort()
	if err != nil {
		l.t.Fatal(err)
	}
	return p, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
}

func (l *caLab) edge(name string, role cert.Role, addr netip.Addr, rights []cert.GroupRight, groups []config.Service, proxies ...netip.AddrPort) *Edge {
	l.t.Helper()
	k, c := l.sign(name, role, []netip.Addr{addr}, "", rights...)
	return l.start(name, k, c, groups, proxies...)
}

func (l *caLab) start(name string, k config.Key, c *cert.Certificate, groups []config.Service, proxies ...netip.AddrPort) *Edge {
	l.t.Helper()
	r := config.RoleClient
	if c.Role == cert.RoleTarget {
		r = config.RoleTarget
	}
	cfg := &config.Edge{Node: l.node(name, k, c, proxies...), Role: r, Interface: config.InterfaceNetstack,
		Keepalive: config.DefaultKeepalive, Groups: groups, LearnProxies: !l.stay}
	e, err := StartEdge(cfg, Options{OnEvent: l.onEvent})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(e.Close)
	return e
}

// twoProxies starts p1, and p2 joined through p1 by its endpoint alone,
// and waits until each sees the other alive.
func (l *caLab) twoProxies() (p1, p2 *Proxy, ep1, ep2 netip.AddrPort) {
	l.t.Helper()
	p1, ep1 = l.proxy("p1", 1)
	p2, ep2 = l.proxy("p2", 2, ep1)
	both := []string{"p1", "p2"}
	waitFor(l.t, "p2 admitted through p1", 10*time.Second, func() bool {
		return slices.Equal(p1.Overlay.Live(), both) && slices.Equal(p2.Overlay.Live(), both)
	})
	return p1, p2, ep1, ep2
}

// echoTarget starts a target at addr that may join what right grants,
// joins g, and answers UDP on port 5353 (echo).
func (l *caLab) echoTarget(name, addr string, right cert.GroupRight, g router.Group, proxies ...netip.AddrPort) *Edge {
	l.t.Helper()
	e := l.edge(name, cert.RoleTarget, netip.MustParseAddr(addr), []cert.GroupRight{right},
		[]config.Service{{Group: g, Port: 5353, Weight: 1}}, proxies...)
	echo(l.t, e, 5353)
	return e
}

func mustRight(t *testing.T, s string) cert.GroupRight {
	t.Helper()
	r, err := cert.ParseGroupRight(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// echo serves UDP on the target's netstack at port: it answers "name: "
// and what it got.
func echo(t *testing.T, e *Edge, port uint16) {
	t.Helper()
	c, err := e.Host.Net.ListenUDPAddrPort(netip.AddrPortFrom(e.Config.Address[0], port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte(e.Name+": "), buf[:n]...), from)
		}
	}()
}

// ask sends msg to g from the client's netstack until an answer comes, or
// the deadline; it returns the answer.
func ask(t *testing.T, cl *Edge, g router.Group, msg string, within time.Duration) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, err := cl.Host.Net.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(g.Addr, g.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for ctx.Err() == nil {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", fmt.Errorf("no answer from %v within %v", g, within)
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCAOverlay: a CA-mode overlay from files that name no peer's key.
// Proxy p2 joins through p1 by endpoint alone; a target and a client,
// each knowing one proxy's endpoint, are admitted by certificate; the
// client's request reaches the target through real WireGuard tunnels,
// byte for byte. A target whose certificate lacks the group is refused
// (told why), a second certificate for a live target's address is refused
// at another proxy, and a revoked target is cut off at every proxy.
func TestCAOverlay(t *testing.T) {
	l := newCALab(t)
	g := router.Group{Addr: netip.MustParseAddr("100.65.0.7"), Port: 53, Proto: router.ProtoUDP}
	right := mustRight(t, "100.65.0.0/24:*/udp")
	p1, p2, ep1, ep2 := l.twoProxies()

	t1 := l.echoTarget("t1", "100.64.1.1", right, g, ep2)
	cl := l.edge("cl1", cert.RoleClient, netip.MustParseAddr("100.64.2.1"), nil, nil, ep1)
	start := time.Now()
	got, err := ask(t, cl, g, "hello anycast", 15*time.Second)
	if err != nil {
		t.Fatalf("%v; events: %q", err, l.events(overlay.EventRefuse))
	}
	if got != "t1: hello anycast" {
		t.Fatalf("answer %q, want %q", got, "t1: hello anycast")
	}
	t.Logf("first answer %v after the target and client started", time.Since(start).Round(time.Millisecond))

	// A target whose certificate does not grant the group: refused at its
	// JAP, which tells it why.
	bad := l.edge("t2", cert.RoleTarget, netip.MustParseAddr("100.64.1.2"), nil, []config.Service{{Group: g, Port: 5353, Weight: 1}}, ep1)
	waitFor(t, "t2's join refused", 10*time.Second, func() bool {
		return slices.ContainsFunc(l.events(overlay.EventJoinRefused), func(s string) bool { return strings.Contains(s, "may not join") })
	})
	_ = bad

	// A second certificate for t1's address, with another key, at the
	// other proxy: t1 is live, so it keeps its address and its group.
	l.edge("t1b", cert.RoleTarget, netip.MustParseAddr("100.64.1.1"), []cert.GroupRight{right},
		[]config.Service{{Group: g, Port: 5353, Weight: 1}}, ep1)
	waitFor(t, "t1b refused", 10*time.Second, func() bool {
		return slices.ContainsFunc(l.events(overlay.EventNotAdmitted), func(s string) bool {
			return strings.Contains(s, "t1b") && strings.Contains(s, `held by edge "t1", which is live`)
		})
	})
	for i := range 3 {
		msg := fmt.Sprintf("still t1? %d", i)
		if got, err := ask(t, cl, g, msg, 5*time.Second); err != nil || got != "t1: "+msg {
			t.Fatalf("after t1b's hello: answer %q (%v), want %q", got, err, "t1: "+msg)
		}
	}

	// Revoke t1: every proxy cuts it off, and the group has no target.
	rl, err := cert.NewRevocationList(l.ca, l.key, 1, time.Now(), nil, []cert.Fingerprint{t1.Config.Cert.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := p1.Overlay.SetRevocationList(rl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "t1 cut off at every proxy", 10*time.Second, func() bool {
		return p2.Overlay.RevocationSerial() == 1 && !slices.Contains(p2.Overlay.CertEdges(), "t1") && len(p2.Router.Targets(g)) == 0
	})
	t.Logf("t1 cut off everywhere %v after the revocation", time.Since(start).Round(time.Millisecond))
	if _, err := ask(t, cl, g, "anyone?", time.Second); err == nil {
		t.Error("a revoked target still answers")
	}
	if !bytes.Contains([]byte(strings.Join(l.events(overlay.EventEdgeRemoved), "\n")), []byte("revoked")) {
		t.Errorf("no edge-removed event says revoked: %q", l.events(overlay.EventEdgeRemoved))
	}
}

// TestReload: a running target takes a new group and drops an old one from
// its reloaded file, and a running proxy takes a revocation list from its
// reloaded file (passing it to the other proxies); a reload that changes
// what needs a restart changes nothing.
func TestReload(t *testing.T) {
	l := newCALab(t)
	g1 := router.Group{Addr: netip.MustParseAddr("100.65.0.7"), Port: 53, Proto: router.ProtoUDP}
	g2 := router.Group{Addr: netip.MustParseAddr("100.65.0.8"), Port: 53, Proto: router.ProtoUDP}
	right := mustRight(t, "100.65.0.0/24:*/udp")
	p1, p2, ep1, ep2 := l.twoProxies()
	t1 := l.echoTarget("t1", "100.64.1.1", right, g1, ep2)
	cl := l.edge("cl1", cert.RoleClient, netip.MustParseAddr("100.64.2.1"), nil, nil, ep1)
	if got, err := ask(t, cl, g1, "one", 15*time.Second); err != nil || got != "t1: one" {
		t.Fatalf("before the reload: %q, %v", got, err)
	}

	cfg := *t1.Config
	cfg.Groups = []config.Service{{Group: g2, Port: 5353, Weight: 1}}
	changes, err := t1.Reload(context.Background(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("target reloaded: %q", changes)
	if got, err := ask(t, cl, g2, "two", 10*time.Second); err != nil || got != "t1: two" {
		t.Fatalf("the group added at the reload: %q, %v", got, err)
	}
	waitFor(t, "g1 left at its JAP", 5*time.Second, func() bool { return len(p2.Router.Targets(g1)) == 0 })
	if gs := t1.Target.Groups(); len(gs) != 1 || gs[0].Group != g2 {
		t.Errorf("target's groups after the reload: %+v", gs)
	}

	bad := cfg
	bad.Keepalive *= 2
	bad.Groups = nil
	if _, err := t1.Reload(context.Background(), &bad); err == nil || !strings.Contains(err.Error(), "keepalive changed") {
		t.Errorf("a reload changing keepalive: %v, want a refusal naming keepalive", err)
	}
	if got, err := ask(t, cl, g2, "three", 5*time.Second); err != nil || got != "t1: three" {
		t.Fatalf("after a refused reload: %q, %v", got, err)
	}

	rl, err := cert.NewRevocationList(l.ca, l.key, 5, time.Now(), nil, []cert.Fingerprint{t1.Config.Cert.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	pc := *p1.Config
	pc.Revocation = rl
	changes, err = p1.Reload(&pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("proxy reloaded: %q", changes)
	waitFor(t, "t1 cut off at p2", 5*time.Second, func() bool { return p2.Overlay.RevocationSerial() == 5 && len(p2.Router.Targets(g2)) == 0 })
}

// TestCertExpiry: a target whose certificate expires is warned of (it
// expires within a day) and cut off at its expiry, at every proxy, without
// anyone's word.
func TestCertExpiry(t *testing.T) {
	l := newCALab(t)
	g := router.Group{Addr: netip.MustParseAddr("100.65.0.7"), Port: 53, Proto: router.ProtoUDP}
	right := mustRight(t, "100.65.0.7:53/udp")
	p1, ep1 := l.proxy("p1", 1)
	l.life = 4 * time.Second // whole seconds: 3 to 4 s from now
	t1 := l.edge("t1", cert.RoleTarget, netip.MustParseAddr("100.64.1.1"), []cert.GroupRight{right},
		[]config.Service{{Group: g, Port: 5353, Weight: 1}}, ep1)
	waitFor(t, "t1 joined", 10*time.Second, func() bool { return len(p1.Router.Targets(g)) == 1 })
	if !slices.ContainsFunc(l.events(overlay.EventCertExpiring), func(s string) bool { return strings.Contains(s, `"t1" expires at`) }) {
		t.Errorf("no warning of t1's expiry: %q", l.events(overlay.EventCertExpiring))
	}
	notAfter := t1.Config.Cert.NotAfter
	waitFor(t, "t1 cut off at its expiry", 10*time.Second, func() bool {
		return slices.ContainsFunc(l.events(overlay.EventEdgeRemoved), func(s string) bool { return strings.Contains(s, "t1 its certificate expired") })
	})
	if late := time.Since(notAfter); late < 0 || late > 2*time.Second {
		t.Errorf("cut off %v after its expiry, want within 2 s", late)
	}
	if len(p1.Router.Targets(g)) != 0 {
		t.Error("the expired target is still a target of its group")
	}
}

// TestCAAddressHeldElsewhere: a target live at one proxy keeps its address
// when another certificate for it, with another key, says hello to another
// proxy (which heard of the first from its proxy's claim); and the
// newcomer's joins there cannot evict the live target's.
func TestCAAddressHeldElsewhere(t *testing.T) {
	l := newCALab(t)
	l.stay = true
	g := router.Group{Addr: netip.MustParseAddr("100.65.0.7"), Port: 53, Proto: router.ProtoUDP}
	right := mustRight(t, "100.65.0.7:53/udp")
	_, p2, ep1, ep2 := l.twoProxies()
	l.echoTarget("t1", "100.64.1.1", right, g, ep2)
	waitFor(t, "t1 joined at p2", 10*time.Second, func() bool { return len(p2.Router.Targets(g)) == 1 })

	l.edge("t1b", cert.RoleTarget, netip.MustParseAddr("100.64.1.1"), []cert.GroupRight{right},
		[]config.Service{{Group: g, Port: 5353, Weight: 1}}, ep1)
	// Refused at once (p1 holds p2's claim), or, had p2's claim not
	// reached p1 yet, admitted and then given up when p2 answers p1's
	// claim with its older one.
	waitFor(t, "t1b refused at p1, or given up there", 10*time.Second, func() bool {
		return slices.ContainsFunc(l.events(overlay.EventNotAdmitted), func(s string) bool {
			return strings.Contains(s, "t1b") && strings.Contains(s, `held by edge "t1", which is live at proxy "p2"`)
		}) || slices.ContainsFunc(l.events(overlay.EventEdgeRemoved), func(s string) bool {
			return strings.HasPrefix(s, "p1 t1b ") && strings.Contains(s, `held by edge "t1" at proxy "p2", live before it`)
		})
	})
	cl := l.edge("cl1", cert.RoleClient, netip.MustParseAddr("100.64.2.1"), nil, nil, ep1)
	for i := range 3 {
		msg := fmt.Sprintf("t1? %d", i)
		if got, err := ask(t, cl, g, msg, 10*time.Second); err != nil || got != "t1: "+msg {
			t.Fatalf("answer %q (%v), want %q", got, err, "t1: "+msg)
		}
	}
	if n := len(p2.Router.Targets(g)); n != 1 {
		t.Errorf("p2 has %d targets of %v, want t1", n, g)
	}
}

// TestCAHome: an edge's prefix goes to its home, the first proxy of its
// file, even when another admits it first; and to another when the home
// never answers.
func TestCAHome(t *testing.T) {
	l := newCALab(t)
	l.stay = true
	_, _, ep1, ep2 := l.twoProxies()
	for i := range 4 {
		cl := l.edge(fmt.Sprintf("cl%d", i), cert.RoleClient, netip.AddrFrom4([4]byte{100, 64, 2, byte(i + 1)}), nil, nil, ep2, ep1)
		waitFor(t, "cl attached", 10*time.Second, func() bool { return cl.attacher() != nil && len(cl.attacher().Candidates()) == 2 })
		if cur := cl.attacher().Current(); cur != "p2" {
			t.Errorf("%s is attached to %s, not its home p2", cl.Name, cur)
		}
	}
	// A home that never answers: after homeGrace, p1 carries the prefix.
	start := time.Now()
	cl := l.edge("cl9", cert.RoleClient, netip.MustParseAddr("100.64.2.9"), nil, nil, silentProxy(t), ep1)
	waitFor(t, "cl9 attached", 10*time.Second, func() bool { return cl.attacher() != nil })
	if cur, el := cl.attacher().Current(), time.Since(start); cur != "p1" || el < homeGrace {
		t.Errorf("cl9 attached to %s after %v; want p1 after %v", cur, el, homeGrace)
	}
}
