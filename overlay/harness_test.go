package overlay

// The test harness: proxies (or bare health detectors) and edges as hosts
// of one overlaytest.Net on one overlaytest.Clock. Nothing runs until a
// test moves the clock; a run is the same for the same seed.

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

var (
	testGroup = router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP}
	testCtrl  = uint16(51821)
	// unitLink is the unit tests' link: one fixed delay, so that what a
	// test sends arrives in the order sent and well within a tick.
	unitLink = overlaytest.Link{Delay: time.Millisecond}
)

// testMember is proxy p<i> of cluster: overlay address 100.64.x.i,
// WireGuard endpoint 198.18.x.i:51820.
func testMember(i int, cluster string) Member {
	return Member{Name: fmt.Sprintf("p%d", i), Addr: netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), Cluster: cluster,
		PublicKey: [32]byte{0xee, byte(i), byte(i >> 8)}, Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 51820)}
}

func edgeAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{100, 66, byte(i >> 8), byte(i + 1)}) }

// edgePort is the port edges send control messages from.
const edgePort = 40000

type harness struct {
	t       testing.TB
	clk     *overlaytest.Clock
	net     *overlaytest.Net
	nodes   map[string]*node // proxies and health detectors, by name
	edges   map[int]*edge
	ingress map[[2]string]*overlaytest.Host // (proxy, anycast address) → where edges send
	events  []Event                         // every proxy's, in order
	changes map[string][]change             // bare health detectors' membership changes
}

// newHarness returns an empty harness whose links are link, its clock an
// hour on (zero times mean "never" in places).
func newHarness(t testing.TB, seed uint64, link overlaytest.Link) *harness {
	clk := overlaytest.NewClock()
	clk.Advance(time.Hour)
	h := &harness{t: t, clk: clk, net: overlaytest.NewNet(clk, seed), nodes: map[string]*node{},
		edges: map[int]*edge{}, ingress: map[[2]string]*overlaytest.Host{}, changes: map[string][]change{}}
	h.net.SetDefault(link)
	return h
}

// node is a proxy, or a bare health detector, and its host. It is the
// proxy's Transport.
type node struct {
	h     *harness
	m     Member
	host  *overlaytest.Host
	build func() ProxyConfig // a proxy's config, for a restart
	p     *Proxy
	hd    *health // a bare detector (health tests)
	peers []string
}

func (n *node) Send(src, dst netip.AddrPort, payload []byte) { n.h.net.Send(src, dst, payload) }
func (n *node) Forward(pkt []byte)                           {}
func (n *node) SendUnderlay(to netip.AddrPort, pkt []byte)   { n.h.net.Send(n.m.Endpoint, to, pkt) }
func (n *node) AddPeer(m Member, keepalive bool) error {
	n.peers = append(n.peers, m.Name)
	return nil
}

// health is the node's detector, bare or the proxy's.
func (n *node) health() *health {
	if n.p != nil {
		return n.p.health
	}
	return n.hd
}

// addNode adds the host of m, or brings it back up if it exists (a
// restart).
func (h *harness) addNode(m Member) *node {
	if n := h.nodes[m.Name]; n != nil {
		h.net.Up(m.Name)
		return n
	}
	addrs := []netip.Addr{m.Addr}
	if m.Addr6.IsValid() {
		addrs = append(addrs, m.Addr6)
	}
	if m.Endpoint.IsValid() {
		addrs = append(addrs, m.Endpoint.Addr())
	}
	n := &node{h: h, m: m, host: h.net.AddHost(m.Name, addrs...)}
	h.nodes[m.Name] = n
	n.host.Handle(func(src, dst netip.AddrPort, b []byte) {
		switch {
		case n.hd != nil:
			seq, msg, err := ParseMsg(b)
			if err != nil {
				h.t.Errorf("%s got an undecodable message: %v", m.Name, err)
				return
			}
			n.hd.handle(src.Addr(), seq, msg)
		case dst.Addr() == m.Endpoint.Addr():
			n.p.HandleUnderlay(src, b)
		default:
			n.p.HandleControl(src, dst, b)
		}
	})
	return n
}

