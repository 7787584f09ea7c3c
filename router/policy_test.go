package router

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// More proxies for policy tests, which need JAPs that are not the IAPs.
var (
	p4 = netip.MustParseAddr("100.64.0.4")
	p5 = netip.MustParseAddr("100.64.0.5")
)

// policyRouter is newRouter that also knows p4 and p5 as proxies, with a
// seeded random source (tests route from one goroutine).
func policyRouter(t testing.TB, self netip.Addr, seed uint64) *Router {
	t.Helper()
	r := newRouter(t, []netip.Addr{self})
	r.SetProxies(append([]netip.Addr{p4, p5}, proxyIPs...))
	r.rnd = rand.New(rand.NewPCG(seed, seed^0x5eed)).Uint64
	return r
}

// tgtN is the n-th test target of the family of g.
func tgtN(g Group, n int) netip.AddrPort {
	if g.Addr.Is4() {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 2, byte(100 + n)}), 8080)
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x64, 13: 2, 15: byte(100 + n)}), 8080)
}

// clientN is the n-th test client address (port p) of a family.
func clientN(v4 bool, n int, port uint16) netip.AddrPort {
	if v4 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 3 + byte(n>>8), byte(n)}), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x64, 12: 3, 13: byte(n >> 8), 15: byte(n)}), port)
}

// routeAll routes b and returns, when forwarded, the main packet and its
// copies, as the node layer would send them.
func routeAll(t testing.TB, r *Router, b []byte, now int64) (Result, [][]byte) {
	t.Helper()
	buf := make([]byte, Headroom+len(b)+7)
	copy(buf[Headroom:], b)
	res := r.Route(buf, Headroom, Headroom+len(b), now)
	if res.Action != Forward {
		return res, nil
	}
	out := [][]byte{append([]byte(nil), buf[res.Start:res.End]...)}
	for i := range res.Copies {
		dst := make([]byte, res.End-res.Start)
		start, end, ok := r.Copy(&res, i, dst)
		if !ok {
			t.Fatalf("Copy %d of %d failed", i, res.Copies)
		}
		out = append(out, dst[start:end])
	}
	if _, _, ok := r.Copy(&res, res.Copies, make([]byte, 2000)); ok {
		t.Fatalf("Copy beyond Copies succeeded")
	}
	return res, out
}

// overlayNet is an IAP's view of the JAP routers, by address.
type overlayNet map[netip.Addr]*Router

// delivery is a packet as a target received it, and through which JAP.
type delivery struct {
	decoded
	jap netip.Addr
}

// send carries a client packet from the IAP iap (address iapAddr) to the
// targets: through the JAPs of n, or straight from iap when it serves the
// group itself.
func (n overlayNet) send(t testing.TB, iap *Router, iapAddr netip.Addr, b []byte, now int64) []delivery {
	t.Helper()
	res, outs := routeAll(t, iap, b, now)
	if res.Action != Forward {
		t.Fatalf("IAP: %+v", res)
	}
	var got []delivery
	for _, o := range outs {
		d := decode(t, o)
		if d.proto != ProtoIPIP && d.proto != ProtoIPv6 {
			got = append(got, delivery{d, iapAddr})
			continue
		}
		jap := n[d.dst.Addr()]
		if jap == nil {
			t.Fatalf("encapsulated to %v, not a JAP", d.dst.Addr())
		}
		res, outs := routeAll(t, jap, o, now)
		if res.Action != Forward {
			t.Fatalf("JAP %v: %+v", d.dst.Addr(), res)
		}
		for _, o := range outs {
			got = append(got, delivery{decode(t, o), d.dst.Addr()})
		}
	}
	return got
}

func TestParsePolicy(t *testing.T) {
	for s := range numSelect {
		if got, err := ParseSelect(s.String()); err != nil || got != s {
			t.Errorf("ParseSelect(%q) = %v, %v", s.String(), got, err)
		}
	}
	for s := range numScope {
		if got, err := ParseScope(s.String()); err != nil || got != s {
			t.Errorf("ParseScope(%q) = %v, %v", s.String(), got, err)
		}
	}
	if _, err := ParseSelect("nearest"); err == nil || !strings.Contains(err.Error(), "proximity, load, random, affinity") {
		t.Errorf("ParseSelect error %v", err)
	}
	if _, err := ParseScope("cluster"); err == nil || !strings.Contains(err.Error(), "any, same-cluster") {
		t.Errorf("ParseScope error %v", err)
	}
	p := Policy{Select: SelectLoad, Replicate: 3, Scope: ScopeSameCluster}
	if got := p.String(); got != "select=load replicate=3 scope=same-cluster" {
		t.Errorf("Policy.String = %q", got)
	}
	// No replication shows as the documented default, replicate = 1.
	if (Policy{}).String() != "select=proximity replicate=1 scope=any" || Select(9).String() != "select(9)" {
		t.Errorf("String of zero or unknown values: %q", Policy{})
	}
	if got := (Policy{Replicate: 1}).String(); got != (Policy{}).String() {
		t.Errorf("replicate 1 shows as %q, 0 as %q: both are one copy", got, Policy{})
	}

	r := newRouter(t, selfP2())
	r.SetPolicy(gUDP, Policy{Select: SelectRandom, Replicate: 99})
	if got := r.Policy(gUDP); got != (Policy{Select: SelectRandom, Replicate: MaxReplicate}) {
		t.Errorf("Policy = %v", got)
	}
	r.SetPolicy(gUDP, Policy{})
	if got := r.Policy(gUDP); got != (Policy{}) || len(r.policies) != 0 {
		t.Errorf("zero policy kept: %v", got)
	}
}

