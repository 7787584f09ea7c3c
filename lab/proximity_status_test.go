package lab

import (
	"fmt"
	"testing"
	"time"

	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
)

// memberStatus is the row of name in p's status.
func memberStatus(p *node.Proxy, name string) (node.MemberStatus, bool) {
	for _, m := range p.Status().Proxy.Members {
		if m.Name == name {
			return m, true
		}
	}
	return node.MemberStatus{}, false
}

// TestProximityStatusDropsDeadRTT: once a killed proxy is declared dead,
// the status of the others shows no RTT for it (proximity ranks by none),
// and the clients' candidate lists none either; the live keep theirs.
func TestProximityStatusDropsDeadRTT(t *testing.T) {
	h, _ := startLabWith(t, Options{Proxies: 3, Clusters: 1, Clients: 1}, HarnessOptions{})
	ctx := testCtx(t)
	const victim = "p3"
	measured := func(viewer string, names ...string) error {
		for _, n := range names {
			m, ok := memberStatus(h.Proxies[viewer], n)
			if !ok || m.RTTms <= 0 || m.State != overlay.StateAlive.String() {
				return fmt.Errorf("%s sees %s as %+v", viewer, n, m)
			}
		}
		return nil
	}
	if err := WaitFor(ctx, func() error { return measured("p1", "p2", victim) }); err != nil {
		t.Fatal(err)
	}
	for _, m := range h.Proxies["p1"].Status().Proxy.Members {
		t.Logf("p1 measures %s at %.3f ms", m.Name, m.RTTms)
	}
	cl := h.Edges["cl1"]
	if err := h.KillProxy(victim); err != nil {
		t.Fatal(err)
	}
	waitState(t, h, victim, overlay.StateDead, 10*time.Second)
	for _, viewer := range []string{"p1", "p2"} {
		if m, _ := memberStatus(h.Proxies[viewer], victim); m.RTTms != 0 {
			t.Errorf("%s shows dead %s with rtt %.2f ms: %+v", viewer, victim, m.RTTms, m)
		}
	}
	if err := measured("p1", "p2"); err != nil {
		t.Errorf("a live member lost its RTT: %v", err)
	}
	if cl.Attach == nil {
		return // a single proxy in its file: no candidates to show
	}
	err := WaitFor(ctx, func() error {
		for _, c := range cl.Status().Edge.Candidates {
			if c.Name == victim && !c.Live && c.RTTms == 0 {
				return nil
			}
		}
		return fmt.Errorf("cl1's candidates: %+v, want %s not live and without RTT", cl.Status().Edge.Candidates, victim)
	})
	if err != nil {
		t.Error(err)
	}
}
