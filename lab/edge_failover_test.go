package lab

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// moves lists the "move" events of an edge.
func moves(log *eventLog, edge string) []overlay.Event {
	return log.match(func(e overlay.Event) bool { return e.Kind == "move" && e.Name == edge })
}

// waitLive waits until edge sees every named candidate live.
func waitLive(ctx context.Context, h *Harness, edge string, names ...string) error {
	return WaitFor(ctx, func() error {
		for _, c := range h.Edges[edge].Attach.Status().Candidates {
			if slices.Contains(names, c.Name) && !c.Live {
				return fmt.Errorf("%s does not see %s live yet", edge, c.Name)
			}
		}
		return nil
	})
}

// askFresh asks g from a new flow each try (so an IAP may pick another JAP)
// until an answer comes or ctx ends.
func askFresh(ctx context.Context, h *Harness, from string, g router.Group, msg string) (string, error) {
	for {
		try, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		ans, err := ask(try, h, from, g, msg)
		cancel()
		if err == nil || ctx.Err() != nil {
			return ans, err
		}
	}
}

func TestEdgeProbesEveryCandidate(t *testing.T) {
	t.Parallel()
	h := startLab(t, Options{Proxies: 3, Clusters: 1, Targets: 1, Clients: 1, Groups: 1})
	ctx := testCtx(t)
	for _, edge := range []string{"t1", "cl1"} {
		if err := waitLive(ctx, h, edge, "p1", "p2", "p3"); err != nil {
			t.Fatal(err)
		}
		st := h.Edges[edge].Attach.Status()
		if st.Current != h.Node(edge).Home {
			t.Errorf("%s attached to %s, want its home %s", edge, st.Current, h.Node(edge).Home)
		}
		for _, c := range st.Candidates {
			t.Logf("%s: %s %v live=%v current=%v", edge, c.Name, c.RTT, c.Live, c.Current)
		}
	}
}

// The client's IAP dies: the client moves to another proxy and its requests
// are answered again.
func TestClientFollowsAnycastWhenIAPDies(t *testing.T) {
	t.Parallel()
	// t1 (group 0) lives at p1, t2 (group 1) at p2, cl3 at p4: killing p4
	// kills only cl3's IAP.
	h, log := startLabEvents(t, Options{Proxies: 4, Clusters: 1, Targets: 2, Clients: 3, Groups: 2})
	ctx := testCtx(t)
	if err := waitLive(ctx, h, "cl3", "p1", "p2", "p3", "p4"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := ask(ctx, h, "cl3", GroupN(i), "before"); err != nil {
			t.Fatal(err)
		}
	}
	iap := h.Edges["cl3"].Attach.Current()
	if iap != "p4" {
		t.Fatalf("cl3 attached to %s, want p4", iap)
	}
	killed := time.Now()
	h.Proxies[iap].Close()
	for i := 0; i < 2; i++ {
		g := GroupN(i)
		ans, err := askFresh(ctx, h, "cl3", g, "after")
		if err != nil {
			for _, e := range log.match(func(overlay.Event) bool { return true }) {
				t.Logf("event %+v", e)
			}
			t.Logf("cl3: %+v", h.Edges["cl3"].Attach.Status())
			t.Fatalf("%s after its IAP died: %v", g, err)
		}
		answeredBy(t, ans, "after", targetsOf(h, g))
		took := time.Since(killed)
		t.Logf("%s answered %v after %s died (cl3 now at %s)", g, took, iap, h.Edges["cl3"].Attach.Current())
		// The goal is ≤ 2 s (logged); the bound only tells failover
		// from the slow fallbacks (keepalive timeouts, WireGuard's retries).
		if i == 0 && took > 5*time.Second {
			t.Errorf("kill → first answer took %v: not failover but a fallback timer", took)
		}
	}
	if ms := moves(log, "cl3"); len(ms) != 1 {
		t.Errorf("cl3 moved %d times, want once: %+v", len(ms), ms)
		t.Logf("cl3: %+v", h.Edges["cl3"].Attach.Status())
	} else {
		t.Logf("move: %s", ms[0].Reason)
	}
}