// TestProximityNearestFirst: the first live JAP in the caller's order, local
// targets before any, and the next one out when the nearest is gone.
func TestProximityNearestFirst(t *testing.T) {
	r := policyRouter(t, p1, 1)
	r.resolved(gUDP, []JAP{{Addr: p4, Targets: 1}, {Addr: p2, Targets: 9}, {Addr: p3, Targets: 1}}, time.Hour, 0)
	ap := netip.AddrPortFrom(anyIP, 53)
	for i := range 20 {
		if d := decode(t, mustForward(t, r, udp(clientN(true, i, 1000), ap, "x"), 0)); d.dst.Addr() != p4 {
			t.Fatalf("flow %d went to %v, want the nearest, %v", i, d.dst.Addr(), p4)
		}
	}
	r.SetProxies([]netip.Addr{p1, p2, p3}) // p4 died
	if d := decode(t, mustForward(t, r, udp(clientN(true, 99, 1000), ap, "x"), 1)); d.dst.Addr() != p2 {
		t.Fatalf("with p4 gone: %v, want %v", d.dst.Addr(), p2)
	}
	r.addTarget(gUDP, tgt) // distance 0
	if d := decode(t, mustForward(t, r, udp(clientN(true, 100, 1000), ap, "x"), 2)); d.dst != tgt {
		t.Fatalf("with a local target: %v", d.dst)
	}
}

func TestLoadByWeightAtJAP(t *testing.T) {
	jap := policyRouter(t, p2, 1)
	jap.SetPolicy(gUDP, Policy{Select: SelectLoad})
	t1, t2, t3 := tgtN(gUDP, 1), tgtN(gUDP, 2), tgtN(gUDP, 3)
	jap.AddTargetWeight(gUDP, t1, 3)
	jap.AddTargetWeight(gUDP, t2, 1)
	ap := netip.AddrPortFrom(anyIP, 53)
	count := map[netip.AddrPort]int{}
	newFlow := func(i int) netip.AddrPort {
		d := decode(t, mustForward(t, jap, encap(p1, p2, udp(clientN(true, i/50000, uint16(1024+i%50000)), ap, "x")), 0))
		count[d.dst]++
		return d.dst
	}
	for i := range 3000 {
		newFlow(i)
	}
	if c := count[t1]; c < 2250*9/10 || c > 2250*11/10 || count[t1]+count[t2] != 3000 {
		t.Fatalf("weights 3:1 split 3000 flows %v", count)
	}
	// A new target takes the new flows until it has its share.
	jap.addTarget(gUDP, t3)
	for i := range 20 {
		if got := newFlow(3000 + i); got != t3 {
			t.Fatalf("new flow %d went to %v, not to the new target", i, got)
		}
	}
	checkFlowCounts(t, jap)
	// Re-weighting keeps the flows; the counts follow removals too.
	jap.AddTargetWeight(gUDP, t2, 5)
	jap.RemoveTarget(gUDP, t1.Addr())
	checkFlowCounts(t, jap)
	jap.Expire(sec(3600))
	checkFlowCounts(t, jap)
	if jap.Stats().JAPFlows != 0 {
		t.Fatalf("flows left")
	}
}

// checkFlowCounts checks that each local target's live-flow counter is its
// number of JAP flows.
func checkFlowCounts(t *testing.T, r *Router) {
	t.Helper()
	want := map[netip.AddrPort]int64{}
	for _, f := range r.Flows() {
		if f.Kind == "jap" {
			want[f.Target]++
		}
	}
	r.gmu.RLock()
	defer r.gmu.RUnlock()
	for g, ts := range r.targets {
		for _, tg := range ts.list {
			if got := tg.flows.n.Load(); got != want[tg.ap] {
				t.Errorf("%v target %v: counter %d, flows %d", g, tg.ap, got, want[tg.ap])
			}
		}
	}
}

// TestLoadCountsSurviveEviction: counters stay exact while a full table
// evicts flows.
func TestLoadCountsSurviveEviction(t *testing.T) {
	jap := newRouter(t, selfP2(), func(c *Config) { c.MaxFlows = 50 })
	jap.SetPolicy(gUDP, Policy{Select: SelectLoad})
	for n := 1; n <= 3; n++ {
		jap.AddTargetWeight(gUDP, tgtN(gUDP, n), n)
	}
	ap := netip.AddrPortFrom(anyIP, 53)
	for i := range 500 {
		mustForward(t, jap, encap(p1, p2, udp(clientN(true, i, 5000), ap, "x")), int64(i))
	}
	if st := jap.Stats(); st.Evicted == 0 || st.JAPFlows > 50 {
		t.Fatalf("stats %+v", st)
	}
	checkFlowCounts(t, jap)
}

