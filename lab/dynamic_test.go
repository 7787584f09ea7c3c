package lab

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
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
	if err := h.StartNode("t4"); err != nil {
		t.Fatal(err)
	}
	if err := h.ServeTargets(); err != nil {
		t.Fatal(err)
	}
	if err := h.Edges["t4"].Target.WaitJoined(ctx); err != nil {
		t.Fatal(err)
	}
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
		want string
	}{
		{"name taken", func(t *testing.T, l *Lab) {
			rewrite(t, l.Path("p4.toml"), `name = "p4"`, `name = "p2"`)
		}, "refused"},
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
			log := &eventLog{}
			h, err := Start(dynamicShape, HarnessOptions{Dir: t.TempDir(), Logf: t.Logf, OnEvent: log.add, Hold: []string{"p4", "t4"},
				Generated: func(l *Lab) { tc.edit(t, l) }})
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
		t.Fatal(err)
	}
}
