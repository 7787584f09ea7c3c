package router

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// checkTables checks the per-source accounting and the flow indexes of
// both tables against their flows, counted the slow way.
func checkTables(t *testing.T, r *Router) {
	t.Helper()
	for _, tb := range []*table{r.iap, r.jap} {
		for i := range tb.shards {
			s := &tb.shards[i]
			s.mu.Lock()
			count := map[[16]byte]int{}
			s.m.each(func(f *flow) {
				count[f.key.src]++
				if f.src == nil || f.src.addr != f.key.src || s.src.m[f.key.src] != f.src {
					t.Errorf("flow %v has the wrong source", f.key)
				}
				if f.ix != nil && f.inext == nil {
					t.Errorf("flow %v is not in its index", f.key)
				}
			})
			if len(count) != len(s.src.m) || len(count) != len(s.src.heap) {
				t.Errorf("%d sources with flows, %d counted, %d in the heap", len(count), len(s.src.m), len(s.src.heap))
			}
			for i, src := range s.src.heap {
				if src.hi != i {
					t.Errorf("source at %d thinks it is at %d", i, src.hi)
				}
				if i > 0 && s.src.heap[(i-1)/2].n < src.n {
					t.Errorf("heap order broken at %d", i)
				}
				if src.n != count[src.addr] || src.n > tb.srcCap {
					t.Errorf("source counts %d flows, has %d (cap %d)", src.n, count[src.addr], tb.srcCap)
				}
				n, f := 0, src.head
				for f != nil && (n == 0 || f != src.head) {
					if f.src != src || f.snext.sprev != f {
						t.Fatalf("source list broken")
					}
					n++
					f = f.snext
				}
				if n != src.n {
					t.Errorf("source list has %d flows, counts %d", n, src.n)
				}
			}
			s.mu.Unlock()
		}
	}
	type gt struct {
		g Group
		t netip.AddrPort
	}
	want := map[gt]int64{}
	for _, f := range r.Flows() {
		if f.Kind == "jap" {
			want[gt{f.Group, f.Target}]++
		}
	}
	r.gmu.RLock()
	defer r.gmu.RUnlock()
	for g, ts := range r.targets {
		for _, tg := range ts.list {
			if got := tg.flows.n.Load(); got != want[gt{g, tg.ap}] {
				t.Errorf("%v target %v: counter %d, flows %d", g, tg.ap, got, want[gt{g, tg.ap}])
			}
		}
	}
}

// flowID is what TestTargetIndexRandom compares of a flow.
type flowID struct {
	kind   string
	client netip.AddrPort
	group  Group
	target netip.AddrPort
}

func flowIDs(r *Router) []flowID {
	var out []flowID
	for _, f := range r.Flows() {
		out = append(out, flowID{f.Kind, f.Client, f.Group, f.Target})
	}
	slices.SortFunc(out, func(a, b flowID) int {
		if a.kind != b.kind {
			return map[bool]int{true: -1, false: 1}[a.kind < b.kind]
		}
		if c := a.client.Compare(b.client); c != 0 {
			return c
		}
		if c := a.group.Addr.Compare(b.group.Addr); c != 0 {
			return c
		}
		return int(a.group.Port) - int(b.group.Port)
	})
	return out
}

// TestTargetIndexRandom: targets join with new ports and weights, leave
// and come back while clients (some direct, so that this proxy is their
// IAP and JAP, some through another IAP) open flows in a small table that
// evicts. After each change, the flows left are exactly those the slow
// rule keeps: a target's new port or its leave drops its JAP flows and
// the group's IAP flows served here, and nothing else.
func TestTargetIndexRandom(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	r := newRouter(t, selfP2(), func(c *Config) { c.MaxFlows = 100 })
	groups := []Group{gUDP, {Addr: anyIP, Port: 54, Proto: ProtoUDP}, {Addr: netip.MustParseAddr("100.65.0.2"), Port: 53, Proto: ProtoUDP}}
	port := map[Group]map[int]uint16{}
	for _, g := range groups {
		port[g] = map[int]uint16{}
		for n := range 3 {
			r.addTarget(g, tgtN(g, n))
			port[g][n] = 8080
		}
	}
	now := int64(0)
	for round := range 300 {
		for range 60 {
			now++
			g := groups[rnd.IntN(len(groups))]
			c := clientN(true, rnd.IntN(40), uint16(1000+rnd.IntN(20)))
			b := udp(c, netip.AddrPortFrom(g.Addr, g.Port), "x")
			if rnd.IntN(2) == 0 {
				b = encap(p1, p2, b)
			}
			route(r, b, now)
		}
		g, n := groups[rnd.IntN(len(groups))], rnd.IntN(3)
		tg := tgtN(g, n).Addr()
		before := flowIDs(r)
		drop := true
		switch op := rnd.IntN(4); {
		case op == 0: // a new port (or a join, when it was not there)
			port[g][n]++
			drop = !r.AddTargetWeight(g, netip.AddrPortFrom(tg, port[g][n]), 1)
		case op == 1: // a new weight only (or a join)
			r.AddTargetWeight(g, netip.AddrPortFrom(tg, port[g][n]), 1+rnd.IntN(5))
			drop = false
		default: // leave (and come back, when it was not there)
			if !r.RemoveTarget(g, tg) {
				r.AddTargetWeight(g, netip.AddrPortFrom(tg, port[g][n]), 1)
				drop = false
			}
		}
		var want []flowID
		for _, f := range before {
			if drop && f.group == g && (f.kind == "iap" || f.target.Addr() == tg) {
				continue
			}
			want = append(want, f)
		}
		if got := flowIDs(r); !slices.Equal(got, want) {
			var extra, missing []flowID
			for _, f := range got {
				if !slices.Contains(want, f) {
					extra = append(extra, f)
				}
			}
			for _, f := range want {
				if !slices.Contains(got, f) {
					missing = append(missing, f)
				}
			}
			t.Fatalf("round %d (%v %v, drop %v): %d flows left, want %d; extra %v, missing %v", round, g, tg, drop, len(got), len(want), extra, missing)
		}
		checkTables(t, r)
	}
	if st := r.Stats(); st.Evicted == 0 {
		t.Errorf("the table never evicted: %+v", st)
	}
	r.Expire(sec(1e6))
	checkTables(t, r)
	if st := r.Stats(); st.IAPFlows+st.JAPFlows != 0 {
		t.Errorf("flows left after expiry: %+v", st)
	}
}