func TestLoadByWeightAtIAP(t *testing.T) {
	iap := policyRouter(t, p1, 1)
	iap.ResolvedPolicy(gUDP, Policy{Select: SelectLoad},
		[]JAP{{Addr: p2, Targets: 1, Weight: 3}, {Addr: p3, Targets: 5, Weight: 1}}, time.Hour, 0)
	ap := netip.AddrPortFrom(anyIP, 53)
	count := map[netip.Addr]int{}
	for i := range 3000 {
		count[decode(t, mustForward(t, iap, udp(clientN(true, i, 7000), ap, "x"), 0)).dst.Addr()]++
	}
	if c := count[p2]; c < 2250*9/10 || c > 2250*11/10 {
		t.Fatalf("JAP weights 3:1 split 3000 flows %v", count)
	}

	// An IAP with a local target is one of the candidates, by its weight.
	iap2 := policyRouter(t, p1, 2)
	iap2.SetPolicy(gUDP, Policy{Select: SelectLoad})
	iap2.AddTargetWeight(gUDP, tgt, 2)
	iap2.ResolvedPolicy(gUDP, Policy{Select: SelectLoad},
		[]JAP{{Addr: p1, Targets: 1, Weight: 2}, {Addr: p2, Targets: 1, Weight: 2}}, time.Hour, 0)
	count = map[netip.Addr]int{}
	for i := range 1000 {
		count[decode(t, mustForward(t, iap2, udp(clientN(true, i, 7000), ap, "x"), 0)).dst.Addr()]++
	}
	if count[p2] < 400 || count[tgt.Addr()] < 400 {
		t.Fatalf("local and remote JAP of equal weight: %v", count)
	}
}

// chiSquare is Pearson's statistic of counts against a uniform spread.
func chiSquare(counts map[netip.AddrPort]int, k int) float64 {
	total := 0
	for _, c := range counts {
		total += c
	}
	exp := float64(total) / float64(k)
	x := 0.0
	for _, c := range counts {
		x += (float64(c) - exp) * (float64(c) - exp) / exp
	}
	return x + float64(k-len(counts))*exp // targets never reached
}

// TestRandomUniform: 6000 new flows over 3 targets, two at one JAP and one
// at another, are uniform by a chi-square test at 1% (2 degrees of
// freedom: 9.21). The random sources are seeded, so the test is
// deterministic; the seeds are not chosen.
func TestRandomUniform(t *testing.T) {
	pol := Policy{Select: SelectRandom}
	iap := policyRouter(t, p1, 11)
	iap.ResolvedPolicy(gUDP, pol, []JAP{{Addr: p2, Targets: 2}, {Addr: p3, Targets: 1}}, time.Hour, 0)
	n := overlayNet{p2: policyRouter(t, p2, 12), p3: policyRouter(t, p3, 13)}
	for _, r := range n {
		r.SetPolicy(gUDP, pol)
	}
	n[p2].addTarget(gUDP, tgtN(gUDP, 1))
	n[p2].addTarget(gUDP, tgtN(gUDP, 2))
	n[p3].addTarget(gUDP, tgtN(gUDP, 3))
	ap := netip.AddrPortFrom(anyIP, 53)
	count := map[netip.AddrPort]int{}
	for i := range 6000 {
		d := n.send(t, iap, p1, udp(clientN(true, i/6000, uint16(1024+i)), ap, "x"), 0)
		count[d[0].dst]++
	}
	if x := chiSquare(count, 3); x > 9.21 {
		t.Errorf("IAP+JAP: chi-square %.2f > 9.21: %v", x, count)
	} else {
		t.Logf("IAP+JAP: chi-square %.2f: %v", x, count)
	}

	// At one JAP alone.
	jap := policyRouter(t, p2, 14)
	jap.SetPolicy(gUDP, pol)
	for k := 1; k <= 3; k++ {
		jap.addTarget(gUDP, tgtN(gUDP, k))
	}
	count = map[netip.AddrPort]int{}
	for i := range 6000 {
		count[decode(t, mustForward(t, jap, encap(p1, p2, udp(clientN(true, 1, uint16(1024+i)), ap, "x")), 0)).dst]++
	}
	if x := chiSquare(count, 3); x > 9.21 {
		t.Errorf("JAP: chi-square %.2f > 9.21: %v", x, count)
	} else {
		t.Logf("JAP: chi-square %.2f: %v", x, count)
	}
	// Never the sender: a target calling its group reaches the others.
	sender := tgtN(gUDP, 2)
	for i := range 50 {
		d := decode(t, mustForward(t, jap, encap(p1, p2, udp(netip.AddrPortFrom(sender.Addr(), uint16(2000+i)), ap, "x")), 0))
		if d.dst == sender {
			t.Fatal("the sender got its own packet")
		}
	}
}

