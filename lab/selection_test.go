package lab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// withGroupKeys is setGroupKeys for tests.
func withGroupKeys(t *testing.T, l *Lab, keys string, targets ...string) {
	t.Helper()
	if err := setGroupKeys(l, keys, targets...); err != nil {
		t.Fatal(err)
	}
}

// startSelectionLab starts a lab whose targets' groups carry keys.
func startSelectionLab(t *testing.T, shape Options, keys string, hold ...string) (*Harness, *eventLog) {
	var targets []string
	for i := range shape.Targets {
		targets = append(targets, fmt.Sprintf("t%d", i+1))
	}
	return startSelectionLabFor(t, shape, keys, targets, hold...)
}

// startSelectionLabFor is startSelectionLab for some targets only.
func startSelectionLabFor(t *testing.T, shape Options, keys string, targets []string, hold ...string) (*Harness, *eventLog) {
	t.Helper()
	return startLabWith(t, shape, HarnessOptions{Hold: hold,
		Generated: func(l *Lab) { withGroupKeys(t, l, keys, targets...) }})
}

// answerer asks g once from client over a fresh connection and returns the
// name of the target that answered. It gives up after 4 s: three SYNs (a
// first one may be lost while a busy IAP resolves the group).
func answerer(ctx context.Context, h *Harness, client string, g router.Group) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	ans, err := ask(cctx, h, client, g, "who")
	if err != nil {
		return "", err
	}
	name, _, _ := strings.Cut(ans, ": ")
	return name, nil
}

