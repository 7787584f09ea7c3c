package overlay

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

func TestShouldReport(t *testing.T) {
	for _, c := range []struct {
		last, n int
		pct     float64
		want    bool
	}{
		{0, 0, 25, false},
		{0, 1, 25, true},   // 0→n
		{0, 100, 25, true}, // 0→n
		{1, 0, 25, true},   // n→0
		{40, 0, 25, true},  // n→0, however far
		{1, 0, 1000, true}, // n→0 whatever the threshold
		{0, 1, 1000, true}, // 0→n whatever the threshold
		{1, 1, 25, false},
		{1, 2, 25, true}, // +100 %
		{3, 4, 25, true}, // +33 %
		{4, 5, 25, false},
		{4, 3, 25, false}, // exactly 25 %: not more than the threshold
		{4, 6, 25, true},
		{4, 2, 25, true},
		{8, 10, 25, false},
		{8, 11, 25, true},
		{100, 125, 25, false},
		{100, 126, 25, true},
		{100, 74, 25, true},
		{100, 75, 25, false},
		{10, 11, 0, true}, // exact reporting
		{10, 10, 0, false},
		{10, 14, 50, false},
		{10, 16, 50, true},
	} {
		if got := shouldReport(c.last, c.n, c.pct); got != c.want {
			t.Errorf("shouldReport(last %d, now %d, %g%%) = %v, want %v", c.last, c.n, c.pct, got, c.want)
		}
	}
}

// proxyNet runs full proxy control planes over an in-memory network with a
// fake clock: every packet a proxy sends to another proxy's address is
// handed to that proxy; packets to edges are kept in toEdges.
type proxyNet struct {
	t       *testing.T
	mu      sync.Mutex
	now     int64
	proxies map[netip.Addr]*Proxy
	members []Member
	queue   [][]byte
	toEdges [][]byte // packets for addresses that are no proxy's
}

var (
	testGroup = router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP}
	testCtrl  = uint16(51821)
)

func edgeAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{100, 66, 0, byte(i + 1)}) }

func newProxyNet(t *testing.T, n, edges int, mod func(*ProxyConfig)) *proxyNet {
	pn := &proxyNet{t: t, now: int64(time.Hour), proxies: map[netip.Addr]*Proxy{}}
	for i := range n {
		pn.members = append(pn.members, Member{Name: fmt.Sprintf("p%d", i+1), Addr: netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}), Cluster: "c1",
			PublicKey: [32]byte{0xee, byte(i + 1)}, Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)}), 51820)})
	}
	pol := &EdgePolicy{Name: "t", Groups: []router.Group{testGroup}}
	policies := map[netip.Addr]*EdgePolicy{}
	for i := range edges {
		policies[edgeAddr(i)] = pol
	}
	for _, m := range pn.members {
		r, err := router.New(router.Config{Self: []netip.Addr{m.Addr}, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}, ControlPort: testCtrl})
		if err != nil {
			t.Fatal(err)
		}
		cfg := ProxyConfig{Self: m, Members: pn.members, Edges: policies, ControlPort: testCtrl, Router: r,
			Transport: testTransport{send: pn.send}, Clock: testClock(pn.clock)}
		if mod != nil {
			mod(&cfg)
		}
		p, err := NewProxy(cfg)
		if err != nil {
			t.Fatal(err)
		}
		pn.proxies[m.Addr] = p
	}
	return pn
}

func (pn *proxyNet) clock() int64 {
	pn.mu.Lock()
	defer pn.mu.Unlock()
	return pn.now
}

func (pn *proxyNet) advance(d time.Duration) {
	pn.mu.Lock()
	pn.now += int64(d)
	pn.mu.Unlock()
}

func (pn *proxyNet) send(pkt []byte) error {
	pn.mu.Lock()
	pn.queue = append(pn.queue, append([]byte(nil), pkt...))
	pn.mu.Unlock()
	return nil
}

// deliver hands queued IPv4/UDP packets to the proxies they are for.
func (pn *proxyNet) deliver() {
	for {
		pn.mu.Lock()
		if len(pn.queue) == 0 {
			pn.mu.Unlock()
			return
		}
		pkt := pn.queue[0]
		pn.queue = pn.queue[1:]
		pn.mu.Unlock()
		ihl := int(pkt[0]&0xf) * 4
		src := netip.AddrFrom4([4]byte(pkt[12:16]))
		dst := netip.AddrFrom4([4]byte(pkt[16:20]))
		sp, dp := binary.BigEndian.Uint16(pkt[ihl:]), binary.BigEndian.Uint16(pkt[ihl+2:])
		if p := pn.proxies[dst]; p != nil {
			p.HandleControl(netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp), pkt[ihl+8:])
		} else {
			pn.mu.Lock()
			pn.toEdges = append(pn.toEdges, pkt)
			pn.mu.Unlock()
		}
	}
}