// TestAffinity: a client's address alone decides its JAP and target, from
// any port and through any IAP; a new target takes only its share.
func TestAffinity(t *testing.T) {
	for _, v4 := range []bool{true, false} {
		g := gUDP
		if !v4 {
			g = gUDP6
		}
		t.Run(fmt.Sprint("v4=", v4), func(t *testing.T) {
			pol := Policy{Select: SelectAffinity}
			japs := []JAP{{Addr: p2, Targets: 2}, {Addr: p4, Targets: 3}}
			iapA, iapB := policyRouter(t, p1, 1), policyRouter(t, p3, 2)
			iapA.ResolvedPolicy(g, pol, japs, time.Hour, 0)
			iapB.ResolvedPolicy(g, pol, []JAP{japs[1], japs[0]}, time.Hour, 0)
			n := overlayNet{p2: policyRouter(t, p2, 3), p4: policyRouter(t, p4, 4)}
			for _, r := range n {
				r.SetPolicy(g, pol)
			}
			n[p2].addTarget(g, tgtN(g, 1))
			n[p2].addTarget(g, tgtN(g, 2))
			for k := 3; k <= 5; k++ {
				n[p4].addTarget(g, tgtN(g, k))
			}
			ap := netip.AddrPortFrom(g.Addr, g.Port)
			seen := map[netip.AddrPort]int{}
			for c := range 200 {
				var first delivery
				for i, iap := range []*Router{iapA, iapB, iapA, iapB} {
					d := n.send(t, iap, p1, udp(clientN(v4, c, uint16(1024+i)), ap, "x"), 0)[0]
					if i == 0 {
						first = d
						seen[d.dst]++
					} else if d.jap != first.jap || d.dst != first.dst {
						t.Fatalf("client %d, port %d: %v at %v, first %v at %v", c, i, d.dst, d.jap, first.dst, first.jap)
					}
				}
			}
			if len(seen) != 5 {
				t.Errorf("200 clients reached %d of 5 targets: %v", len(seen), seen)
			}
		})
	}

	// At one JAP: a 4th target moves about a quarter of the clients, all
	// to itself.
	jap := policyRouter(t, p2, 5)
	jap.SetPolicy(gUDP, Policy{Select: SelectAffinity})
	for k := 1; k <= 3; k++ {
		jap.addTarget(gUDP, tgtN(gUDP, k))
	}
	ap := netip.AddrPortFrom(anyIP, 53)
	before := map[int]netip.AddrPort{}
	for c := range 1000 {
		before[c] = decode(t, mustForward(t, jap, encap(p1, p2, udp(clientN(true, c, 1000), ap, "x")), 0)).dst
	}
	jap.addTarget(gUDP, tgtN(gUDP, 4))
	moved := 0
	for c := range 1000 {
		d := decode(t, mustForward(t, jap, encap(p1, p2, udp(clientN(true, c, 1001), ap, "x")), 0)).dst
		if d != before[c] {
			moved++
			if d != tgtN(gUDP, 4) {
				t.Fatalf("client %d moved from %v to %v, an old target", c, before[c], d)
			}
		}
	}
	if moved > 1000/3 || moved < 1000/6 {
		t.Errorf("a 4th target moved %d of 1000 clients, want about 250", moved)
	}
	t.Logf("a 4th target moved %d of 1000 clients", moved)
}

// TestAffinityWeighted: the client shares of targets follow their weights.
func TestAffinityWeighted(t *testing.T) {
	jap := policyRouter(t, p2, 1)
	jap.SetPolicy(gUDP, Policy{Select: SelectAffinity})
	jap.AddTargetWeight(gUDP, tgtN(gUDP, 1), 3)
	jap.AddTargetWeight(gUDP, tgtN(gUDP, 2), 1)
	ap := netip.AddrPortFrom(anyIP, 53)
	count := map[netip.AddrPort]int{}
	for c := range 2000 {
		count[decode(t, mustForward(t, jap, encap(p1, p2, udp(clientN(true, c, 1000), ap, "x")), 0)).dst]++
	}
	if c := count[tgtN(gUDP, 1)]; c < 1500*9/10 || c > 1500*11/10 {
		t.Errorf("weights 3:1 split 2000 clients %v", count)
	}
}

// replicaWorld is an IAP (p1) and two JAPs, p2 and p3, with two targets
// each, for a replicating group g.
func replicaWorld(t *testing.T, g Group, pol Policy) (*Router, overlayNet) {
	iap := policyRouter(t, p1, 1)
	iap.ResolvedPolicy(g, pol, []JAP{{Addr: p2, Targets: 2}, {Addr: p3, Targets: 2}}, time.Hour, 0)
	n := overlayNet{p2: policyRouter(t, p2, 2), p3: policyRouter(t, p3, 3)}
	for k := 1; k <= 4; k++ {
		n[[]netip.Addr{p2, p3}[(k-1)/2]].addTarget(g, tgtN(g, k))
	}
	for _, r := range n {
		r.SetPolicy(g, pol)
	}
	return iap, n
}

