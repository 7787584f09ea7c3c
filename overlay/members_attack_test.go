package overlay

// Attacks on admission: a captured hello replayed from a spoofed source,
// and a mesh-key holder that claims an admitted edge's address.

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// agree reports whether every proxy in ps knows exactly names and sees
// them all live.
func agree(ps []*Proxy, names []string) bool {
	for _, p := range ps {
		if !slices.Equal(knownNames(p), names) || !slices.Equal(p.Live(), names) {
			return false
		}
	}
	return true
}

// isUnderlay reports whether pkt is an underlay datagram.
func isUnderlay(pkt overlaytest.Packet) bool {
	return bytes.HasPrefix(pkt.Payload, []byte(UnderlayMagic))
}

// isMemberRecord reports whether pkt is a control message TypeMember.
func isMemberRecord(pkt overlaytest.Packet) bool {
	if pkt.Dst.Port() != testCtrl {
		return false
	}
	_, m, err := ParseMsg(pkt.Payload)
	_, ok := m.(*MemberRecord)
	return err == nil && ok
}

// TestReplayedHelloAdmitsNothing: an outsider captures the hello of a
// newcomer admitted through p1 and replays it 100 times to each of the 7
// proxies from a spoofed source. No proxy answers or floods anything for
// it (a hello is good for its seed, once), and a genuine newcomer still
// joins afterwards.
func TestReplayedHelloAdmitsNothing(t *testing.T) {
	h := newHarness(t, 1, unitLink)
	var ms []Member
	for i := 1; i <= 7; i++ {
		ms = append(ms, meshMember(fmt.Sprintf("p%d", i), i))
	}
	var ps []*Proxy
	for _, m := range ms {
		ps = append(ps, h.add(m, ms...))
	}
	h.run(3 * time.Second)
	rec := &overlaytest.Recorder{}
	h.net.Trace(rec.Record)

	// The genuine admission of n through p1.
	nm := meshMember("n", 8)
	ps = append(ps, h.add(nm, ms[0]))
	names := []string{"n", "p1", "p2", "p3", "p4", "p5", "p6", "p7"}
	h.until(30*time.Second, "every proxy knows n and sees it live", func() bool { return agree(ps, names) })
	h.settle()
	i := slices.IndexFunc(rec.Packets, func(pkt overlaytest.Packet) bool {
		return pkt.From == "n" && pkt.Dst == ms[0].Endpoint && isUnderlay(pkt)
	})
	if i < 0 {
		t.Fatal("no hello from n to p1 on the net")
	}
	hello := rec.Packets[i].Payload
	genuineWelcomes := rec.Count(func(pkt overlaytest.Packet) bool { return pkt.Dst == nm.Endpoint && isUnderlay(pkt) })
	genuineRecords := rec.Count(isMemberRecord)

	// The replays, from an address no host owns.
	rec.Packets = nil
	spoofed := netip.MustParseAddrPort("203.0.113.7:51820")
	for range 100 {
		for _, m := range ms {
			h.net.Send(spoofed, m.Endpoint, hello)
		}
	}
	h.settle()
	h.run(5 * time.Second) // digests included: a replay that changed a list would show
	welcomes, welcomeBytes := 0, 0
	for _, pkt := range rec.Packets {
		if pkt.Dst == spoofed {
			welcomes++
			welcomeBytes += len(pkt.Payload)
		}
	}
	records := rec.Count(isMemberRecord)
	t.Logf("one %d-byte hello replayed 100× to each of %d proxies: %d welcomes (%d bytes) to the spoofed source, %d MemberRecords; "+
		"the genuine admission: %d welcomes, %d MemberRecords", len(hello), len(ms), welcomes, welcomeBytes, records, genuineWelcomes, genuineRecords)
	if welcomes != 0 || records != 0 {
		t.Errorf("replays of a captured hello were answered: %d welcomes to %v and %d MemberRecords (the genuine admission took %d and %d)",
			welcomes, spoofed, records, genuineWelcomes, genuineRecords)
	}

	// A genuine newcomer still joins, through another seed, and all agree.
	mm := meshMember("m", 9)
	ps = append(ps, h.add(mm, ms[1]))
	names = []string{"m", "n", "p1", "p2", "p3", "p4", "p5", "p6", "p7"}
	h.until(30*time.Second, "every proxy knows m and sees it live", func() bool { return agree(ps, names) })
}

