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
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// targetDiesShape: the one group has t1 and t4 behind p1, t2 and t5 behind
// p2, t3 behind p3; clients cl1, cl2, cl3 sit on p2, p3, p1.
var targetDiesShape = Options{Proxies: 3, Clusters: 1, Targets: 5, Groups: 1, Clients: 3}

// targetJoinedAt is the proxy a target of g is joined at now, or nil.
func targetJoinedAt(h *Harness, target string, g router.Group) *node.Proxy {
	addrs := h.Edges[target].Config.Address
	for _, p := range h.Proxies {
		if slices.ContainsFunc(p.Router.Targets(g), func(a netip.AddrPort) bool { return slices.Contains(addrs, a.Addr()) }) {
			return p
		}
	}
	return nil
}

// TestTargetDies crashes a target (its WireGuard device goes down: no
// LEAVE, its keepalives just stop) whose JAP keeps another target of the
// group. The JAP drops it after TargetTimeout, the RAPs' counts follow, and
// new connections of every client reach live targets — never the dead one
// once its JAP dropped it.
func TestTargetDies(t *testing.T) {
	h := startLab(t, targetDiesShape)
	g := GroupN(0)
	const victim = "t4"
	jap := targetJoinedAt(h, victim, g)
	if jap == nil {
		t.Fatalf("%s is not joined", victim)
	}
	if len(jap.Router.Targets(g)) < 2 {
		t.Skipf("%s's JAP %s has no other target of %s", victim, jap.Name, g)
	}
	clients := h.Names(config.RoleClient)
	for _, c := range clients {
		t.Logf("client %s on %s", c, h.Home(c).Name)
	}
	t.Logf("%s of %s joined at %s (%d targets there), RAPs %v; crashing it", victim, g, jap.Name, len(jap.Router.Targets(g)), jap.Overlay.RAPs(g))
	victimAddrs := h.Edges[victim].Config.Address
	gone := func() bool {
		return !slices.ContainsFunc(jap.Router.Targets(g), func(a netip.AddrPort) bool { return slices.Contains(victimAddrs, a.Addr()) })
	}
	registersBefore := map[string]uint64{}
	for n, p := range h.Proxies {
		registersBefore[n] = p.Overlay.Stats().Registers
	}

	// A crash: the device stops, the target says goodbye to nobody.
	h.Edges[victim].Device.Down()
	died := time.Now()

	var dropped, followed, lastFail time.Time
	fails, failsAfterDrop, asks := 0, 0, 0
	okAfterDrop := 0
	deadline := died.Add(22 * time.Second)
	for time.Now().Before(deadline) {
		if dropped.IsZero() && gone() {
			dropped = time.Now()
			t.Logf("JAP %s dropped %s %v after the crash", jap.Name, victim, dropped.Sub(died))
		}
		if !dropped.IsZero() && followed.IsZero() && rapsFollowErr(h, jap, g) == nil {
			followed = time.Now()
			t.Logf("RAPs %v count %d targets at %s %v after the crash", jap.Overlay.RAPs(g), len(jap.Router.Targets(g)), jap.Name, followed.Sub(died))
		}
		for _, c := range clients {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			ans, err := ask(ctx, h, c, g, "hi")
			cancel()
			asks++
			name, _, _ := strings.Cut(ans, ": ")
			switch {
			case err != nil || name == victim:
				fails++
				lastFail = time.Now()
				if !dropped.IsZero() && start.After(dropped) {
					failsAfterDrop++
					t.Errorf("%s → %s failed %v after %s was dropped: %v", c, g, start.Sub(dropped), victim, err)
				}
			case !dropped.IsZero() && start.After(dropped):
				okAfterDrop++
			}
		}
		if !followed.IsZero() && okAfterDrop >= 5*len(clients) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if dropped.IsZero() {
		t.Fatalf("JAP %s did not drop %s within %v", jap.Name, victim, time.Since(died))
	}
	if followed.IsZero() {
		t.Fatalf("RAPs did not follow: %v", rapsFollowErr(h, jap, g))
	}
	if !lastFail.IsZero() {
		t.Logf("clients last sent to the dead target %v after the crash (%v before the drop)", lastFail.Sub(died), dropped.Sub(lastFail))
	}
	t.Logf("%d new connections from %d clients: %d failed during the window, %d after the drop; %d good ones after the drop",
		asks, len(clients), fails-failsAfterDrop, failsAfterDrop, okAfterDrop)
	if okAfterDrop < 5*len(clients) {
		t.Errorf("only %d good answers after the drop", okAfterDrop)
	}
	var regs []string
	for n, p := range h.Proxies {
		regs = append(regs, fmt.Sprintf("%s +%d", n, p.Overlay.Stats().Registers-registersBefore[n]))
	}
	slices.Sort(regs)
	t.Logf("registrations received meanwhile: %v", regs)
}

// rapsFollowErr says how the RAPs of g (and of its echo group) disagree
// with jap's count of g's targets.
func rapsFollowErr(h *Harness, jap *node.Proxy, g router.Group) error {
	n := len(jap.Router.Targets(g))
	for _, gg := range []router.Group{g, router.EchoGroup(g.Addr)} {
		for _, name := range jap.Overlay.RAPs(gg) {
			rap := h.Proxies[name]
			if rap == nil {
				continue
			}
			got := 0
			for _, j := range rap.Overlay.RAPTable()[gg] {
				if j.Addr == jap.Config.Addr4() {
					got = j.Targets
				}
			}
			if got != n {
				return fmt.Errorf("RAP %s of %s counts %d at %s, want %d", name, gg, got, jap.Name, n)
			}
		}
	}
	return nil
}

// When a JAP's last target of a group leaves, IAPs that cached that JAP
// must not keep sending the group's new flows there until their cache
// expires (10 s): the JAP tells them, and they resolve again.
func TestIAPForgetsAJAPWithoutTargets(t *testing.T) {
	t.Parallel()
	// 3 proxies; group 0 has t1 (at p1) and t3 (at p3); cl1 is at p2.
	h, log := startLabEvents(t, Options{Proxies: 3, Clusters: 1, Targets: 3, Clients: 1, Groups: 2})
	ctx := testCtx(t)
	g := GroupN(0)
	if got := h.TargetsOf(g); !slices.Equal(got, []string{"t1", "t3"}) {
		t.Fatalf("targets of %s: %v", g, got)
	}
	// Warm p2's cache with both JAPs.
	for i := 0; i < 4; i++ {
		if _, err := h.AskTCP(ctx, "cl1", g, "warm"); err != nil {
			t.Fatal(err)
		}
	}
	gone := h.Home("t1").Name
	h.Edges["t1"].Close() // leaves: its JAP has no target for g any more
	start := time.Now()
	for i := 0; i < 12; i++ {
		// Under the IAP's 10 s cache TTL: only a fresh resolve helps.
		actx, cancel := context.WithTimeout(ctx, 6*time.Second)
		ans, err := h.AskTCP(actx, "cl1", g, "after")
		cancel()
		if err != nil {
			dumpLab(t, h)
			dumpViews(t, h)
			for _, n := range h.Names("proxy") {
				t.Logf("%s: targets of %s %v", n, g, h.Proxies[n].Router.Targets(g))
			}
			t.Logf("cl1: %+v", h.Edges["cl1"].Attach.Status())
			for _, e := range log.match(func(e overlay.Event) bool { return e.Group == g || e.Kind == "move" }) {
				t.Logf("event %+v", e)
			}
			t.Fatalf("connection %d after t1 left %s: %v", i, gone, err)
		}
		answeredBy(t, ans, "after", []string{"t3"})
	}
	t.Logf("12 new connections after %s lost its last target took %v", gone, time.Since(start))
}