func TestReplicate(t *testing.T) {
	for _, f := range families {
		g := group(f.anyUDP, ProtoUDP)
		t.Run(f.name, func(t *testing.T) {
			iap, n := replicaWorld(t, g, Policy{Replicate: 3})
			for round := range 2 {
				got := n.send(t, iap, p1, udp(f.client, f.anyUDP, "query"), int64(round))
				if len(got) != 3 {
					t.Fatalf("replicate=3 reached %d targets", len(got))
				}
				seen := map[netip.AddrPort]bool{}
				for _, d := range got {
					if seen[d.dst] || string(d.payload) != "query" || d.src.Addr() != f.client.Addr() {
						t.Fatalf("deliveries %+v", got)
					}
					seen[d.dst] = true
					// Nearest first: both of p2's targets, one of p3's.
					if want := map[bool]netip.Addr{true: p2, false: p3}[d.dst == tgtN(g, 1) || d.dst == tgtN(g, 2)]; d.jap != want {
						t.Errorf("%v reached through %v", d.dst, d.jap)
					}
					// The target's reply reaches the client from the group.
					rep := udp(d.dst, d.src, "answer from "+d.dst.String())
					enc := mustForward(t, n[d.jap], rep, int64(round))
					back := decode(t, mustForward(t, iap, enc, int64(round)))
					if back.src != f.anyUDP || back.dst != f.client || string(back.payload) != "answer from "+d.dst.String() {
						t.Errorf("reply %v → %v %q", back.src, back.dst, back.payload)
					}
				}
			}
			// The second datagram reused the flows: one per target.
			if a, b := n[p2].Stats().JAPFlows, n[p3].Stats().JAPFlows; a != 2 || b != 1 {
				t.Errorf("JAP flows %d and %d, want 2 and 1", a, b)
			}
			if iap.Stats().IAPFlows != 0 {
				t.Errorf("IAP flows for a replicated group")
			}

			// More than there are: each of the 4 once.
			iap5, n5 := replicaWorld(t, g, Policy{Replicate: 5})
			got := n5.send(t, iap5, p1, udp(f.client, f.anyUDP, "q"), 0)
			seen := map[netip.AddrPort]bool{}
			for _, d := range got {
				seen[d.dst] = true
			}
			if len(got) != 4 || len(seen) != 4 {
				t.Fatalf("replicate=5 over 4 targets: %d deliveries to %d targets", len(got), len(seen))
			}
		})
	}
}

// TestReplicateLocalAndSender: an IAP that serves the group itself takes
// its share first (proximity), its targets' replies go straight back, and
// the sender never gets its own datagram.
func TestReplicateLocalAndSender(t *testing.T) {
	g := gUDP
	pol := Policy{Replicate: 3}
	iap, n := replicaWorld(t, g, pol)
	local := tgtN(g, 9)
	iap.addTarget(g, local)
	iap.SetPolicy(g, pol)
	iap.ResolvedPolicy(g, pol, []JAP{{Addr: p1, Targets: 1}, {Addr: p2, Targets: 2}, {Addr: p3, Targets: 2}}, time.Hour, 0)
	ap := netip.AddrPortFrom(g.Addr, g.Port)
	got := n.send(t, iap, p1, udp(client, ap, "q"), 0)
	var at []string
	for _, d := range got {
		at = append(at, d.dst.String())
		if d.dst == local {
			rep := decode(t, mustForward(t, iap, udp(local, d.src, "a"), 0))
			if rep.src != ap || rep.dst != client {
				t.Errorf("local reply %v → %v", rep.src, rep.dst)
			}
		}
	}
	if len(got) != 3 || !strings.Contains(strings.Join(at, " "), local.String()) {
		t.Fatalf("deliveries %v", at)
	}

	// The local target sends to its own group: the other 4 cover 3.
	sender := netip.AddrPortFrom(local.Addr(), 5353)
	got = n.send(t, iap, p1, udp(sender, ap, "q"), 1)
	for _, d := range got {
		if d.dst.Addr() == local.Addr() {
			t.Fatal("the sender got its own datagram")
		}
	}
	if len(got) != 3 {
		t.Fatalf("sender's datagram reached %d targets", len(got))
	}
	// At a JAP, likewise: target 1 of p2 sends, and p2 has only target 2
	// for it (the IAP cannot know: 2 deliveries).
	s1 := netip.AddrPortFrom(tgtN(g, 1).Addr(), 999)
	got = n.send(t, iap, p1, udp(s1, ap, "q"), 2)
	for _, d := range got {
		if d.dst.Addr() == s1.Addr() {
			t.Fatal("the sender got its own datagram at a JAP")
		}
	}
	if len(got) != 2 {
		t.Fatalf("datagram of a JAP's target reached %d targets, want 2", len(got))
	}

	// All local: 3 targets here cover it, no JAP list needed.
	solo := policyRouter(t, p1, 9)
	solo.SetPolicy(g, pol)
	for k := 1; k <= 4; k++ {
		solo.addTarget(g, tgtN(g, k))
	}
	got = overlayNet{}.send(t, solo, p1, udp(client, ap, "q"), 0)
	seen := map[netip.AddrPort]bool{}
	for _, d := range got {
		seen[d.dst] = true
	}
	if len(got) != 3 || len(seen) != 3 {
		t.Fatalf("all local: %d deliveries to %d targets", len(got), len(seen))
	}
}

