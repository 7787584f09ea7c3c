package lab

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// caShape is a CA lab: 3 proxies in 2 clusters, 2 targets, a client.
var caShape = Options{Proxies: 3, Clusters: 2, Targets: 2, Clients: 1, Groups: 2, CA: true}

// TestCALabGrows: a CA lab grows with no proxy's file touched. A target
// signed while the overlay runs, whose file names one proxy's endpoint,
// joins a new group and answers the client (the time from its start to the
// first answer is logged: the figure of issue 12). A target whose
// certificate lacks the group its file asks for is refused, told why, and
// the group stays without a target. The first target, revoked at one
// proxy, is removed by every proxy (logged too) and answers no more, while
// the lab's own targets still do.
func TestCALabGrows(t *testing.T) {
	h, log := startLabWith(t, caShape, HarnessOptions{})
	ctx := waitCtx(t, 30*time.Second)
	g, lacking := GroupN(2), GroupN(3)

	// t3, signed now, listing only p2 (not the client's home p3).
	if _, err := h.AddNode(NewNode{Name: "t3", Role: config.RoleTarget, Groups: []router.Group{g}, Proxies: []string{"p2"}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := h.StartNode("t3"); err != nil {
		t.Fatal(err)
	}
	if err := h.ServeTargets(); err != nil {
		t.Fatal(err)
	}
	who, took := askUntil(t, h, "cl1", g, 20*time.Second, func(string) bool { return true })
	if who != "t3" {
		t.Fatalf("%s answered by %q, want t3", g, who)
	}
	t.Logf("figure: t3 (a CA-lab file, one proxy endpoint) answered cl1 on %s %v after it started", g, took.Round(time.Millisecond))
	if since := time.Since(start); since > 10*time.Second {
		t.Errorf("t3 answered %v after its start", since)
	}

	// t4's certificate grants g, its file asks for lacking: the loader
	// refuses the file at the group's line; started past that check, t4
	// is refused at its JAP with the reason, which t4 is told.
	if _, err := h.AddNode(NewNode{Name: "t4", Role: config.RoleTarget, Groups: []router.Group{lacking},
		Rights: []cert.GroupRight{cert.GroupRightOf(g)}, Proxies: []string{"p1"}}); err != nil {
		t.Fatal(err)
	}
	if err := h.StartNode("t4"); err == nil || !strings.Contains(err.Error(), "t4.toml:") || !strings.Contains(err.Error(), "outside the certificate's group rights") {
		t.Fatalf("t4's file loaded: %v; want an error at its group's line", err)
	}
	if err := h.StartForged("t4"); err != nil {
		t.Fatal(err)
	}
	var reason string
	if err := WaitFor(ctx, func() error {
		for _, e := range log.match(func(e overlay.Event) bool { return e.Kind == overlay.EventRefuse && e.Name == "t4" }) {
			reason = e.Reason
			return nil
		}
		return fmt.Errorf("t4 not refused yet")
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reason, "may not join") {
		t.Errorf("t4 refused for %q, want the certificate's rights as the reason", reason)
	}
	if err := WaitFor(ctx, func() error {
		if gs := h.Edges["t4"].Target.Groups(); len(gs) != 1 || gs[0].State != edge.JoinRefused || gs[0].Reason != reason {
			return fmt.Errorf("t4's groups: %+v", gs)
		}
		return nil
	}); err != nil {
		t.Errorf("t4 was not told: %v", err)
	}
	for name, p := range h.Proxies {
		if n := len(p.Router.Targets(lacking)); n != 0 {
			t.Errorf("%s has %d targets of %s", name, n, lacking)
		}
	}

	// Revoke t3 (pias cert revoke: revoked.pem, serial 2) and reload p1
	// alone (SIGHUP; t3 is attached at p2): every proxy takes the list,
	// removes t3's peer and withdraws its join.
	rl, err := h.Lab.Revoke(time.Now(), "t3")
	if err != nil {
		t.Fatal(err)
	}
	if rl.Serial != 2 {
		t.Errorf("revocation list serial %d, want 2 (the lab's first is 1)", rl.Serial)
	}
	start = time.Now()
	changes, err := h.ReloadProxy("p1") // as SIGHUP does
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("p1 reloaded: %q", changes)
	if err := WaitFor(ctx, func() error {
		for name, p := range h.Proxies {
			switch {
			case p.Overlay.RevocationSerial() != 2:
				return fmt.Errorf("%s holds list %d", name, p.Overlay.RevocationSerial())
			case slices.Contains(p.Overlay.CertEdges(), "t3"):
				return fmt.Errorf("%s still admits t3", name)
			case len(p.Router.Targets(g)) != 0:
				return fmt.Errorf("%s still has a target of %s", name, g)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("figure: t3 revoked, p1 reloaded; every proxy removed it %v later", time.Since(start).Round(time.Millisecond))
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if ans, err := ask(actx, h, "cl1", g, "anyone?"); err == nil {
		t.Errorf("revoked t3's group still answers: %q", ans)
	}
	for i := range 2 {
		who, _ := askUntil(t, h, "cl1", GroupN(i), 5*time.Second, func(string) bool { return true })
		answeredBy(t, who+": x", "x", targetsOf(h, GroupN(i)))
	}
}
