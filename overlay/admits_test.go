package overlay

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/pias-net/pias/router"
)

func edgeKey(i int) [32]byte { return [32]byte{0xed, byte(i), byte(i >> 8)} }

// askProxies sends edge i's TypeProxiesReq to p and returns the answer, if
// p sent one.
func (pn *proxyNet) askProxies(p *Proxy, i int, digest uint32) (*Message, bool) {
	pn.t.Helper()
	req := Message{Type: TypeProxiesReq, Seq: 77, Incarnation: digest}
	b, err := req.MarshalBinary()
	if err != nil {
		pn.t.Fatal(err)
	}
	pn.mu.Lock()
	pn.toEdges = nil
	pn.mu.Unlock()
	p.HandleControl(netip.AddrPortFrom(edgeAddr(i), 40000), netip.AddrPortFrom(p.cfg.Self.Addr, testCtrl), b)
	pn.deliver()
	pn.mu.Lock()
	defer pn.mu.Unlock()
	for _, pkt := range pn.toEdges {
		ihl := int(pkt[0]&0xf) * 4
		if netip.AddrFrom4([4]byte(pkt[16:20])) != edgeAddr(i) || binary.BigEndian.Uint16(pkt[ihl+2:]) != 40000 {
			continue
		}
		var m Message
		if err := m.UnmarshalBinary(pkt[ihl+8:]); err != nil {
			pn.t.Fatalf("answer: %v", err)
		}
		if m.Type != TypeProxies || m.Seq != req.Seq {
			pn.t.Fatalf("answer %v seq %d, want proxies seq %d", m.Type, m.Seq, req.Seq)
		}
		return &m, true
	}
	return nil, false
}

func peerNames(ms []Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

// TestEdgeLearnsAdmittingProxies: proxies learn which edges every other
// proxy admits (one list in several parts, too) and tell an edge exactly
// the live proxies that would admit it, itself first; only a proxy itself
// can say what it admits.
func TestEdgeLearnsAdmittingProxies(t *testing.T) {
	// p1 admits edges 0..1, p2 edges 0 and 2..41 (two parts), p3 edge 1,
	// p4 edge 0.
	admits := map[string][]int{"p1": {0, 1}, "p2": {0}, "p3": {1}, "p4": {0}}
	for i := 2; i < 42; i++ {
		admits["p2"] = append(admits["p2"], i)
	}
	pn := newProxyNet(t, 4, 0, func(c *ProxyConfig) {
		c.Edges = map[netip.Addr]*EdgePolicy{}
		for _, i := range admits[c.Self.Name] {
			c.Edges[edgeAddr(i)] = &EdgePolicy{Name: "e", PublicKey: edgeKey(i), Groups: []router.Group{testGroup}}
		}
		if c.Self.Name == "p4" {
			c.Self.Cluster = "c2" // the others are in c1
		}
	})
	// The members' records say p4 is in c2 too.
	for _, p := range pn.proxies {
		if p.cfg.Self.Name == "p4" {
			continue
		}
		m := p.mem.table().byName["p4"]
		m.Cluster = "c2"
		p.mem.put(m)
		p.health.mu.Lock()
		p.health.members["p4"].Cluster = "c2"
		p.health.mu.Unlock()
	}
	p1 := pn.p("p1")
	tick := func() {
		for _, p := range pn.proxies {
			p.Tick()
		}
		pn.deliver()
	}
	tick()

	want := func(edge int, at *Proxy, names ...string) uint32 {
		t.Helper()
		ans, ok := pn.askProxies(at, edge, 0)
		if !ok {
			t.Fatalf("edge %d: %s did not answer", edge, at.cfg.Self.Name)
		}
		if got := peerNames(ans.Peers); !slices.Equal(got, names) {
			t.Errorf("edge %d asks %s: %v, want %v", edge, at.cfg.Self.Name, got, names)
		}
		if ans.Incarnation == 0 {
			t.Errorf("edge %d: digest 0", edge)
		}
		return ans.Incarnation
	}
	// Its own cluster (c1) before p4's c2.
	d := want(0, p1, "p1", "p2", "p4")
	want(1, p1, "p1", "p3")
	want(41, pn.p("p2"), "p2")
	// A list in two parts arrived whole: p1 tells edge 0 about p2 because
	// of the first part; p3 admits no edge 41 but knows p2 does.
	if got := p1.mem.admits["p2"]; got == nil || len(got.keys) != 41 {
		t.Fatalf("p1 has %v of p2's 41 keys", got)
	}
	// A proxy that does not admit an edge does not answer it.
	if _, ok := pn.askProxies(pn.p("p3"), 0, 0); ok {
		t.Errorf("p3 answered edge 0, which it does not admit")
	}
	// The same list again is only its digest.
	if ans, ok := pn.askProxies(p1, 0, d); !ok || len(ans.Peers) != 0 || ans.Incarnation != d {
		t.Errorf("asked with the current digest: %+v", ans)
	}

	// p3 cannot speak for p2.
	forged := Message{Type: TypeAdmits, Name: "p2", Incarnation: 1 << 31, Parts: 1, Keys: [][32]byte{edgeKey(1)}}
	b, _ := forged.MarshalBinary()
	p1.HandleControl(netip.AddrPortFrom(pn.p("p3").cfg.Self.Addr, testCtrl), netip.AddrPortFrom(p1.cfg.Self.Addr, testCtrl), b)
	want(1, p1, "p1", "p3")

	// A dead proxy is not told; the list (and digest) change.
	p1.health.mu.Lock()
	p1.health.members["p2"].state = StateDead
	p1.health.mu.Unlock()
	if d2 := want(0, p1, "p1", "p4"); d2 == d {
		t.Errorf("digest %d unchanged after p2 died", d)
	}

	// A restarted p4 (a new incarnation) is asked again, once.
	p4 := pn.p("p4")
	p4.health.mu.Lock()
	p4.health.inc += 5
	inc := p4.health.inc
	p4.health.mu.Unlock()
	p1.health.mu.Lock()
	p1.health.members["p4"].inc = inc
	p1.health.mu.Unlock()
	pn.advance(admitsRetry)
	tick()
	if s := p1.mem.admits["p4"]; s == nil || s.inc != inc || !s.keys[edgeKey(0)] {
		t.Fatalf("p1 has not p4's list of incarnation %d: %+v", inc, s)
	}
	asked := p1.mem.admits["p4"].askedAt
	pn.advance(2 * admitsRetry)
	tick()
	if p1.mem.admits["p4"].askedAt != asked {
		t.Errorf("p1 asked p4 again with its list current")
	}

	// A late answer from p4's previous incarnation is not taken.
	p1.forgetAdmits([]Member{{Name: "p4"}})
	late := Message{Type: TypeAdmits, Name: "p4", Incarnation: inc - 5, Parts: 1, Keys: [][32]byte{edgeKey(7)}}
	b, _ = late.MarshalBinary()
	p1.HandleControl(netip.AddrPortFrom(p4.cfg.Self.Addr, testCtrl), netip.AddrPortFrom(p1.cfg.Self.Addr, testCtrl), b)
	if s := p1.mem.admits["p4"]; s != nil && s.keys != nil {
		t.Errorf("p1 took p4's list of an older incarnation: %+v", s)
	}
}