// TestReplicateResolved: a datagram that waited for its group comes out of
// Resolved with its copies.
func TestReplicateResolved(t *testing.T) {
	iap := policyRouter(t, p1, 1)
	ap := netip.AddrPortFrom(anyIP, 53)
	if res, _ := route(iap, udp(client, ap, "q"), 0); res.Action != Queued {
		t.Fatalf("%+v", res)
	}
	out := iap.ResolvedPolicy(gUDP, Policy{Replicate: 3}, []JAP{{Addr: p2, Targets: 1}, {Addr: p3, Targets: 1}, {Addr: p4, Targets: 5}}, time.Hour, 0)
	want := map[netip.Addr]int{p2: 0, p3: 0, p4: 0}
	for _, b := range out {
		d := decode(t, b)
		want[d.dst.Addr()]++
		if q := replicaQuota(b); q != 0 {
			t.Errorf("quota %d for a JAP of quota 1", q)
		}
	}
	if len(out) != 3 || want[p2] != 1 || want[p3] != 1 || want[p4] != 1 {
		t.Fatalf("Resolved gave %d packets: %v", len(out), want)
	}
}

// TestScopeSameCluster: never a JAP of another cluster, never the sender.
func TestScopeSameCluster(t *testing.T) {
	ap := netip.AddrPortFrom(anyIP, 53)
	for _, sel := range []Select{SelectProximity, SelectLoad, SelectRandom, SelectAffinity} {
		t.Run(sel.String(), func(t *testing.T) {
			pol := Policy{Select: sel, Scope: ScopeSameCluster}
			iap := policyRouter(t, p1, 1)
			iap.ResolvedPolicy(gUDP, pol, []JAP{{Addr: p2, Targets: 9}, {Addr: p3, Targets: 1, SameCluster: true},
				{Addr: p4, Targets: 1, SameCluster: true}, {Addr: p5, Targets: 9}}, time.Hour, 0)
			for i := range 200 {
				d := decode(t, mustForward(t, iap, udp(clientN(true, i, 1000), ap, "x"), 0))
				if a := d.dst.Addr(); a != p3 && a != p4 {
					t.Fatalf("flow %d went to %v, another cluster", i, a)
				}
			}
			// None in the cluster: dropped.
			iap.ResolvedPolicy(gUDP, pol, []JAP{{Addr: p2, Targets: 9}}, time.Hour, 0)
			mustDrop(t, iap, udp(clientN(true, 500, 1000), ap, "x"), 0, DropNoTarget)
			// This proxy's only target is the sender: not to itself, not to
			// p2 either.
			iap.SetPolicy(gUDP, pol)
			iap.addTarget(gUDP, tgt)
			iap.ResolvedPolicy(gUDP, pol, []JAP{{Addr: p1, Targets: 1, SameCluster: true}, {Addr: p2, Targets: 9}}, time.Hour, 0)
			mustDrop(t, iap, udp(netip.AddrPortFrom(tgt.Addr(), 999), ap, "x"), 0, DropNoTarget)
			// Other clients are served here.
			if d := decode(t, mustForward(t, iap, udp(clientN(true, 501, 1000), ap, "x"), 0)); d.dst != tgt {
				t.Fatalf("client went to %v", d.dst)
			}
		})
	}
	// Replicated: the quota stays in the cluster.
	pol := Policy{Replicate: 4, Scope: ScopeSameCluster}
	iap := policyRouter(t, p1, 1)
	iap.ResolvedPolicy(gUDP, pol, []JAP{{Addr: p2, Targets: 9}, {Addr: p3, Targets: 1, SameCluster: true}}, time.Hour, 0)
	res, outs := routeAll(t, iap, udp(client, ap, "x"), 0)
	if res.Action != Forward || len(outs) != 1 || decode(t, outs[0]).dst.Addr() != p3 {
		t.Fatalf("replicated across clusters: %+v, %d packets", res, len(outs))
	}
}

// TestReplicaQuotaHeader: the quota is in the outer header; marks that are
// not ours and big quotas are safe.
func TestReplicaQuotaHeader(t *testing.T) {
	jap := policyRouter(t, p2, 1)
	for k := 1; k <= 3; k++ {
		jap.addTarget(gUDP, tgtN(gUDP, k))
	}
	ap := netip.AddrPortFrom(anyIP, 53)
	for _, c := range []struct {
		id   uint16
		want int
	}{{0, 1}, {0xbeef, 1}, {replicaMark | 1, 1}, {replicaMark | 2, 2}, {replicaMark | 0xff, 3}} {
		b := encap(p1, p2, udp(clientN(true, int(c.id&0xff), 1000), ap, "x"))
		b[4], b[5] = byte(c.id>>8), byte(c.id)
		b[10], b[11] = 0, 0
		cs := refChecksum(b[:20])
		b[10], b[11] = byte(cs>>8), byte(cs)
		_, outs := routeAll(t, jap, b, 0)
		if len(outs) != c.want {
			t.Errorf("id %#x: %d packets, want %d", c.id, len(outs), c.want)
		}
	}
	// TCP is never replicated.
	jap.addTarget(gTCP, tgt)
	jap.addTarget(gTCP, tgt2)
	b := encap(p1, p2, tcp(client, anyTCP, tcpSYN))
	b[4], b[5] = replicaMark>>8, 3
	if _, outs := routeAll(t, jap, b, 0); len(outs) != 1 {
		t.Errorf("TCP segment replicated %d times", len(outs))
	}
}