// rogue starts a proxy that holds the mesh key and claims the overlay
// address addr, seeded by seed. Its host owns only its WireGuard endpoint
// (addr is an edge's); what it sends through the tunnel leaves from addr,
// as WireGuard would let it once a proxy gave it addr's /32.
func (h *harness) rogue(name string, i int, addr netip.Addr, seed Member) *Proxy {
	h.t.Helper()
	m := meshMember(name, i)
	m.Addr = addr
	n := &node{h: h, m: m, host: h.net.AddHost(name, m.Endpoint.Addr())}
	h.nodes[name] = n
	r, err := router.New(router.Config{Self: []netip.Addr{addr}, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}, ControlPort: testCtrl})
	if err != nil {
		h.t.Fatal(err)
	}
	p, err := NewProxy(ProxyConfig{Self: m, Members: []Member{m, seed}, MeshKey: testMeshKey, ControlPort: testCtrl,
		Router: r, Clock: h.clk, Transport: n, OnEvent: func(e Event) { h.events = append(h.events, e) }})
	if err != nil {
		h.t.Fatal(err)
	}
	n.p = p
	n.host.Handle(func(src, dst netip.AddrPort, b []byte) { p.HandleUnderlay(src, b) })
	h.clk.Every(100*time.Millisecond, p.Tick)
	return p
}