// start starts proxy self, which is configured with members (a static
// mesh, or its seeds), and mod's changes. Its HealthTick runs every probe
// interval and its Tick every 100ms, while its host is up.
func (h *harness) start(self Member, members []Member, mod func(*ProxyConfig)) *Proxy {
	h.t.Helper()
	n := h.addNode(self)
	fresh := n.build == nil
	n.build = func() ProxyConfig {
		r, err := router.New(router.Config{Self: []netip.Addr{self.Addr}, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}, ControlPort: testCtrl})
		if err != nil {
			h.t.Fatal(err)
		}
		cfg := ProxyConfig{Self: self, Members: members, ControlPort: testCtrl, Router: r, Clock: h.clk, Transport: n,
			OnEvent: func(e Event) { h.events = append(h.events, e) }}
		if mod != nil {
			mod(&cfg)
		}
		return cfg
	}
	p, err := NewProxy(n.build())
	if err != nil {
		h.t.Fatal(err)
	}
	n.p = p
	if fresh {
		h.clk.Every(p.ProbeInterval(), func() {
			if n.host.IsUp() {
				n.p.HealthTick()
			}
		})
		h.clk.Every(100*time.Millisecond, func() {
			if n.host.IsUp() {
				n.p.Tick()
			}
		})
	}
	return p
}

// startMesh starts proxies 1..n of cluster c1 as a static mesh, each with
// mod's changes, and returns their names in order.
func (h *harness) startMesh(n int, mod func(*ProxyConfig)) []string {
	h.t.Helper()
	var all []Member
	var names []string
	for i := 1; i <= n; i++ {
		m := testMember(i, "c1")
		all, names = append(all, m), append(names, m.Name)
	}
	for _, m := range all {
		h.start(m, all, mod)
	}
	return names
}

// startHealth starts a bare health detector for self among members, at
// incarnation inc, ticked every probe interval while its host is up.
func (h *harness) startHealth(self Member, members []Member, inc uint32) *health {
	n := h.addNode(self)
	fresh := n.hd == nil
	from := netip.AddrPortFrom(self.Addr, testCtrl)
	n.hd = newHealth(HealthConfig{Incarnation: inc}, self, members, nil, h.clk.Now,
		func(to netip.Addr, seq uint32, m Msg) {
			h.net.Send(from, netip.AddrPortFrom(to, testCtrl), encode(h.t, wmsg{seq, m}))
		},
		func(c change) { h.changes[self.Name] = append(h.changes[self.Name], c) })
	if fresh {
		h.clk.Every(n.hd.cfg.ProbeInterval, func() {
			if n.host.IsUp() {
				n.hd.tick()
			}
		})
	}
	return n.hd
}

// kill takes a proxy (or detector) down: it neither sends nor receives,
// and what is in flight to it is lost.
func (h *harness) kill(name string) { h.net.Down(name) }

// restart brings a killed proxy back with its configuration and nothing
// it learned.
func (h *harness) restart(name string) *Proxy {
	h.t.Helper()
	n := h.node(name)
	p, err := NewProxy(n.build())
	if err != nil {
		h.t.Fatal(err)
	}
	n.p = p
	h.net.Up(name)
	return p
}

func (h *harness) node(name string) *node {
	h.t.Helper()
	n := h.nodes[name]
	if n == nil {
		h.t.Fatalf("no proxy %s", name)
	}
	return n
}

// p is the proxy called name.
func (h *harness) p(name string) *Proxy { return h.node(name).p }

// isolate cuts the named host off from every other host (Heal mends it).
func (h *harness) isolate(name string) {
	for _, o := range h.net.Hosts() {
		if o.Name() != name {
			h.net.Cut(name, o.Name())
		}
	}
}

// run moves the clock on by d.
func (h *harness) run(d time.Duration) { h.clk.Advance(d) }

// settle runs the clock until nothing is in flight: what was sent has
// arrived, and so has what that sent. Timers that fall due meanwhile run.
func (h *harness) settle() {
	h.t.Helper()
	idle := func() bool { s := h.net.Stats(); return s.Sent == s.Received+s.Dropped }
	if !h.clk.RunUntil(idle, time.Second) {
		h.t.Fatal("the network did not settle within a second")
	}
}

// until runs the clock until cond holds, at most limit, and returns how
// long that took; beyond limit the test fails, saying what.
func (h *harness) until(limit time.Duration, what string, cond func() bool) time.Duration {
	h.t.Helper()
	start := h.clk.Now()
	if !h.clk.RunUntil(cond, limit) {
		h.t.Fatalf("not within %v: %s", limit, what)
	}
	return time.Duration(h.clk.Now() - start)
}