// The target's JAP dies: the target moves, joins again through its new
// proxy, and clients reach it there.
func TestTargetRejoinsWhenJAPDies(t *testing.T) {
	t.Parallel()
	// t1 lives at p1 (its JAP); cl1 at p2, which has not resolved the group
	// before p1 dies: the other proxies do not learn of deaths yet, so an
	// IAP holding a cached JAP list that names p1 would keep using it until
	// the cache expires.
	h, log := startLabEvents(t, Options{Proxies: 3, Clusters: 1, Targets: 1, Clients: 1, Groups: 1})
	ctx := testCtx(t)
	if err := waitLive(ctx, h, "t1", "p1", "p2", "p3"); err != nil {
		t.Fatal(err)
	}
	jap := h.Edges["t1"].Attach.Current()
	if jap != "p1" {
		t.Fatalf("t1 attached to %s, want p1", jap)
	}
	t1 := addr4Of(t, h, "t1")
	killed := time.Now()
	h.Proxies[jap].Close()
	var newJAP string
	err := WaitFor(ctx, func() error {
		for name, p := range h.Proxies {
			if name == jap {
				continue
			}
			if slices.ContainsFunc(p.Router.Targets(GroupN(0)), func(a netip.AddrPort) bool { return a.Addr() == t1 }) {
				newJAP = name
				return nil
			}
		}
		return fmt.Errorf("t1 not registered at another proxy")
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(killed)
	t.Logf("t1 registered at %s %v after %s died", newJAP, took, jap)
	if took > 5*time.Second { // goal ≤ 2 s, logged; see above
		t.Errorf("kill → registered at the new JAP took %v: not failover but a fallback timer", took)
	}
	if cur := h.Edges["t1"].Attach.Current(); cur != newJAP {
		t.Errorf("t1 attached to %s but registered at %s", cur, newJAP)
	}
	if err := h.Edges["t1"].Target.WaitJoined(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1; i++ {
		g := GroupN(i)
		ans, err := askFresh(ctx, h, "cl1", g, "after")
		if err != nil {
			t.Fatalf("%s after t1's JAP died: %v", g, err)
		}
		answeredBy(t, ans, "after", []string{"t1"})
		t.Logf("cl1 → %s answered %v after %s died", g, time.Since(killed), jap)
	}
	if ms := moves(log, "t1"); len(ms) != 1 {
		t.Errorf("t1 moved %d times, want once: %+v", len(ms), ms)
	}
	rejoins := log.match(func(e overlay.Event) bool { return e.Kind == "rejoin" && e.Name == "t1" })
	t.Logf("t1 rejoin events: %d", len(rejoins))
}

// With equal RTTs an edge stays put; after its home proxy comes back it
// stays where it is unless home is clearly better.
func TestEdgeDoesNotFlap(t *testing.T) {
	// Not parallel: RTTs on a loaded machine differ by more than the margin.
	h, log := startLabEvents(t, Options{Proxies: 3, Clusters: 1, Targets: 1, Clients: 1, Groups: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := waitLive(ctx, h, "cl1", "p1", "p2", "p3"); err != nil {
		t.Fatal(err)
	}
	hold := 3 * time.Second
	time.Sleep(hold) // watching: nothing may happen
	if ms := moves(log, "cl1"); len(ms) != 0 {
		t.Fatalf("cl1 moved %d times in %v with every proxy up: %+v", len(ms), hold, ms)
	}
	t.Logf("no moves in %v: %+v", hold, h.Edges["cl1"].Attach.Status().Candidates)

	home := h.Edges["cl1"].Attach.Current()
	h.Proxies[home].Close()
	if err := WaitFor(ctx, func() error {
		if h.Edges["cl1"].Attach.Current() == home {
			return fmt.Errorf("cl1 still at %s", home)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	away := h.Edges["cl1"].Attach.Current()
	cfg, err := config.LoadProxy(filepath.Join(h.Dir, h.Node(home).Config))
	if err != nil {
		t.Fatal(err)
	}
	p, err := node.StartProxy(cfg, node.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	restarted := time.Now()
	// The edge drops its stale session with a dead proxy, so a restarted
	// one is seen within about a second (WireGuard alone takes ~15 s).
	liveCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := waitLive(liveCtx, h, "cl1", home); err != nil {
		t.Fatal(err)
	}
	t.Logf("cl1 sees %s live again %v after its restart", home, time.Since(restarted))
	time.Sleep(hold)
	st := h.Edges["cl1"].Attach.Status()
	ms := moves(log, "cl1")
	t.Logf("after %s came back: at %s, %d moves, %+v", home, st.Current, len(ms), st.Candidates)
	// Loopback RTTs are equal within noise: moving back home is not clearly
	// better. (A move between the others would be a measured gain, not a flap.)
	for _, m := range ms[1:] {
		if m.Proxy == home {
			t.Errorf("cl1 moved back to %s at equal RTT: %+v", home, ms)
		}
	}
	if len(ms) > 2 {
		t.Errorf("cl1 moved %d times (now at %s, was at %s): %+v", len(ms), st.Current, away, ms)
	}
}

// TestEdgeStaysOnSlowProxy: the path from a client to its proxy slows
// from loopback speed to 1.2 probe timeouts, while the other proxy
// answers at once. The timeout is held fixed here (MaxTimeout = Timeout;
// TestAttacherTimeoutFollowsRTT has it widen), so every probe of the slow
// path is counted lost. The answers still come, late, and show the proxy
// lives: the client stays, its requests are answered, and the proxy's
// RTT grows to the new delay. (It may move later for speed: the other
// proxy is clearly closer now.) Counting only losses, the client would
// have left after three.
func TestEdgeStaysOnSlowProxy(t *testing.T) {
	t.Parallel()
	floor := labAttach.WithDefaults().Timeout
	fixed := labAttach
	fixed.Timeout, fixed.MaxTimeout = floor, floor
	h, log := startLabWith(t, Options{Proxies: 2, Clusters: 1, Targets: 1, Clients: 1, Groups: 1}, HarnessOptions{Attach: fixed})
	ctx := testCtx(t)
	if err := waitLive(ctx, h, "cl1", "p1", "p2"); err != nil {
		t.Fatal(err)
	}
	g := GroupN(0)
	if _, err := ask(ctx, h, "cl1", g, "before"); err != nil {
		t.Fatal(err)
	}
	cur := h.Edges["cl1"].Attach.Current()
	delay := floor * 6 / 5
	if err := h.SetDelay("cl1", cur, delay); err != nil {
		t.Fatal(err)
	}
	slowed := time.Now()
	for i := 0; time.Since(slowed) < 4*time.Second; i++ {
		msg := fmt.Sprintf("slow %d", i)
		ans, err := ask(ctx, h, "cl1", g, msg)
		if err != nil {
			t.Fatalf("%s over the slow path: %v", msg, err)
		}
		answeredBy(t, ans, msg, targetsOf(h, g))
	}
	// (After Hold, 5 s, a move for speed is right: the other proxy is
	// clearly closer now.)
	for _, m := range moves(log, "cl1") {
		if strings.HasSuffix(m.Reason, "(dead)") {
			t.Fatalf("cl1 left %s for dead, but its answers only came %v late: %+v", cur, delay, m)
		}
	}
	for _, c := range h.Edges["cl1"].Attach.Status().Candidates {
		if c.Name != cur {
			continue
		}
		t.Logf("%s after 4 s at %v more: %+v", cur, delay, c)
		if !c.Live || c.RTT < delay/2 || c.Late == 0 {
			t.Errorf("%s: live %v, RTT %v, %d late answers; want live with the late answers' RTT (about %v)", cur, c.Live, c.RTT, c.Late, delay)
		}
	}
}

// Lab tests run many labs at once under -race, where loopback RTTs swing by
// tens of milliseconds: voluntary moves need a gain no real difference here
// reaches, so only failures move edges. Under -race, beside the other
// packages' tests on 2 cores, answers also stall for up to 1.3 s now and
// then (a run's probes: p99 370 ms, p99.9 680 ms, late ones up to 1.3 s),
// and edges moved off live proxies both ways at once: there a probe waits
// 500-700 ms, so a proxy is left after 1.5-2.1 s of
// silence instead of 0.6 s. (Up to the default 1 s, the late answers'
// RTT samples widened the wait to where a dead IAP was left 3 s after it
// died, and a client's first answer came 5.05 s after.) Without -race,
// failover timing is the default's.
var labAttach = func() edge.AttachConfig {
	c := edge.AttachConfig{MinGain: 200 * time.Millisecond}
	if raceEnabled {
		c.Timeout, c.MaxTimeout = 500*time.Millisecond, 700*time.Millisecond
	}
	return c
}()

// A target that loses only its own path to its JAP moves to another proxy;
// the old JAP, alive for everyone else, must drop it at once (the target
// tells it at its overlay address), not after its 15 s keepalive timeout,
// since it would otherwise keep handing the target flows the target no
// longer accepts from it.
func TestOldJAPDropsATargetThatMoved(t *testing.T) {
	t.Parallel()
	h := startLab(t, Options{Proxies: 3, Clusters: 1, Targets: 1, Clients: 1, Groups: 1})
	ctx := testCtx(t)
	if err := waitLive(ctx, h, "t1", "p1", "p2", "p3"); err != nil {
		t.Fatal(err)
	}
	old := h.Edges["t1"].Attach.Current()
	t1 := addr4Of(t, h, "t1")
	cut := time.Now()
	if err := h.Partition([]string{"t1"}, []string{old}); err != nil {
		t.Fatal(err)
	}
	// Within the target's keepalive timeout the old JAP must have let go.
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := WaitFor(dctx, func() error {
		if slices.ContainsFunc(h.Proxies[old].Router.Targets(GroupN(0)), func(a netip.AddrPort) bool { return a.Addr() == t1 }) {
			return fmt.Errorf("%s still has t1", old)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s dropped t1 %v after t1 lost its path to it", old, time.Since(cut))
	now := h.Edges["t1"].Attach.Current()
	if now == old {
		t.Fatalf("t1 is still attached to %s", old)
	}
	if err := h.Edges["t1"].Target.WaitJoined(ctx); err != nil {
		t.Fatal(err)
	}
	// Every client, wherever its IAP, reaches t1 through its new JAP.
	for i := 0; i < 5; i++ {
		ans, err := h.AskTCP(ctx, "cl1", GroupN(0), "moved")
		if err != nil {
			t.Fatalf("cl1 after t1 moved to %s: %v", now, err)
		}
		answeredBy(t, ans, "moved", []string{"t1"})
	}
}
