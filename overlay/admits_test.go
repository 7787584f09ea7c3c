package overlay

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

func edgeKey(i int) [32]byte { return [32]byte{0xed, byte(i), byte(i >> 8)} }

// askProxies sends edge i's TypeProxiesReq to p and returns the answer, if
// p sent one.
func (h *harness) askProxies(p *Proxy, i int, digest uint32) (*Proxies, bool) {
	h.t.Helper()
	req := proxiesReqMsg(77, digest)
	e := h.edge(i)
	e.inbox = nil
	h.edgeSend(i, p.cfg.Self.Addr, req)
	h.settle()
	for _, w := range e.inbox {
		m, ok := w.m.(*Proxies)
		if !ok || w.seq != req.seq {
			h.t.Fatalf("answer %v seq %d, want proxies seq %d", w.m.Type(), w.seq, req.seq)
		}
		return m, true
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
	for _, p := range pn.proxies() {
		if p.cfg.Self.Name == "p4" {
			continue
		}
		m := p.mem.table().byName["p4"]
		m.Cluster = "c2"
		p.mem.put(m)
		p.health.setMember(m)
	}
	p1 := pn.p("p1")
	pn.run(200 * time.Millisecond) // the proxies ask each other what they admit

	want := func(edge int, at *Proxy, names ...string) uint32 {
		t.Helper()
		ans, ok := pn.askProxies(at, edge, 0)
		if !ok {
			t.Fatalf("edge %d: %s did not answer", edge, at.cfg.Self.Name)
		}
		if got := peerNames(ans.Peers); !slices.Equal(got, names) {
			t.Errorf("edge %d asks %s: %v, want %v", edge, at.cfg.Self.Name, got, names)
		}
		if ans.Digest == 0 {
			t.Errorf("edge %d: digest 0", edge)
		}
		return ans.Digest
	}
	// Its own cluster (c1) before p4's c2.
	d := want(0, p1, "p1", "p2", "p4")
	want(1, p1, "p1", "p3")
	want(41, pn.p("p2"), "p2")
	// A list in two parts arrived whole: p1 tells edge 0 about p2 because
	// of the first part; p3 admits no edge 41 but knows p2 does.
	if got, _, _ := p1.admitsOf("p2"); len(got) != 41 {
		t.Fatalf("p1 has %v of p2's 41 keys", got)
	}
	// A proxy that does not admit an edge does not answer it.
	if _, ok := pn.askProxies(pn.p("p3"), 0, 0); ok {
		t.Errorf("p3 answered edge 0, which it does not admit")
	}
	// The same list again is only its digest.
	if ans, ok := pn.askProxies(p1, 0, d); !ok || len(ans.Peers) != 0 || ans.Digest != d {
		t.Errorf("asked with the current digest: %+v", ans)
	}

	// p3 cannot speak for p2.
	pn.sendAs("p3", "p1", admitsMsg("p2", 1<<31, edgeKey(1)))
	pn.settle()
	want(1, p1, "p1", "p3")

	// A dead proxy is not told; the list (and digest) change.
	pn.kill("p2")
	pn.until(5*time.Second, "p1 sees p2 dead", func() bool { return pn.state("p1", "p2") == StateDead })
	if d2 := want(0, p1, "p1", "p4"); d2 == d {
		t.Errorf("digest %d unchanged after p2 died", d)
	}

	// A restarted p4 (a new incarnation) is asked again, once.
	old := pn.p("p4").health.incarnation()
	pn.kill("p4")
	pn.run(time.Second)
	p4 := pn.restart("p4")
	inc := p4.health.incarnation()
	if inc <= old {
		t.Fatalf("p4 restarted at incarnation %d, not above %d", inc, old)
	}
	pn.until(admitsRetry+time.Second, "p1 has p4's new list", func() bool {
		keys, got, _ := p1.admitsOf("p4")
		return got == inc && keys[edgeKey(0)]
	})
	asked := p1.Stats().Sent[TypeAdmitsReq]
	pn.run(2 * admitsRetry)
	if n := p1.Stats().Sent[TypeAdmitsReq]; n != asked {
		t.Errorf("p1 asked again (%d times) with every list current", n-asked)
	}

	// A late answer from p4's previous incarnation is not taken.
	p1.forgetAdmits([]Member{{Name: "p4"}})
	pn.sendAs("p4", "p1", admitsMsg("p4", old, edgeKey(7)))
	pn.settle()
	if keys, _, _ := p1.admitsOf("p4"); keys != nil {
		t.Errorf("p1 took p4's list of an older incarnation: %v", keys)
	}
}

// TestProxyWithoutEdgesAsksNoAdmits: a proxy that admits no edge never
// reads what the others admit, so it asks nobody (at 10,000 proxies the
// asking and answering were 2×10⁸ messages at start); it still answers
// those that ask, and a Reload that gives it an edge makes it ask.
func TestProxyWithoutEdgesAsksNoAdmits(t *testing.T) {
	pn := newProxyNet(t, 4, 0, func(c *ProxyConfig) {
		if c.Self.Name == "p1" {
			c.Edges = map[netip.Addr]*EdgePolicy{edgeAddr(0): {Name: "e", PublicKey: edgeKey(0), Groups: []router.Group{testGroup}}}
		}
	})
	pn.run(3 * time.Second)
	for _, name := range []string{"p2", "p3", "p4"} {
		if n := pn.p(name).Stats().Sent[TypeAdmitsReq]; n != 0 {
			t.Errorf("%s, which admits no edge, asked %d times what others admit", name, n)
		}
	}
	if n := pn.p("p1").Stats().Sent[TypeAdmitsReq]; n != 3 {
		t.Errorf("p1 asked %d times, want once each of the 3 others", n)
	}
	if n := pn.p("p2").Stats().Sent[TypeAdmits]; n != 1 {
		t.Errorf("p2 answered %d times, want once", n)
	}
	p2 := pn.p("p2")
	if _, err := p2.Reload(Reload{Edges: map[netip.Addr]*EdgePolicy{edgeAddr(1): {Name: "f", PublicKey: edgeKey(1), Groups: []router.Group{testGroup}}}}); err != nil {
		t.Fatal(err)
	}
	pn.until(2*time.Second, "p2 has p1's list", func() bool {
		keys, _, _ := p2.admitsOf("p1")
		return keys[edgeKey(0)]
	})
}