// state is how viewer sees of.
func (h *harness) state(viewer, of string) MemberState {
	h.t.Helper()
	// Not from a snapshot: conditions polled after every event of a
	// run ask it for every pair.
	st, _, ok := h.node(viewer).health().state(of)
	if !ok {
		h.t.Fatalf("%s does not know %s", viewer, of)
	}
	return st
}

// allSee reports whether every host that is up but of sees of in state st.
func (h *harness) allSee(of string, st MemberState) func() bool {
	return func() bool {
		for _, o := range h.net.Hosts() {
			n := h.nodes[o.Name()]
			if n != nil && o.Name() != of && o.IsUp() && h.state(o.Name(), of) != st {
				return false
			}
		}
		return true
	}
}

// dropMsgs loses, as they are sent, the control messages between proxies
// for which drop is true (underlay datagrams and edges' messages pass); nil
// drops nothing.
func (h *harness) dropMsgs(drop func(src, dst netip.Addr, m Msg) bool) {
	if drop == nil {
		h.net.DropIf(nil)
		return
	}
	h.net.DropIf(func(p overlaytest.Packet) bool {
		if p.From == "" || h.nodes[p.From] == nil || p.Dst.Port() != testCtrl {
			return false
		}
		_, m, err := ParseMsg(p.Payload)
		return err == nil && drop(p.Src.Addr(), p.Dst.Addr(), m)
	})
}

// edge is a host playing an edge: it keeps what it receives.
type edge struct {
	host  *overlaytest.Host
	inbox []wmsg
}

// edge is edge i, added on first use at edgeAddr(i).
func (h *harness) edge(i int) *edge {
	if e := h.edges[i]; e != nil {
		return e
	}
	e := &edge{host: h.net.AddHost(fmt.Sprintf("e%d", i), edgeAddr(i))}
	e.host.Handle(func(src, dst netip.AddrPort, b []byte) {
		seq, m, err := ParseMsg(b)
		if err != nil {
			h.t.Errorf("edge %d got an undecodable message from %v: %v", i, src, err)
			return
		}
		e.inbox = append(e.inbox, wmsg{seq, m})
	})
	h.edges[i] = e
	return e
}

// edgeSend sends m from edge i to dst (a proxy's own address).
func (h *harness) edgeSend(i int, dst netip.Addr, m wmsg) {
	h.edge(i)
	h.net.Send(netip.AddrPortFrom(edgeAddr(i), edgePort), netip.AddrPortFrom(dst, testCtrl), encode(h.t, m))
}

// anycast sends m from edge i to the anycast address any, where emulated
// anycast delivers it at proxy at. The net has no anycast: the packet goes
// to a host standing for "any at at", which hands it to at with the
// anycast destination (if at is up).
func (h *harness) anycast(i int, at string, any netip.Addr, m wmsg) {
	h.edge(i)
	key := [2]string{at, any.String()}
	in := h.ingress[key]
	if in == nil {
		k := len(h.ingress) + 1
		in = h.net.AddHost(at+">"+any.String(), netip.AddrFrom4([4]byte{100, 127, byte(k >> 8), byte(k)}))
		n := h.node(at)
		in.Handle(func(src, dst netip.AddrPort, b []byte) {
			if n.host.IsUp() {
				n.p.HandleControl(src, netip.AddrPortFrom(any, dst.Port()), b)
			}
		})
		h.ingress[key] = in
	}
	h.net.Send(netip.AddrPortFrom(edgeAddr(i), edgePort), netip.AddrPortFrom(in.Addrs()[0], testCtrl), encode(h.t, m))
}

// answer sends m as edge i with send, runs until the edge gets a message
// of type want, and returns it (the inbox is emptied first).
func (h *harness) answer(i int, want Type, send func()) wmsg {
	h.t.Helper()
	e := h.edge(i)
	e.inbox = nil
	send()
	var got wmsg
	h.until(time.Second, fmt.Sprintf("edge %d gets a %v", i, want), func() bool {
		for _, w := range e.inbox {
			if w.m.Type() == want {
				got = w
				return true
			}
		}
		return false
	})
	return got
}

// The messages tests send, built here only: their types will change.

// wmsg is a message with the seq it travels with.
type wmsg struct {
	seq uint32
	m   Msg
}