// TestConcurrentPolicies sends replicated datagrams and load-balanced flows
// from many goroutines while targets, weights and policies change. Run with
// -race. In the end every target's live-flow counter is back to 0.
func TestConcurrentPolicies(t *testing.T) {
	iap := newRouter(t, selfP1(), func(c *Config) { c.MaxFlows = 64 })
	jap := newRouter(t, selfP2(), func(c *Config) { c.MaxFlows = 64 })
	gRep := Group{Addr: anyIP, Port: 5353, Proto: ProtoUDP}
	jap.SetPolicy(gUDP, Policy{Select: SelectLoad})
	for k := 1; k <= 3; k++ {
		jap.addTarget(gUDP, tgtN(gUDP, k))
		jap.addTarget(gRep, tgtN(gUDP, k))
	}
	iap.ResolvedPolicy(gRep, Policy{Replicate: 3}, []JAP{{Addr: p2, Targets: 3}}, time.Hour, 0)
	iap.ResolvedPolicy(gUDP, Policy{Select: SelectLoad}, []JAP{{Addr: p2, Targets: 3}}, time.Hour, 0)

	hammer(t, 6, func(w int) {
		for i := range 400 {
			now := int64(i) * int64(time.Millisecond)
			c := clientN(true, w, uint16(1000+i%50))
			port := []uint16{53, 5353}[i%2]
			res, outs := routeAll(t, iap, udp(c, netip.AddrPortFrom(anyIP, port), "x"), now)
			if res.Action != Forward {
				continue
			}
			for _, o := range outs {
				if _, outs := routeAll(t, jap, o, now); len(outs) > 0 {
					replyTo(t, jap, outs[0], now)
				}
			}
		}
	}, func(i int) {
		jap.Expire(int64(i) * int64(10*time.Millisecond))
		switch i % 4 {
		case 0:
			jap.RemoveTarget(gRep, tgtN(gUDP, 2).Addr())
			jap.AddTargetWeight(gUDP, tgtN(gUDP, 1), 5)
		case 1:
			jap.SetPolicy(gUDP, Policy{Select: SelectAffinity})
		case 2:
			jap.addTarget(gRep, tgtN(gUDP, 2))
			jap.AddTargetWeight(gUDP, tgtN(gUDP, 1), 1)
		case 3:
			jap.SetPolicy(gUDP, Policy{Select: SelectLoad})
		}
		jap.Flows()
	})
	if jap.Stats().Forwarded == 0 {
		t.Errorf("the JAP forwarded no packets")
	}
	checkTables(t, jap)
	jap.Expire(sec(1e6))
	jap.gmu.RLock()
	defer jap.gmu.RUnlock()
	for g, ts := range jap.targets {
		for _, tg := range ts.list {
			if n := tg.flows.n.Load(); n != 0 {
				t.Errorf("%v target %v: %d flows counted after all expired", g, tg.ap, n)
			}
		}
	}
}

// TestTargetWeightBounds: weights outside 1..MaxWeight are clamped, so that
// no target outweighs what overlay's Join and config's weight key allow.
func TestTargetWeightBounds(t *testing.T) {
	for _, c := range []struct {
		name string
		in   int
		want int
	}{
		{"negative", -5, 1},
		{"zero", 0, 1},
		{"one", 1, 1},
		{"max", MaxWeight, MaxWeight},
		{"above max", MaxWeight + 1, MaxWeight},
		{"old limit", 1 << 16, MaxWeight},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRouter(t, selfP2())
			r.AddTargetWeight(gUDP, tgt, c.in)
			if l := r.Loads(gUDP); len(l) != 1 || l[0].Weight != c.want {
				t.Fatalf("weight %d: loads %+v, want weight %d", c.in, l, c.want)
			}
		})
	}
}