// refusals are the reasons of the refusals at proxy about name.
func (h *harness) refusals(proxy, name string) []string {
	var out []string
	for _, e := range h.events {
		if e.Proxy == proxy && e.Kind == EventRefuse && e.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

// joins reports whether edge i's target may join testGroup at jap: the
// JAP acknowledges it within a second.
func (h *harness) joins(jap *Proxy, i int) bool {
	e := h.edge(i)
	e.inbox = nil
	h.anycast(i, jap.cfg.Self.Name, testGroup.Addr, edgeMsg(TypeJoin, i, testGroup))
	h.run(time.Second)
	for _, w := range e.inbox {
		if a, ok := w.m.(*JoinAck); ok {
			return a.Status == StatusOK
		}
	}
	return false
}

// TestProxyMayNotTakeAnEdgesAddress: p1 and p2 admit edges 0 and 1, p3
// none. A mesh-key holder claiming edge 0's address says hello to p1: p1
// refuses it and says why. Another, claiming edge 1's, says hello to p3,
// which knows no such edge and admits it; p1 and p2, told by p3's flood,
// refuse to add it, now and at every later sync, and say so once. Both
// edges still join at p1 and p2.
func TestProxyMayNotTakeAnEdgesAddress(t *testing.T) {
	h := newHarness(t, 1, unitLink)
	p1, p2, p3 := meshMember("p1", 1), meshMember("p2", 2), meshMember("p3", 3)
	pol := &EdgePolicy{Name: "t", Groups: []router.Group{testGroup}}
	admit := func(c *ProxyConfig) {
		c.MeshKey = testMeshKey
		c.Edges = map[netip.Addr]*EdgePolicy{edgeAddr(0): pol, edgeAddr(1): pol}
	}
	all := []Member{p1, p2, p3}
	a := h.start(p1, all, admit)
	b := h.start(p2, all, admit)
	h.add(p3, all...)
	h.run(3 * time.Second)
	h.edge(0)
	h.edge(1)

	h.rogue("r0", 20, edgeAddr(0), p1)
	h.rogue("r1", 21, edgeAddr(1), p3)
	h.run(5 * time.Second)
	h.settle()

	// r0 was refused at its seed, so nobody heard of it; r1 was admitted
	// by p3 only.
	for _, p := range []*Proxy{a, b, h.p("p3")} {
		if slices.Contains(knownNames(p), "r0") || (p != h.p("p3") && slices.Contains(knownNames(p), "r1")) {
			t.Errorf("%s added a rogue that claims an edge's address: it knows %v", p.cfg.Self.Name, knownNames(p))
		}
	}
	for _, c := range []struct {
		p     *Proxy
		rogue string
		addr  netip.Addr
		how   string
	}{
		{a, "r0", edgeAddr(0), "at the seed"},
		{a, "r1", edgeAddr(1), "from a flood"},
		{b, "r1", edgeAddr(1), "from a flood"},
	} {
		name := c.p.cfg.Self.Name
		ref := h.refusals(name, c.rogue)
		t.Logf("%s on %s (%s), which claims edge %v: knows %v, %d refusals, the first %q", name, c.rogue, c.how, c.addr, knownNames(c.p), len(ref), ref[:min(1, len(ref))])
		if !slices.ContainsFunc(ref, func(r string) bool { return strings.Contains(r, c.addr.String()) && strings.Contains(r, "edge") }) {
			t.Errorf("%s gave no reason naming edge address %v for refusing %s: %q", name, c.addr, c.rogue, ref)
		}
	}
	// p3 keeps sending r1's record at every digest that differs: it is
	// refused each time, but told once.
	h.run(time.Minute)
	for _, p := range []string{"p1", "p2"} {
		if ref := h.refusals(p, "r1"); len(ref) != 1 {
			t.Errorf("%s told of refusing r1 %d times in a minute, want once: %q", p, len(ref), ref)
		}
	}
	if slices.Contains(knownNames(a), "r1") || slices.Contains(knownNames(b), "r1") {
		t.Errorf("r1 was added in the end: p1 knows %v, p2 %v", knownNames(a), knownNames(b))
	}
	for _, jap := range []*Proxy{a, b} {
		for i := range 2 {
			if !h.joins(jap, i) {
				t.Errorf("edge %d cannot join at %s once a rogue claimed its address", i, jap.cfg.Self.Name)
			}
		}
	}
}

// TestWelcomeMustAnswerAHello: a refusal that answers no hello the
// newcomer sent (a replay of an old one, or made up by a key holder) does
// not stop it from asking that seed; one that echoes its last hello's
// nonce does.
func TestWelcomeMustAnswerAHello(t *testing.T) {
	h := newHarness(t, 1, unitLink)
	p1, nm := meshMember("p1", 1), meshMember("n", 8)
	h.add(p1)
	// p1 hears n's hellos but its answers are lost.
	h.net.DropIf(func(pkt overlaytest.Packet) bool { return pkt.Src == p1.Endpoint && isUnderlay(pkt) })
	n := h.add(nm, p1)
	h.run(3 * time.Second)
	refuse := func(nonce uint64) {
		w := welcomeMsg{nonce: nonce, name: "p1", reason: "the name \"n\" belongs to another WireGuard key"}
		h.net.Send(netip.MustParseAddrPort("203.0.113.7:51820"), nm.Endpoint,
			sealUnderlay(testMeshKey, kindWelcome, h.clk.Wall(), appendWelcome(nil, w)))
		h.settle()
	}
	refused := func() bool {
		n.mem.mu.Lock()
		defer n.mem.mu.Unlock()
		return n.mem.admission.refused["p1"]
	}
	refuse(12345)
	if refused() {
		t.Fatal("a refusal answering no hello of n's made it stop asking p1")
	}
	n.mem.mu.Lock()
	last := n.mem.admission.asked[len(n.mem.admission.asked)-1].nonce
	n.mem.mu.Unlock()
	refuse(last)
	if !refused() {
		t.Fatal("a refusal answering n's last hello was not taken: the test cannot fail")
	}
}