func encode(t testing.TB, w wmsg) []byte {
	b, err := AppendMsg(nil, w.seq, w.m)
	if err != nil {
		t.Fatalf("unencodable %+v: %v", w.m, err)
	}
	return b
}

// edgeMsg is edge i's target t<i> joining (leaving, keeping alive) g, as
// its question number 1.
func edgeMsg(typ Type, i int, g router.Group) wmsg {
	switch typ {
	case TypeJoin:
		return wmsg{1, &Join{Group: g, Port: 8080, Name: fmt.Sprintf("t%d", i), Weight: 1, Epoch: 1}}
	case TypeLeave:
		return wmsg{1, &Leave{Group: g, Port: 8080}}
	case TypeKeepalive:
		return wmsg{1, &Keepalive{Group: g, Port: 8080}}
	}
	panic(fmt.Sprintf("edgeMsg: %v", typ))
}

// joinMsg is a join of target t<i> that states a policy and a keepalive
// interval, at join epoch 1.
func joinMsg(i int, g router.Group, pol router.Policy, ka time.Duration) wmsg {
	w := edgeMsg(TypeJoin, i, g)
	j := w.m.(*Join)
	j.Policy, j.Keepalive = pol, ka
	return w
}

// asSingles is m as the Fails and Alives it tells: a News is several
// (see health.newsOutLocked); any other message none.
func asSingles(m Msg) []Msg {
	switch m := m.(type) {
	case *Fail, *Alive:
		return []Msg{m}
	case *News:
		var out []Msg
		for _, it := range m.Items {
			if it.Dead {
				out = append(out, &Fail{Name: it.Name, Incarnation: it.Incarnation})
			} else {
				out = append(out, &Alive{Name: it.Name, Incarnation: it.Incarnation})
			}
		}
		return out
	}
	return nil
}

func failMsg(name string, inc uint32) wmsg {
	return wmsg{0, &Fail{Name: name, Incarnation: inc}}
}

func proxiesReqMsg(seq, digest uint32) wmsg {
	return wmsg{seq, &ProxiesReq{Digest: digest}}
}

func admitsMsg(name string, inc uint32, keys ...[32]byte) wmsg {
	return wmsg{0, &Admits{From: name, Incarnation: inc, Parts: 1, Keys: keys}}
}

// sendAs sends m from proxy from's control port to proxy to's, through the
// net.
func (h *harness) sendAs(from, to string, m wmsg) {
	h.net.Send(netip.AddrPortFrom(h.node(from).m.Addr, testCtrl), netip.AddrPortFrom(h.node(to).m.Addr, testCtrl), encode(h.t, m))
}

// setMember changes the record of a member health knows (a test's
// rewrite of history: a real record never changes).
func (h *health) setMember(m Member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := slices.Clone(h.ros.ms)
	ms[h.ros.byName[m.Name]] = m
	r := &roster{ms: ms, byName: h.ros.byName, byAddr: map[netip.Addr]int32{}}
	r.index()
	h.ros = r
	h.watchedOK = false
}

// memberNamed is health's record of the member called name.
func (h *health) memberNamed(name string) Member { return h.ros.ms[h.ros.byName[name]] }

// watchedNames names the members health watches.
func (h *health) watchedNames() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, i := range h.watchedLocked() {
		out = append(out, h.ros.ms[i].Name)
	}
	return out
}

// admitsOf is what p knows the member called name admits: its keys (nil
// if not known) and their incarnation, and when it last asked (0: not
// lately).
func (p *Proxy) admitsOf(name string) (keys map[[32]byte]bool, inc uint32, asked int64) {
	i := p.health.index(name)
	p.mem.mu.Lock()
	defer p.mem.mu.Unlock()
	t := &p.mem.admits
	asked, _ = t.askedAt(i)
	inc, ok := t.has(i)
	if !ok {
		return nil, 0, asked
	}
	keys = t.keys[i]
	if keys == nil {
		keys = map[[32]byte]bool{}
	}
	return keys, inc, asked
}

// live lists the members not known dead, self included, sorted by name.
func (h *health) live() []Member {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := []Member{}
	for _, i := range h.ros.order {
		if i == h.selfIdx {
			out = append(out, h.self)
		} else if h.liveAt(i) {
			out = append(out, h.ros.ms[i])
		}
	}
	return out
}