// TestProximityStableTarget: under proximity, a JAP with several targets
// gives each client one of them by weighted rendezvous hash of its address,
// as native anycast gives a client one site: whether the client's packets
// come encapsulated from another IAP or straight to this one. Client
// addresses are fixed, so the counts are too.
func TestProximityStableTarget(t *testing.T) {
	ap := netip.AddrPortFrom(anyIP, 53)
	weights := []int{1, 2, 3, 4} // tgtN(gUDP, k+1) has weights[k]
	for _, iap := range []bool{false, true} {
		t.Run(fmt.Sprint("iap=", iap), func(t *testing.T) {
			jap := policyRouter(t, p2, 1) // the default policy: proximity
			for k, w := range weights {
				jap.AddTargetWeight(gUDP, tgtN(gUDP, k+1), w)
			}
			// to routes a new flow from c and returns its target.
			to := func(c netip.AddrPort) netip.AddrPort {
				t.Helper()
				b := udp(c, ap, "q")
				if !iap {
					b = encap(p1, p2, b)
				}
				return decode(t, mustForward(t, jap, b, 0)).dst
			}

			// One client's 100 new flows reach one target.
			for c := range 10 {
				first := to(clientN(true, c, 1000))
				for port := uint16(1001); port < 1100; port++ {
					if got := to(clientN(true, c, port)); got != first {
						t.Fatalf("client %d: port 1000 reached %v, port %d %v", c, first, port, got)
					}
				}
			}

			// 1,000 clients split by weight, 1:2:3:4.
			before := map[int]netip.AddrPort{}
			count := map[netip.AddrPort]int{}
			for c := range 1000 {
				before[c] = to(clientN(true, c, 2000))
				count[before[c]]++
			}
			for k, w := range weights {
				if got, want := count[tgtN(gUDP, k+1)], 100*w; got < want*3/4 || got > want*5/4 {
					t.Errorf("weights %v split 1000 clients %v: target %d has %d, want about %d", weights, count, k+1, got, want)
				}
			}
			t.Logf("weights %v: 1000 clients split %v", weights, count)

			// A target leaves: its clients, and only they, move, to the others.
			gone := tgtN(gUDP, 3)
			jap.RemoveTarget(gUDP, gone.Addr())
			moved := 0
			for c := range 1000 {
				got := to(clientN(true, c, 3000))
				switch {
				case before[c] != gone && got != before[c]:
					t.Fatalf("client %d moved from %v to %v; only %v left", c, before[c], got, gone)
				case got == gone:
					t.Fatalf("client %d reached the removed %v", c, gone)
				case before[c] == gone:
					moved++
				}
			}
			if moved != count[gone] {
				t.Errorf("%d clients moved, %v had %d", moved, gone, count[gone])
			}
			// It comes back: each of its clients returns to it.
			jap.AddTargetWeight(gUDP, gone, weights[2])
			for c := range 1000 {
				if got := to(clientN(true, c, 4000)); got != before[c] {
					t.Fatalf("target back: client %d reached %v, before %v", c, got, before[c])
				}
			}
			// More weight for one target moves clients to it, none away.
			heavy := tgtN(gUDP, 1)
			jap.AddTargetWeight(gUDP, heavy, 10)
			gained := 0
			for c := range 1000 {
				if got := to(clientN(true, c, 5000)); got != before[c] {
					if got != heavy {
						t.Fatalf("weight of %v up: client %d moved from %v to %v", heavy, c, before[c], got)
					}
					gained++
				}
			}
			if gained == 0 {
				t.Errorf("weight 1 → 10 moved no client to %v", heavy)
			}
		})
	}
}

// TestProximityExcludesSender: a target that calls its own group is never
// given itself, even when its hash ranks it first, and keeps one other
// target for all its flows; alone, it reaches nobody.
func TestProximityExcludesSender(t *testing.T) {
	ap := netip.AddrPortFrom(anyIP, 53)
	jap := policyRouter(t, p2, 1)
	self := tgtN(gUDP, 1)
	jap.AddTargetWeight(gUDP, self, MaxWeight) // ranks first for nearly every client...
	jap.addTarget(gUDP, tgtN(gUDP, 2))
	jap.addTarget(gUDP, tgtN(gUDP, 3))
	if got := decode(t, mustForward(t, jap, encap(p1, p2, udp(clientN(true, 1, 1000), ap, "q")), 0)).dst; got != self {
		t.Fatalf("a client reached %v, want the heavy %v", got, self)
	}
	// Its own hash ranks it first too: were it not excluded, it would win.
	sender := key16(self.Addr())
	l := jap.localTargets(gUDP, &sender)
	best, bestScore := netip.AddrPort{}, 0.0
	for _, x := range l.list {
		if s := rank(mixScore(addrHash(&sender), x.key), x.weight); s > bestScore {
			best, bestScore = x.ap, s
		}
	}
	if best != self {
		t.Fatalf("precondition: the sender's hash ranks %v first, not itself", best)
	}
	var first netip.AddrPort
	for port := uint16(1000); port < 1100; port++ {
		for _, iap := range []bool{false, true} { // ...and for itself
			b := udp(netip.AddrPortFrom(self.Addr(), port), ap, "q")
			if !iap {
				b = encap(p1, p2, b)
			}
			got := decode(t, mustForward(t, jap, b, 0)).dst
			if got == self {
				t.Fatalf("port %d, iap=%v: the sender got its own flow", port, iap)
			}
			if first == (netip.AddrPort{}) {
				first = got
			} else if got != first {
				t.Fatalf("the sender's flows reached %v and %v", first, got)
			}
		}
	}
	jap.RemoveTarget(gUDP, tgtN(gUDP, 2).Addr())
	jap.RemoveTarget(gUDP, tgtN(gUDP, 3).Addr())
	mustDrop(t, jap, encap(p1, p2, udp(netip.AddrPortFrom(self.Addr(), 2000), ap, "q")), 0, DropNoTarget)
}
