package lab

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// proxiesIn names the proxies of a cluster, in lab order.
func proxiesIn(h *Harness, cluster string) []string {
	var out []string
	for _, n := range h.Lab.Nodes {
		if n.Role == config.RoleProxy && n.Cluster == cluster {
			out = append(out, n.Name)
		}
	}
	return out
}

// joinedAt names the running proxies target is joined at for g.
func joinedAt(h *Harness, target string, g router.Group) []string {
	addrs := h.Edges[target].Config.Address
	var out []string
	for name, p := range h.Proxies {
		if slices.ContainsFunc(p.Router.Targets(g), func(a netip.AddrPort) bool { return slices.Contains(addrs, a.Addr()) }) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// attachedTo is the proxy an edge sends the anycast prefix to now.
func attachedTo(h *Harness, edge string) string {
	if a := h.Edges[edge].Attach; a != nil {
		return a.Current()
	}
	return h.Edges[edge].Config.Proxies[0].Name
}

// waitViews waits until every running proxy of watchers sees each of
// subjects in state st, and returns how long that took.
func waitViews(t *testing.T, h *Harness, watchers, subjects []string, st overlay.MemberState, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	err := WaitFor(waitCtx(t, d), func() error {
		for _, w := range watchers {
			p := h.Proxies[w]
			if p == nil {
				continue
			}
			for _, m := range p.Overlay.Members() {
				if slices.Contains(subjects, m.Name) && m.State != st {
					return fmt.Errorf("%s sees %s %v, want %v", w, m.Name, m.State, st)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// clusterShape has three clusters of two proxies: p1,p4 in c1; p2,p5 in c2;
// p3,p6 in c3. Group 0's targets are t1 (p1, c1), t3 (p3, c3) and t5 (p5,
// c2); group 1's t2, t4, t6 likewise. cl1 is homed on p2 (c2), cl2 on p3
// (c3), cl3 on p4 (c1).
var clusterShape = Options{Proxies: 6, Clusters: 3, Targets: 6, Groups: 2, Clients: 3}

func TestFailoverClusterDies(t *testing.T) {
	h := startLab(t, clusterShape)
	g := GroupN(0)
	victims := proxiesIn(h, "c1")
	var survivors []string
	for _, c := range []string{"c2", "c3"} {
		survivors = append(survivors, proxiesIn(h, c)...)
	}
	// The group has targets behind the doomed cluster and behind two others.
	japClusters := map[string]bool{}
	for _, j := range japsOf(h, g) {
		japClusters[h.Node(j).Cluster] = true
	}
	if !japClusters["c1"] || !japClusters["c2"] || !japClusters["c3"] {
		t.Fatalf("JAPs of %s are %v: want targets in c1, c2 and c3", g, japsOf(h, g))
	}
	const client = "cl1"
	if c := h.Node(h.Home(client).Name).Cluster; c == "c1" {
		t.Fatalf("client %s homed in the doomed cluster", client)
	}
	askUntil(t, h, client, g, 5*time.Second, func(string) bool { return true })
	t.Logf("killing cluster c1: %v (JAPs of %s: %v; %s on %s)", victims, g, japsOf(h, g), client, attachedTo(h, client))

	killed := time.Now()
	for _, v := range victims {
		if err := h.KillProxy(v); err != nil {
			t.Fatal(err)
		}
	}
	waitViews(t, h, survivors, victims, overlay.StateDead, 5*time.Second)
	t.Logf("every survivor declared %v dead %v after the kill", victims, time.Since(killed))

	who, _ := askUntil(t, h, client, g, 10*time.Second, func(string) bool { return true })
	t.Logf("%s: first new connection answered (by %s) %v after the kill", client, who, time.Since(killed))
	// New connections keep working, each answered by a target joined at a
	// live proxy.
	for i := range 5 {
		who, d := askUntil(t, h, client, g, 3*time.Second, func(string) bool { return true })
		if at := joinedAt(h, who, g); len(at) == 0 {
			t.Fatalf("answer %d from %s, which is joined nowhere live", i, who)
		}
		if d > 3*time.Second { // a resolve retry is 0.5 s; a stale cache 10 s
			t.Errorf("new connection %d took %v", i, d)
		}
	}

	// Edges homed on the dead cluster move by themselves: consistency
	// includes that no target is joined twice and that RAP tables hold
	// exactly the live JAPs.
	waitConsistent(t, h, 30*time.Second)
	t.Logf("consistent %v after the kill", time.Since(killed))
	for _, tn := range h.TargetsOf(g) {
		if home := h.Edges[tn].Config.Proxies[0].Name; !slices.Contains(victims, home) {
			continue
		}
		start := time.Now()
		if err := WaitFor(waitCtx(t, 20*time.Second), func() error {
			if at := joinedAt(h, tn, g); len(at) != 1 {
				return fmt.Errorf("target %s of %s joined at %v", tn, g, at)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("orphaned target %s (home %s) now on %s, joined at %v (+%v)", tn, h.Edges[tn].Config.Proxies[0].Name,
			attachedTo(h, tn), joinedAt(h, tn, g), time.Since(start))
	}
	// A client homed on the dead cluster moved and is served too.
	who, d := askUntil(t, h, "cl3", g, 10*time.Second, func(string) bool { return true })
	t.Logf("cl3 (home %s) attached to %s, answered by %s (%v of asking, %v after the kill)",
		h.Edges["cl3"].Config.Proxies[0].Name, attachedTo(h, "cl3"), who, d, time.Since(killed))
	waitConsistent(t, h, 20*time.Second)
}

// partitionShape has two clusters: p1,p3 in c1 and p2,p4 in c2; one group
// with a target on each proxy (t1 on p1 … t4 on p4); cl1 homed on p2 (c2),
// cl2 on p3 (c1).
var partitionShape = Options{Proxies: 4, Clusters: 2, Targets: 4, Groups: 1, Clients: 2}

// TestPartitionClustersThenHeal cuts the proxies of c1 off from those of c2
// (both ways) and heals the cut. The edges are in neither set: the cut is
// between the clusters (the inter-cluster links of the underlay), while each
// edge's access network still reaches every proxy, as when a backbone link
// fails. Each side must then declare the other dead and serve its own
// clients from its own targets; after the heal, everyone must see everyone
// alive again and the control plane must be consistent: nothing lost
// (every target joined, every RAP listing its JAPs) and nothing stale (no
// RAP entries left from the partition).
func TestPartitionClustersThenHeal(t *testing.T) {
	h := startLab(t, partitionShape)
	g := GroupN(0)
	a, b := proxiesIn(h, "c1"), proxiesIn(h, "c2")
	for _, c := range h.Names(config.RoleClient) {
		askUntil(t, h, c, g, 5*time.Second, func(string) bool { return true })
	}
	t.Logf("partitioning %v | %v", a, b)
	cut := time.Now()
	if err := h.Partition(a, b); err != nil {
		t.Fatal(err)
	}
	dA := waitViews(t, h, a, b, overlay.StateDead, 10*time.Second)
	dB := waitViews(t, h, b, a, overlay.StateDead, 10*time.Second)
	t.Logf("each side declared the other dead %v after the cut (c1 done at %v, c2 at +%v)", time.Since(cut), dA, dB)
	waitViews(t, h, a, a, overlay.StateAlive, time.Second)
	waitViews(t, h, b, b, overlay.StateAlive, time.Second)

	// Each side serves its own clients from targets joined on its side.
	sideOf := func(proxy string) []string {
		if slices.Contains(a, proxy) {
			return a
		}
		return b
	}
	for _, c := range h.Names(config.RoleClient) {
		side := sideOf(attachedTo(h, c))
		for i := range 3 {
			who, d := askUntil(t, h, c, g, 5*time.Second, func(tn string) bool {
				return slices.ContainsFunc(joinedAt(h, tn, g), func(p string) bool { return slices.Contains(side, p) })
			})
			if i == 0 {
				t.Logf("%s (on %s, side %v) served by %s, joined at %v, %v after asking (%v after the cut)",
					c, attachedTo(h, c), side, who, joinedAt(h, who, g), d, time.Since(cut))
			}
		}
	}
	// Each side's RAPs, by the hash over its own live proxies, know its JAPs.
	for _, p := range h.Proxies {
		live := p.Overlay.Live()
		if !slices.Equal(live, sideOf(p.Name)) {
			t.Fatalf("%s sees live %v during the partition, want %v", p.Name, live, sideOf(p.Name))
		}
	}

	healed := time.Now()
	h.Heal()
	all := append(append([]string(nil), a...), b...)
	d := waitViews(t, h, all, all, overlay.StateAlive, 15*time.Second)
	t.Logf("all proxies see each other alive again %v after the heal", d)
	waitConsistent(t, h, 30*time.Second)
	t.Logf("consistent %v after the heal", time.Since(healed))
	for _, tn := range h.TargetsOf(g) {
		if at := joinedAt(h, tn, g); len(at) != 1 {
			t.Fatalf("after the heal target %s is joined at %v", tn, at)
		}
	}
	for _, c := range h.Names(config.RoleClient) {
		who, d := askUntil(t, h, c, g, 5*time.Second, func(string) bool { return true })
		t.Logf("after the heal %s served by %s in %v", c, who, d)
	}
}

// TestPartialPartition cuts the link between clusters c1 and c2 while c3
// still reaches both. Nobody is declared dead (helpers in c3 vouch for
// each side), so nothing flaps; a c1 proxy stops using c2's JAPs for new
// flows, and its client, whose group has targets only in c2 and c3, is
// answered from c3. When the link heals, c2 is used again.
func TestPartialPartition(t *testing.T) {
	// p1, p4 in c1; p2, p5 in c2; p3, p6 in c3. The group's targets are
	// t2, t5 (c2) and t3, t6 (c3); t1 and t4 (c1) stay down. cl3 is on p4.
	h, log := startLabWith(t, Options{Proxies: 6, Clusters: 3, Targets: 6, Clients: 3, Groups: 1}, HarnessOptions{Hold: []string{"t1", "t4"}})
	ctx := testCtx(t)
	const client = "cl3"
	if h.Node(client).Home != "p4" {
		t.Fatalf("%s is on %s, want p4", client, h.Node(client).Home)
	}
	g := GroupN(0)
	c2 := []string{"t2", "t5"}
	deaths := func() int { return len(log.match(func(e overlay.Event) bool { return e.Kind == "dead" })) }
	before := deaths()
	cut := time.Now()
	if err := h.Partition([]string{"p1", "p4"}, []string{"p2", "p5"}); err != nil {
		t.Fatal(err)
	}
	// p4 notices the cut, and its client's new connections go to c3.
	if err := WaitFor(ctx, func() error {
		for range 6 {
			who, err := answerer(ctx, h, client, g)
			if err != nil {
				return err
			}
			if slices.Contains(c2, who) {
				return fmt.Errorf("answered by %s, behind the cut", who)
			}
		}
		return nil
	}); err != nil {
		for _, e := range log.match(func(e overlay.Event) bool {
			return e.Kind == "dead" || e.Kind == "alive" || e.Kind == "unreachable" || e.Kind == "reachable" || e.Kind == "move" || (e.Proxy == "p4" && (e.Kind == "resolve" || e.Kind == "resolved"))
		}) {
			t.Logf("%s %s %s %v %s", e.Proxy, e.Kind, e.Name, e.JAPs, e.Reason)
		}
		t.Logf("p4 members: %+v", h.Proxies["p4"].Overlay.Members())
		t.Fatal(err)
	}
	t.Logf("%s answered only from c3 %v after the cut", client, time.Since(cut).Round(time.Millisecond))
	// Stable: for two more seconds every request is answered, from c3, and
	// nobody dies.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		who, err := answerer(ctx, h, client, g)
		if err != nil || slices.Contains(c2, who) {
			t.Fatalf("after the cut: answered by %q (%v)", who, err)
		}
	}
	if n := deaths() - before; n != 0 {
		t.Fatalf("%d deaths declared over a cut link; want none (c3 reaches both sides)", n)
	}
	// p4's status says which proxies it is cut off from: c2's.
	var cutOff []string
	for _, m := range h.Proxies["p4"].Overlay.Members() {
		if m.Unreachable {
			cutOff = append(cutOff, m.Name)
		}
	}
	if !slices.Equal(cutOff, []string{"p2", "p5"}) {
		t.Errorf("p4 marks %v unreachable, want [p2 p5]", cutOff)
	}
	for _, p := range h.Proxies {
		if live := p.Overlay.Live(); len(live) != 6 {
			t.Errorf("%s sees %v alive, want all six", p.Name, live)
		}
	}
	healed := time.Now()
	h.Heal()
	if err := WaitFor(ctx, func() error {
		if len(log.match(func(e overlay.Event) bool { return e.Kind == "reachable" && e.Proxy == "p4" })) < 2 {
			return fmt.Errorf("p4 does not reach c2 again")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("p4 reaches c2 again %v after the heal", time.Since(healed).Round(time.Millisecond))
	if err := WaitFor(ctx, h.Consistent); err != nil {
		t.Fatal(err)
	}
}