func (pn *proxyNet) p(name string) *Proxy {
	for _, m := range pn.members {
		if m.Name == name {
			return pn.proxies[m.Addr]
		}
	}
	pn.t.Fatalf("no proxy %s", name)
	return nil
}

// edge sends a join or leave of target i to the group's anycast address,
// as emulated anycast would deliver it to jap.
func (pn *proxyNet) edge(jap *Proxy, typ Type, i int) {
	pn.t.Helper()
	m := Message{Type: typ, Seq: 1, Group: testGroup, Port: 8080, Name: fmt.Sprintf("t%d", i), Weight: 1}
	b, err := m.MarshalBinary()
	if err != nil {
		pn.t.Fatal(err)
	}
	jap.HandleControl(netip.AddrPortFrom(edgeAddr(i), 40000), netip.AddrPortFrom(testGroup.Addr, testCtrl), b)
	pn.deliver()
}

// registers counts the registrations the group's RAPs received.
func (pn *proxyNet) registers(jap *Proxy) map[string]uint64 {
	out := map[string]uint64{}
	for _, name := range jap.RAPs(testGroup) {
		out[name] = pn.p(name).Stats().Registers
	}
	return out
}

// rapCount is the count of jap's targets the group's RAP rap knows.
func rapCount(rap, jap *Proxy, g router.Group) int {
	for _, j := range rap.RAPTable()[g] {
		if j.Addr == jap.cfg.Self.Addr {
			return j.Targets
		}
	}
	return 0
}

func TestTwoTierMembership(t *testing.T) {
	const targets = 10
	pn := newProxyNet(t, 4, targets, nil)
	// A JAP that is not a RAP of the group, so every registration crosses
	// the network.
	var jap *Proxy
	for _, m := range pn.members {
		if p := pn.proxies[m.Addr]; !contains(p.RAPs(testGroup), m.Name) && !contains(p.RAPs(router.EchoGroup(testGroup.Addr)), m.Name) {
			jap = p
			break
		}
	}
	if jap == nil {
		t.Skip("every proxy is a RAP of the group or its echo group")
	}
	raps := jap.RAPs(testGroup)
	before := pn.registers(jap)
	for i := range targets {
		pn.edge(jap, TypeJoin, i)
		pn.advance(100 * time.Millisecond)
		for _, name := range raps {
			// What the RAP knows is what the rule lets it know: the JAP
			// would not report the count it has now.
			if got := rapCount(pn.p(name), jap, testGroup); shouldReport(got, i+1, DefaultInaccuracy) {
				t.Fatalf("after %d joins RAP %s counts %d: beyond %d%%", i+1, name, got, DefaultInaccuracy)
			}
		}
	}
	st := jap.Stats()
	t.Logf("%d joins: JAP sent %d registrations (group and echo, %d RAPs each), suppressed %d count changes",
		targets, st.RegistersSent, len(raps), st.RegistersSuppressed)
	// The same joins with every change reported, for comparison.
	exact := newProxyNet(t, 4, targets, func(c *ProxyConfig) { c.Inaccuracy = -1 })
	ejap := exact.p(jap.cfg.Self.Name)
	ebefore := exact.registers(ejap)
	for i := range targets {
		exact.edge(ejap, TypeJoin, i)
	}
	eafter := exact.registers(ejap)
	for name, n := range pn.registers(jap) {
		got, base := n-before[name], eafter[name]-ebefore[name]
		// Registers counts the group's and, when this RAP is one of the
		// echo group too, its registrations.
		t.Logf("RAP %s received %d registrations for %d joins (%d when every change is reported)", name, got, targets, base)
		if got*10 > base*6 {
			t.Errorf("RAP %s received %d registrations for %d joins, %d without the threshold: it saves too little", name, got, targets, base)
		}
		count := rapCount(pn.p(name), jap, testGroup)
		if shouldReport(count, targets, DefaultInaccuracy) {
			t.Errorf("RAP %s counts %d of %d targets: beyond %d%%", name, count, targets, DefaultInaccuracy)
		}
		t.Logf("RAP %s counts %d of %d targets", name, count, targets)
	}
	if st.RegistersSuppressed == 0 {
		t.Error("no count change was suppressed")
	}

	// The slow refresh brings the count up to date.
	pn.advance(jap.cfg.RegisterTTL/3 + time.Second)
	jap.Tick()
	pn.deliver()
	for _, name := range raps {
		if got := rapCount(pn.p(name), jap, testGroup); got != targets {
			t.Errorf("after the refresh RAP %s counts %d, want %d", name, got, targets)
		}
	}

	// Leaves within the threshold are not told; the last one (n→0) is, at once.
	suppressed := jap.Stats().RegistersSuppressed
	for i := range targets - 1 {
		pn.edge(jap, TypeLeave, i)
		for _, name := range raps {
			if got := rapCount(pn.p(name), jap, testGroup); shouldReport(got, targets-1-i, DefaultInaccuracy) {
				t.Fatalf("with %d targets left RAP %s counts %d", targets-1-i, name, got)
			}
		}
	}
	if jap.Stats().RegistersSuppressed == suppressed {
		t.Error("no leave was suppressed")
	}
	b := pn.registers(jap)
	pn.edge(jap, TypeLeave, targets-1)
	for _, name := range raps {
		rap := pn.p(name)
		if n := rap.Stats().Registers - b[name]; n == 0 {
			t.Errorf("RAP %s was not told of the last leave", name)
		}
		if _, ok := rap.RAPTable()[testGroup]; ok {
			t.Errorf("RAP %s still lists JAPs of %s after the last leave: %v", name, testGroup, rap.RAPTable()[testGroup])
		}
		if _, ok := rap.RAPTable()[router.EchoGroup(testGroup.Addr)]; ok && contains(jap.RAPs(router.EchoGroup(testGroup.Addr)), name) {
			t.Errorf("RAP %s still lists the echo group after the last leave", name)
		}
	}
	for _, name := range jap.RAPs(router.EchoGroup(testGroup.Addr)) {
		if _, ok := pn.p(name).RAPTable()[router.EchoGroup(testGroup.Addr)]; ok {
			t.Errorf("echo RAP %s still lists JAPs after the last leave", name)
		}
	}
}

