package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// dynamicShape: p4 is a newcomer that knows only p1 (its seed) and no
// other proxy's file names it; t4's first proxy is p4.
var dynamicShape = Options{Proxies: 4, Clusters: 2, Targets: 4, Clients: 2, Groups: 2, Seeded: 1}

// allKnowAlive checks that every running proxy sees every name alive.
func allKnowAlive(h *Harness, names []string) error {
	for n, p := range h.Proxies {
		live := p.Overlay.Live()
		for _, want := range names {
			if !slices.Contains(live, want) {
				return fmt.Errorf("%s does not see %s alive (live %v)", n, want, live)
			}
		}
	}
	return nil
}

// TestNewProxyJoinsThroughASeed starts p4 with only p1 in its file, after
// the rest of the overlay is up: p4 proves the mesh key to p1, everyone
// learns p4 and p4 learns everyone, all WireGuard sessions come up without
// a configured peer, RAP duties move onto p4, and a target that attaches to
// p4 is reached by every client through p4 as its JAP.
func TestNewProxyJoinsThroughASeed(t *testing.T) {
	h, log := startLabWith(t, dynamicShape, HarnessOptions{Hold: []string{"p4", "t4"}})
	ctx := testCtx(t)
	all := h.Names(config.RoleProxy)
	if len(h.Proxies["p1"].Overlay.Known()) != 3 {
		t.Fatalf("before p4 starts, p1 knows %d proxies, want 3", len(h.Proxies["p1"].Overlay.Known()))
	}

	start := time.Now()
	if err := h.StartNode("p4"); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, func() error { return allKnowAlive(h, all) }); err != nil {
		dumpLab(t, h)
		t.Fatalf("p4 never known alive everywhere: %v", err)
	}
	t.Logf("p4 alive at every proxy, and every proxy at p4, %v after its start", time.Since(start).Round(time.Millisecond))
	if got := log.match(func(e overlay.Event) bool { return e.Kind == "admitted" && e.Proxy == "p4" }); len(got) == 0 {
		t.Errorf("p4 logged no admission")
	}
	// Every pair has a WireGuard session, though no file names p4 but its own.
	if err := WaitFor(ctx, func() error {
		for _, n := range all {
			for peer, st := range peerTraffic(t, h, h.Proxies[n].Device) {
				if slices.Contains(all, peer) && !st.handshake {
					return fmt.Errorf("%s has no session with peer %s", n, peer)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, h.Consistent); err != nil {
		dumpLab(t, h)
		t.Fatalf("not consistent after p4 joined: %v", err)
	}
	t.Logf("consistent %v after p4's start", time.Since(start).Round(time.Millisecond))

	// A target behind p4: its JAP is p4, and once the group's other target
	// (t2, at p2) is gone, a client on p3 reaches it through p3 → p4.
	startTarget(t, ctx, h, "t4")
	g := GroupN(1) // t2 and t4
	if jap := targetJoinedAt(h, "t4", g); jap == nil || jap.Name != "p4" {
		t.Fatalf("t4 joined at %v, want p4", jap)
	}
	h.Edges["t2"].Close()
	for _, c := range []string{"cl2"} {
		if iap := h.Home(c).Name; iap != "p3" {
			t.Fatalf("%s is on %s, want p3", c, iap)
		}
		if err := WaitFor(ctx, func() error {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			ans, err := ask(cctx, h, c, g, "hi")
			if err != nil {
				return err
			}
			if ans != "t4: hi" {
				return fmt.Errorf("answered %q", ans)
			}
			return nil
		}); err != nil {
			t.Fatalf("client %s never reached t4 through p4: %v", c, err)
		}
	}
}

// TestNewProxyRefused: a newcomer that claims a member's name with another
// key is refused, with the reason logged at both ends, and nobody takes it
// in; one with the wrong mesh key is not answered at all.
func TestNewProxyRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, l *Lab)
		want overlay.EventKind
	}{
		{"name taken", func(t *testing.T, l *Lab) {
			rewrite(t, l.Path("p4.toml"), `name = "p4"`, `name = "p2"`)
		}, overlay.EventNotAdmitted},
		{"wrong mesh key", func(t *testing.T, l *Lab) {
			k, err := config.GeneratePrivateKey()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(l.Path("p4.mesh.key"), []byte(k.String()+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			rewrite(t, l.Path("p4.toml"), `mesh_key_file = "mesh.key"`, `mesh_key_file = "p4.mesh.key"`)
		}, "unadmitted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &eventLog{start: time.Now()}
			h, err := Start(dynamicShape, HarnessOptions{Dir: t.TempDir(), Logf: t.Logf, OnEvent: log.add, Hold: []string{"p4", "t4"}, Attach: labAttach,
				Generated: withRaceTimers(t, func(l *Lab) { tc.edit(t, l) })})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(h.Close)
			if err := h.StartNode("p4"); err != nil {
				t.Fatal(err)
			}
			ctx := testCtx(t)
			if err := WaitFor(ctx, func() error {
				if len(log.match(func(e overlay.Event) bool { return e.Kind == tc.want })) == 0 {
					return fmt.Errorf("no %s event", tc.want)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			for _, e := range log.match(func(e overlay.Event) bool { return e.Kind == tc.want || e.Kind == "refuse" }) {
				t.Logf("%s: %s %s: %s", e.Proxy, e.Kind, e.Name, e.Reason)
			}
			for _, n := range []string{"p1", "p2", "p3"} {
				if k := len(h.Proxies[n].Overlay.Known()); k != 3 {
					t.Errorf("%s knows %d proxies, want 3", n, k)
				}
			}
		})
	}
}

// rewrite replaces old by new in a file, which must contain old.
func rewrite(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestNewProxyJoinsDuringAPartition: p4 joins through p1 while p3 is cut
// off from p1 and p2. p3 cannot hear of p4 then; when the partition heals,
// the proxies that learned p4 meanwhile tell p3, and everyone knows
// everyone alive.
func TestNewProxyJoinsDuringAPartition(t *testing.T) {
	h, _ := startLabWith(t, dynamicShape, HarnessOptions{Hold: []string{"p4", "t4"}})
	ctx := testCtx(t)
	if err := h.Partition([]string{"p3"}, []string{"p1", "p2"}); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, func() error {
		for _, n := range []string{"p1", "p2"} {
			if slices.Contains(h.Proxies[n].Overlay.Live(), "p3") {
				return fmt.Errorf("%s still sees p3", n)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.StartNode("p4"); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, func() error {
		for _, n := range []string{"p1", "p2", "p4"} {
			if got := h.Proxies[n].Overlay.Live(); !slices.Equal(got, []string{"p1", "p2", "p4"}) {
				return fmt.Errorf("%s sees %v alive", n, got)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(h.Proxies["p3"].Overlay.Known(), func(m overlay.Member) bool { return m.Name == "p4" }) {
		t.Fatal("p3 heard of p4 through the partition")
	}
	healed := time.Now()
	h.Heal()
	if err := WaitFor(ctx, func() error { return allKnowAlive(h, []string{"p1", "p2", "p3", "p4"}) }); err != nil {
		dumpLab(t, h)
		t.Fatal(err)
	}
	t.Logf("all four alive everywhere %v after the heal", time.Since(healed).Round(time.Millisecond))
	if err := WaitFor(ctx, h.Consistent); err != nil {
		dumpLab(t, h)
		dumpViews(t, h)
		t.Fatal(err)
	}
}

// learnShape: p1 and two newcomers, p2 (c2) and p3 (c1), that join through
// p1; t1, cl1 and cl2 attach to p1 (see TestEdgesLearnNewProxies).
var learnShape = Options{Proxies: 3, Clusters: 2, Targets: 1, Clients: 2, Groups: 1, Seeded: 2}

// TestEdgesLearnNewProxies: edges whose files name only p1 learn, from p1,
// the newcomers that would admit them: t1 learns p2 and p3, cl1 only p2
// (p3's file does not list cl1), cl2 none (learn_proxies = false). When p1
// dies, cl1 moves to p2 and t1 to a newcomer, and cl1 reaches t1 again
// through proxies neither file names.
func TestEdgesLearnNewProxies(t *testing.T) {
	h, log := startLabWith(t, learnShape, HarnessOptions{Hold: []string{"p2", "p3"}, Generated: func(l *Lab) {
		for _, e := range []string{"t1", "cl1", "cl2"} {
			keepBlocks(t, l.Path(e+".toml"), func(block string) bool {
				return !strings.HasPrefix(block, "[[proxy]]") || strings.Contains(block, `name = "p1"`)
			})
		}
		rewrite(t, l.Path("cl2.toml"), "keepalive =", "learn_proxies = false\nkeepalive =")
		keepBlocks(t, l.Path("p3.toml"), func(block string) bool {
			return !strings.HasPrefix(block, "[[edge]]") || !strings.Contains(block, `name = "cl1"`)
		})
	}})
	ctx := testCtx(t)
	g := GroupN(0)
	if _, err := ask(ctx, h, "cl1", g, "hello"); err != nil {
		t.Fatalf("cl1 through p1: %v", err)
	}
	if h.Edges["cl2"].Attach != nil {
		t.Errorf("cl2 (one proxy, learn_proxies = false) runs an attacher")
	}

	start := time.Now()
	for _, n := range []string{"p2", "p3"} {
		if err := h.StartNode(n); err != nil {
			t.Fatal(err)
		}
	}
	// p1 knows what the newcomers admit.
	p1 := h.Proxies["p1"].Overlay
	if err := WaitFor(ctx, func() error {
		for edge, want := range map[string][]string{"t1": {"p1", "p3", "p2"}, "cl1": {"p1", "p2"}} {
			if got := p1.Admitting(h.Edges[edge].Config.PublicKey); !slices.Equal(got, want) {
				return fmt.Errorf("p1 says %v admit %s, want %v", got, edge, want)
			}
		}
		return nil
	}); err != nil {
		dumpLab(t, h)
		t.Fatal(err)
	}
	// The edges learn them, and probe them live.
	if err := WaitFor(ctx, func() error {
		return errors.Join(liveCandidates(h, "t1", "p1", "p2", "p3"), liveCandidates(h, "cl1", "p1", "p2"))
	}); err != nil {
		dumpLab(t, h)
		t.Fatal(err)
	}
	t.Logf("edges learned the newcomers and found them live %v after they started", time.Since(start).Round(time.Millisecond))
	for _, e := range []string{"t1", "cl1"} {
		if len(log.match(func(ev overlay.Event) bool {
			return ev.Kind == "learned" && ev.Name == e && strings.HasSuffix(ev.Reason, "told by p1")
		})) == 0 {
			t.Errorf("no learned event for %s", e)
		}
	}

	t.Logf("cl1 reached t1 again %v after p1 was killed", killThenAsk(t, ctx, h, "p1", "cl1", g))
	if cur := h.Edges["cl1"].Attach.Current(); cur != "p2" {
		t.Errorf("cl1 is on %s, want p2", cur)
	}
	if cur := h.Edges["t1"].Attach.Current(); cur != "p2" && cur != "p3" {
		t.Errorf("t1 is on %s, want a newcomer", cur)
	}
	if err := WaitFor(ctx, h.Consistent); err != nil {
		dumpLab(t, h)
		t.Fatal(err)
	}
	// Never told of p3, cl1 has not learned it (p2 answers it now too).
	for _, c := range h.Edges["cl1"].Attach.Status().Candidates {
		if c.Name == "p3" {
			t.Errorf("cl1 learned p3, whose file does not admit it")
		}
	}
}

// keepBlocks keeps only the blank-line-separated blocks of a file that
// keep accepts.
func keepBlocks(t *testing.T, path string, keep func(block string) bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, block := range strings.Split(string(b), "\n\n") {
		if keep(block) {
			out = append(out, block)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestIPv6OnlyEdgeLearns: an edge with only an IPv6 overlay address probes
// and asks its proxies at their IPv6 addresses, learns a newcomer, and
// reaches an IPv6 group through it when its only configured proxy dies.
func TestIPv6OnlyEdgeLearns(t *testing.T) {
	shape := Options{Proxies: 2, Clusters: 1, Targets: 1, Clients: 1, Groups: 1, Seeded: 1, IPv6: true}
	h, _ := startLabWith(t, shape, HarnessOptions{Hold: []string{"p2"}, Generated: func(l *Lab) {
		for _, e := range []string{"t1", "cl1"} {
			keepBlocks(t, l.Path(e+".toml"), func(block string) bool {
				return !strings.HasPrefix(block, "[[proxy]]") || strings.Contains(block, `name = "p1"`)
			})
		}
		rewrite(t, l.Path("cl1.toml"), `address = ["100.64.2.1", "fd64::2:1"]`, `address = ["fd64::2:1"]`)
	}})
	ctx := testCtx(t)
	g := GroupN6(0)
	if _, err := ask(ctx, h, "cl1", g, "hello"); err != nil {
		t.Fatalf("cl1 through p1: %v", err)
	}
	if err := h.StartNode("p2"); err != nil {
		t.Fatal(err)
	}
	// Both edges learn p2 (t1 too, or it could not follow when p1 dies).
	if err := WaitFor(ctx, func() error {
		return errors.Join(liveCandidates(h, "t1", "p1", "p2"), liveCandidates(h, "cl1", "p1", "p2"))
	}); err != nil {
		dumpLab(t, h)
		t.Fatal(err)
	}
	for _, c := range h.Edges["cl1"].Attach.Status().Candidates {
		if !c.Addr.Is6() {
			t.Errorf("cl1 probes %s at %v", c.Name, c.Addr)
		}
	}
	killThenAsk(t, ctx, h, "p1", "cl1", g)
	if cur := h.Edges["cl1"].Attach.Current(); cur != "p2" {
		t.Errorf("cl1 is on %s, want p2", cur)
	}
}

// liveCandidates says how edge's live candidates differ from want (sorted).
func liveCandidates(h *Harness, edge string, want ...string) error {
	var live []string
	for _, c := range h.Edges[edge].Attach.Status().Candidates {
		if c.Live {
			live = append(live, c.Name)
		}
	}
	slices.Sort(live)
	if !slices.Equal(live, want) {
		return fmt.Errorf("%s has live candidates %v, want %v", edge, live, want)
	}
	return nil
}

// killThenAsk kills proxy victim and waits until client's requests to g
// are answered again; it returns how long that took.
func killThenAsk(t *testing.T, ctx context.Context, h *Harness, victim, client string, g router.Group) time.Duration {
	t.Helper()
	if err := h.KillProxy(victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := WaitFor(ctx, func() error {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := ask(actx, h, client, g, "again")
		return err
	}); err != nil {
		dumpLab(t, h)
		t.Fatalf("%s never reached %s after %s died: %v", client, g, victim, err)
	}
	return time.Since(killed).Round(time.Millisecond)
}