// waitAnswerer waits until client's new connections to g are answered by
// want, then checks the next few are too.
func waitAnswerer(t *testing.T, ctx context.Context, h *Harness, client string, g router.Group, want string) time.Duration {
	t.Helper()
	start := time.Now()
	if err := WaitFor(ctx, func() error {
		got, err := answerer(ctx, h, client, g)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("answered by %s, want %s", got, want)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s → %s: %v", client, g, err)
	}
	took := time.Since(start)
	for range 5 {
		if got, err := answerer(ctx, h, client, g); err != nil || got != want {
			t.Fatalf("%s → %s: answered by %q (%v) after %s did, want %s every time", client, g, got, err, want, want)
		}
	}
	return took
}

// TestProximity: three clusters, a target at each proxy; the client's IAP
// p2 is 1 ms from p1's cluster and 40 ms from p3's. New connections go to
// p2's own target while it lives, then to p1's (nearer), then to p3's.
func TestProximity(t *testing.T) {
	h, _ := startSelectionLab(t, Options{Proxies: 3, Clusters: 3, Targets: 3, Clients: 1, Groups: 1}, `select = "proximity"`)
	ctx := testCtx(t)
	g := GroupN(0)
	if iap := h.Home("cl1").Name; iap != "p2" {
		t.Fatalf("cl1 on %s, want p2", iap)
	}
	for _, pair := range [][2]string{{"p2", "p3"}, {"p3", "p2"}} {
		if err := h.SetDelay(pair[0], pair[1], 20*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if err := WaitFor(ctx, func() error {
		for _, m := range h.Proxies["p2"].Overlay.Members() {
			if m.Name == "p3" && m.RTT < 30*time.Millisecond {
				return fmt.Errorf("p2 measures p3 at %v", m.RTT)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitAnswerer(t, ctx, h, "cl1", g, "t2")
	h.Edges["t2"].Close()
	took := waitAnswerer(t, ctx, h, "cl1", g, "t1")
	t.Logf("t2 (local) gone: nearest t1 (p1) answers, %v after", took.Round(time.Millisecond))
	h.Edges["t1"].Close()
	took = waitAnswerer(t, ctx, h, "cl1", g, "t3")
	t.Logf("t1 gone: the far t3 (p3, 40 ms) answers, %v after", took.Round(time.Millisecond))
}

// TestAffinitySurvivesIAPChange: with select = "affinity", a client's TCP
// connection lives through its move to another IAP that has a target of
// the group itself, and its new connections reach the same target.
func TestAffinitySurvivesIAPChange(t *testing.T) {
	// t1 at p1, t2 at p2; cl2 on p3, which has no target.
	h, _ := startSelectionLab(t, Options{Proxies: 3, Clusters: 1, Targets: 2, Clients: 2, Groups: 1}, `select = "affinity"`)
	ctx := testCtx(t)
	g := GroupN(0)
	const c = "cl2"
	if err := waitLive(ctx, h, c, "p1", "p2", "p3"); err != nil {
		t.Fatal(err)
	}
	if iap := h.Edges[c].Attach.Current(); iap != "p3" {
		t.Fatalf("%s on %s, want p3", c, iap)
	}
	cv, err := h.DialTCP(ctx, c, g)
	if err != nil {
		t.Fatal(err)
	}
	defer cv.Close()
	ans, err := cv.Ask(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	x, _, _ := strings.Cut(ans, ": ")
	other := map[string]string{"t1": "t2", "t2": "t1"}[x]
	if other == "" {
		t.Fatalf("answer %q", ans)
	}
	for range 5 {
		if got, err := answerer(ctx, h, c, g); err != nil || got != x {
			t.Fatalf("new connection answered by %q (%v), want %s: no affinity", got, err, x)
		}
	}
	// Move the client to the proxy of the other target, whose own target
	// would win under proximity: cut it off from x's proxy, kill p3.
	xProxy, oProxy := h.Node(x).Home, h.Node(other).Home
	if err := h.Partition([]string{c}, []string{xProxy}); err != nil {
		t.Fatal(err)
	}
	h.Proxies["p3"].Close()
	if err := WaitFor(ctx, func() error {
		if cur := h.Edges[c].Attach.Current(); cur != oProxy {
			return fmt.Errorf("%s at %s", c, cur)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, func() error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		ans, err := cv.Ask(cctx, "two")
		if err != nil {
			return err
		}
		if ans != x+": two" {
			t.Fatalf("the connection was answered by %q after the move, want %s", ans, x)
		}
		return nil
	}); err != nil {
		t.Fatalf("the TCP connection did not survive the move to %s: %v", oProxy, err)
	}
	for range 5 {
		if got, err := answerer(ctx, h, c, g); err != nil || got != x {
			t.Fatalf("after the move, a new connection was answered by %q (%v), want %s", got, err, x)
		}
	}
	t.Logf("%s moved p3 → %s (which has %s); its connection and new ones stay on %s", c, oProxy, other, x)
}

// TestReplicate: each datagram to a replicate = 3 UDP group reaches three
// distinct targets, exactly once each; with replicate = 5 and 4 targets,
// all four.
func TestReplicate(t *testing.T) {
	for _, tc := range []struct {
		replicate, want int
	}{{3, 3}, {5, 4}} {
		t.Run(fmt.Sprint(tc.replicate), func(t *testing.T) {
			// Groups 2: the UDP group 1 has t2, t4, t6 and t8, on all proxies.
			h, _ := startSelectionLabFor(t, Options{Proxies: 3, Clusters: 1, Targets: 8, Clients: 1, Groups: 2}, fmt.Sprintf(`replicate = %d`, tc.replicate),
				[]string{"t2", "t4", "t6", "t8"})
			ctx := testCtx(t)
			g := GroupN(1)
			if g.Proto != router.ProtoUDP {
				t.Fatalf("%s is not UDP", g)
			}
			u := dialUDP(t, h, "cl1", g)
			// The first datagram may wait for a resolution: ask until one
			// round is complete, then count a fresh one exactly.
			if err := WaitFor(ctx, func() error {
				got, err := u.collect(ctx, "warm", 500*time.Millisecond)
				if err != nil {
					return err
				}
				if len(got) != tc.want {
					return fmt.Errorf("got %d answers", len(got))
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				msg := fmt.Sprintf("n%d", i)
				got, err := u.collect(ctx, msg, 500*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				seen := map[string]int{}
				for _, a := range got {
					name, rest, _ := strings.Cut(a, ": ")
					if rest != msg {
						t.Fatalf("answer %q to %q", a, msg)
					}
					seen[name]++
				}
				if len(got) != tc.want || len(seen) != tc.want {
					t.Fatalf("datagram %s reached %v, want %d distinct targets once each", msg, seen, tc.want)
				}
				if i == 0 {
					t.Logf("replicate=%d: one datagram reached %v", tc.replicate, sortedKeys(seen))
				}
			}
		})
	}
}

// collect sends one datagram and gathers every answer that arrives within
// quiet of the last one.
func (u *udpAsker) collect(ctx context.Context, msg string, quiet time.Duration) ([]string, error) {
	if _, err := u.c.Write([]byte(msg)); err != nil {
		return nil, err
	}
	var out []string
	buf := make([]byte, 2048)
	for ctx.Err() == nil {
		u.c.SetReadDeadline(time.Now().Add(quiet))
		n, err := u.c.Read(buf)
		if err != nil {
			break
		}
		if a := string(buf[:n]); strings.HasSuffix(a, ": "+msg) {
			out = append(out, a)
		}
	}
	return out, ctx.Err()
}

// TestConflictingPolicyRefused: the group's targets state the default
// policy; t4 (through p1, with t1) and t3 (through p3, alone there) state
// select = "load". Both are refused with the reason: t4 at once by its
// JAP, t3 once the group's RAPs tell its JAP the group's policy.
func TestConflictingPolicyRefused(t *testing.T) {
	for _, tc := range []struct {
		name, target, jap string
		want              string
	}{
		{"same JAP", "t4", "p1", "has policy select=proximity replicate=1 scope=any here"},
		{"other JAP", "t3", "p3", "has policy select=proximity replicate=1 scope=any (its RAPs say"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, log := startLabWith(t, Options{Proxies: 3, Clusters: 1, Targets: 5, Clients: 1, Groups: 1}, HarnessOptions{Hold: []string{tc.target},
				Generated: func(l *Lab) { withGroupKeys(t, l, `select = "load"`, tc.target) }})
			ctx := testCtx(t)
			if err := h.StartNode(tc.target); err != nil {
				t.Fatal(err)
			}
			if err := h.ServeTargets(); err != nil {
				t.Fatal(err)
			}
			refused := func(e overlay.Event) bool {
				return e.Kind == overlay.EventJoinRefused && e.Name == tc.target && strings.Contains(e.Reason, tc.want)
			}
			if err := WaitFor(ctx, func() error {
				if len(log.match(refused)) == 0 {
					return fmt.Errorf("%s not refused", tc.target)
				}
				return nil
			}); err != nil {
				for _, e := range log.match(func(e overlay.Event) bool { return e.Name == tc.target || e.Kind == "refuse" }) {
					t.Logf("%s %s %s %s", e.Proxy, e.Kind, e.Name, e.Reason)
				}
				t.Fatal(err)
			}
			t.Logf("%s was told: %s", tc.target, log.match(refused)[0].Reason)
			// Its status says so: refused by its JAP, and why.
			if gs := h.Edges[tc.target].Status().Edge.Groups; len(gs) != 1 || gs[0].State != "refused" || gs[0].JAP != tc.jap || !strings.Contains(gs[0].Reason, tc.want) {
				t.Errorf("%s's status: %+v, want refused by %s (%s)", tc.target, gs, tc.jap, tc.want)
			}
			if gs := h.Edges["t1"].Status().Edge.Groups; len(gs) != 1 || gs[0].State != "joined" || gs[0].JAP != "p1" || gs[0].Since.IsZero() {
				t.Errorf("t1's status: %+v, want joined at p1", gs)
			}
			for _, e := range log.match(func(e overlay.Event) bool { return e.Kind == "refuse" && e.Reason != "" }) {
				t.Logf("%s logged: %s", e.Proxy, e.Reason)
				break
			}
			g := GroupN(0)
			addrs := h.Edges[tc.target].Config.Address
			if err := WaitFor(ctx, func() error {
				for n, p := range h.Proxies {
					if slices.ContainsFunc(p.Router.Targets(g), func(a netip.AddrPort) bool { return slices.Contains(addrs, a.Addr()) }) {
						return fmt.Errorf("%s still lists %s", n, tc.target)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			for range 10 {
				if got, err := answerer(ctx, h, "cl1", g); err != nil || got == tc.target {
					t.Fatalf("a new connection was answered by %q (%v)", got, err)
				}
			}
		})
	}
}

// TestLoadWeights: t1 (weight 3) and t3 (weight 1) behind p1, select =
// "load": 40 connections held open split 30:10; t5 (weight 1) joins and
// takes the next new connections at once, being the least loaded.
func TestLoadWeights(t *testing.T) {
	shape := Options{Proxies: 2, Clusters: 1, Targets: 5, Clients: 1, Groups: 2}
	h, _ := startLabWith(t, shape, HarnessOptions{Hold: []string{"t5"},
		Generated: func(l *Lab) {
			withGroupKeys(t, l, "select = \"load\"\nweight = 3", "t1")
			withGroupKeys(t, l, "select = \"load\"\nweight = 1", "t3", "t5")
		}})
	ctx := testCtx(t)
	g := GroupN(0)
	if h.Node("cl1").Home != "p2" || h.Node("t1").Home != "p1" || h.Node("t3").Home != "p1" || h.Node("t5").Home != "p1" {
		t.Fatal("lab shape changed: want cl1 on p2, t1, t3, t5 on p1")
	}
	count := map[string]int{}
	open := func(n int) {
		t.Helper()
		for i := range n {
			cv, err := h.DialTCP(ctx, "cl1", g)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cv.Close() })
			ans, err := cv.Ask(ctx, fmt.Sprint("c", i))
			if err != nil {
				t.Fatal(err)
			}
			name, _, _ := strings.Cut(ans, ": ")
			count[name]++
		}
	}
	open(40)
	t.Logf("40 connections held open, weights t1:3 t3:1: %v", count)
	if d := count["t1"] - 30; d < -2 || d > 2 || count["t1"]+count["t3"] != 40 {
		t.Fatalf("split %v, want t1 30±2, t3 10±2", count)
	}
	startTarget(t, ctx, h, "t5")
	clear(count)
	open(10)
	t.Logf("the next 10 after t5 (weight 1) joined: %v", count)
	if count["t5"] < 8 {
		t.Fatalf("t5 got %d of the next 10 connections, want ≥ 8 (it is the least loaded)", count["t5"])
	}
}

// TestRandomUniform: select = "random" over t1 (at p1) and t3, t5 (at p3,
// p2): 600 new connections from a client on p2 spread uniformly over the
// three, across JAPs. Chi-square with 2 degrees of freedom against the
// 0.1 % critical value, 13.82: at 1 % (9.21) a uniform source fails one run
// in a hundred by design; router.TestRandomUniform checks the 1 % level
// with fixed seeds. A sample that fails is taken once more: an IAP rightly
// sends no new flow to a JAP it suspects, and under -race on a loaded
// machine a CI-like run saw 168 / 186 / 246 (the local JAP's t5 ahead);
// a real bias fails both samples.
func TestRandomUniform(t *testing.T) {
	h, _ := startSelectionLabFor(t, Options{Proxies: 3, Clusters: 1, Targets: 6, Clients: 1, Groups: 2}, `select = "random"`, []string{"t1", "t3", "t5"})
	g := GroupN(0)
	const n = 600
	for sample := 1; ; sample++ {
		ctx := testCtx(t)
		count := map[string]int{}
		for range n {
			who, err := answerer(ctx, h, "cl1", g)
			if err != nil {
				t.Fatal(err)
			}
			count[who]++
		}
		chi2 := 0.0
		for _, name := range []string{"t1", "t3", "t5"} {
			d := float64(count[name]) - n/3.0
			chi2 += d * d / (n / 3.0)
		}
		t.Logf("sample %d, %d connections: %v, chi-square %.2f", sample, n, count, chi2)
		if len(count) == 3 && chi2 <= 13.82 {
			return
		}
		if sample == 2 {
			t.Fatalf("not uniform: %v (chi-square %.2f > 13.82), twice", count, chi2)
		}
	}
}

// TestScopeSameCluster: scope = "same-cluster" keeps new flows in the
// client's proxy's cluster, and a target calling its own group never gets
// its own packets: with no other target in its cluster, it gets none.
func TestScopeSameCluster(t *testing.T) {
	// Group 0: t1 (p1, c1), t3 (p3, c1), t5 (p1, c1)... and t2, t4 in the
	// other group. Clusters: p1, p3 in c1; p2, p4 in c2.
	h, _ := startSelectionLabFor(t, Options{Proxies: 4, Clusters: 2, Targets: 6, Clients: 2, Groups: 2}, `scope = "same-cluster"`, []string{"t1", "t3", "t5"})
	ctx := testCtx(t)
	g := GroupN(0)
	inGroup := h.TargetsOf(g)
	var c1, c2 []string
	for _, tn := range inGroup {
		if cl := h.Proxies[h.Node(tn).Home].Config.Cluster; cl == "c1" {
			c1 = append(c1, tn)
		} else {
			c2 = append(c2, tn)
		}
	}
	t.Logf("targets of %s: c1 %v, c2 %v", g, c1, c2)
	for _, c := range h.Names(config.RoleClient) {
		cluster := h.Home(c).Config.Cluster
		want := c1
		if cluster == "c2" {
			want = c2
		}
		for range 10 {
			who, err := answerer(ctx, h, c, g)
			if len(want) == 0 {
				if err == nil {
					t.Fatalf("%s (on %s, %s) reached %s; its cluster has no target", c, h.Home(c).Name, cluster, who)
				}
				break
			}
			if err != nil || !slices.Contains(want, who) {
				t.Fatalf("%s (on %s, %s) answered by %q (%v), want one of %v", c, h.Home(c).Name, cluster, who, err, want)
			}
		}
	}
	// A target of the group calls it: never itself, only others of its cluster.
	for _, tn := range inGroup {
		cluster := h.Proxies[h.Node(tn).Home].Config.Cluster
		others := slices.DeleteFunc(slices.Clone(map[string][]string{"c1": c1, "c2": c2}[cluster]), func(s string) bool { return s == tn })
		for range 5 {
			who, err := answerer(ctx, h, tn, g)
			if len(others) == 0 {
				if err == nil {
					t.Fatalf("%s reached %s; no other target in %s", tn, who, cluster)
				}
				break
			}
			if err != nil || !slices.Contains(others, who) {
				t.Fatalf("%s calling its group: answered by %q (%v), want one of %v", tn, who, err, others)
			}
		}
	}
}