// TestTwoTierMembershipRAPChange: a RAP that takes over a group learns its
// count at once, whatever the threshold.
func TestTwoTierMembershipRAPChange(t *testing.T) {
	pn := newProxyNet(t, 4, 6, nil)
	jap := pn.p("p1")
	for i := range 6 {
		pn.edge(jap, TypeJoin, i)
	}
	raps := jap.RAPs(testGroup)
	// Kill a RAP other than the JAP: the JAP learns it through health
	// monitoring; here, hand it the change directly.
	var victim Member
	for _, m := range pn.members {
		if m.Name != jap.cfg.Self.Name && contains(raps, m.Name) {
			victim = m
			break
		}
	}
	if victim.Name == "" {
		t.Skip("the JAP is the only RAP")
	}
	delete(pn.proxies, victim.Addr)
	for _, p := range pn.proxies {
		p.health.mu.Lock()
		p.health.members[victim.Name].state = StateDead
		p.health.mu.Unlock()
		p.ctl.Lock()
		p.membershipChanged(change{dead: []Member{victim}})
		p.flush()
		p.ctl.Unlock()
	}
	pn.deliver()
	newRAPs := jap.RAPs(testGroup)
	if contains(newRAPs, victim.Name) {
		t.Fatalf("dead %s still a RAP: %v", victim.Name, newRAPs)
	}
	for _, name := range newRAPs {
		if got := rapCount(pn.p(name), jap, testGroup); got != 6 {
			t.Errorf("RAP %s counts %d after the RAP change, want 6", name, got)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// nonRAP is a proxy that is no RAP of testGroup: its registrations cross
// the network.
func (pn *proxyNet) nonRAP() *Proxy {
	for _, m := range pn.members {
		if p := pn.proxies[m.Addr]; !contains(p.RAPs(testGroup), m.Name) {
			return p
		}
	}
	pn.t.Fatal("every proxy is a RAP of the test group")
	return nil
}

// TestLostWithdrawalHealsAtNoTarget: when a JAP's withdrawal from a
// group's RAPs is lost, the first flow an IAP sends it for the group (the
// RAPs still list it) makes it withdraw again, besides telling the IAP.
func TestLostWithdrawalHealsAtNoTarget(t *testing.T) {
	pn := newProxyNet(t, 4, 1, nil)
	jap := pn.nonRAP()
	pn.edge(jap, TypeJoin, 0)
	rap := pn.p(jap.RAPs(testGroup)[0])
	if n := rapCount(rap, jap, testGroup); n != 1 {
		t.Fatalf("RAP counts %d targets at the JAP, want 1", n)
	}
	// The target leaves; the withdrawal is lost on the way.
	m := Message{Type: TypeLeave, Seq: 2, Group: testGroup, Port: 8080}
	b, _ := m.MarshalBinary()
	jap.HandleControl(netip.AddrPortFrom(edgeAddr(0), 40000), netip.AddrPortFrom(testGroup.Addr, testCtrl), b)
	pn.mu.Lock()
	pn.queue = nil
	pn.mu.Unlock()
	if n := rapCount(rap, jap, testGroup); n != 1 {
		t.Fatalf("RAP counts %d after the lost withdrawal, want the stale 1", n)
	}
	iap := pn.p(rap.cfg.Self.Name)
	jap.NoTarget(iap.cfg.Self.Addr, testGroup)
	pn.deliver()
	if n := rapCount(rap, jap, testGroup); n != 0 {
		t.Errorf("RAP still counts %d targets at the JAP after it dropped a flow for lack of one", n)
	}
	// A JAP that has a target again does not withdraw.
	pn.edge(jap, TypeJoin, 0)
	pn.advance(time.Second)
	jap.NoTarget(iap.cfg.Self.Addr, testGroup)
	pn.deliver()
	if n := rapCount(rap, jap, testGroup); n != 1 {
		t.Errorf("RAP counts %d after a NoTarget with a target joined, want 1", n)
	}
}

// TestRefutedJAPRegistersAgain: a JAP falsely declared dead loses its
// entries at the group's RAPs; when it refutes, it registers again at once
// (it saw no member change, so nothing else would make it).
func TestRefutedJAPRegistersAgain(t *testing.T) {
	pn := newProxyNet(t, 4, 1, nil)
	jap := pn.nonRAP()
	pn.edge(jap, TypeJoin, 0)
	rap := pn.p(jap.RAPs(testGroup)[0])
	var other *Proxy
	for _, p := range pn.proxies {
		if p != jap && p != rap {
			other = p
		}
	}
	send := func(from, to *Proxy, m Message) {
		b, _ := m.MarshalBinary()
		to.HandleControl(netip.AddrPortFrom(from.cfg.Self.Addr, testCtrl), netip.AddrPortFrom(to.cfg.Self.Addr, testCtrl), b)
		pn.deliver()
	}
	inc := jap.health.incarnation()
	send(other, rap, Message{Type: TypeFail, Name: jap.cfg.Self.Name, Incarnation: inc})
	if n := rapCount(rap, jap, testGroup); n != 0 {
		t.Fatalf("RAP counts %d at a JAP it holds dead, want 0", n)
	}
	// The JAP hears of it (as a probe's answer would tell it) and refutes.
	send(rap, jap, Message{Type: TypeFail, Name: jap.cfg.Self.Name, Incarnation: inc})
	if st, _, _ := rap.health.state(jap.cfg.Self.Name); st == StateDead {
		t.Fatal("the refutation did not reach the RAP")
	}
	if n := rapCount(rap, jap, testGroup); n != 1 {
		t.Errorf("RAP counts %d at the JAP after it refuted, want 1", n)
	}
}

// testTransport adapts the tests' packet queues to a Transport.
type testTransport struct {
	send     func(pkt []byte) error // complete IP packets
	underlay func(to netip.AddrPort, pkt []byte)
	addPeer  func(m Member, keepalive bool) error
}

func (t testTransport) Send(src, dst netip.AddrPort, payload []byte) {
	buf := make([]byte, 60+8+len(payload))
	n, err := router.BuildUDP(buf, src, dst, payload)
	if err != nil {
		panic(err)
	}
	t.send(buf[:n])
}

func (t testTransport) Forward(pkt []byte) { t.send(pkt) }

func (t testTransport) SendUnderlay(to netip.AddrPort, pkt []byte) {
	if t.underlay != nil {
		t.underlay(to, pkt)
	}
}

func (t testTransport) AddPeer(m Member, keepalive bool) error {
	if t.addPeer != nil {
		return t.addPeer(m, keepalive)
	}
	return nil
}

// testClock is a fake monotonic clock; its wall clock starts in 2026.
type testClock func() int64

func (c testClock) Now() int64      { return c() }
func (c testClock) Wall() time.Time { return time.Unix(1_780_000_000, 0).Add(time.Duration(c())) }
