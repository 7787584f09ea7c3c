package overlay

import (
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// TestForgedMovedEvictsNobody: p3 holds the mesh key but admits no edge. It
// sends p1 Moved notices for edge 0's target with two epochs half the
// serial space apart (so one is "later" whatever the target's epoch). p1
// drops the target each time; the target rejoins at once, and each rejoin
// spends its edge's join budget, so after a burst the victim is refused
// as "too fast" although it joined only when kicked out.
func TestForgedMovedEvictsNobody(t *testing.T) {
	pn := newProxyNet(t, 3, 1, func(c *ProxyConfig) {
		if c.Self.Name == "p3" {
			c.Edges = nil
		}
	})
	pn.run(2 * time.Second)
	p1 := pn.p("p1")
	if st := policyJoin(t, pn, p1, 0, testGroup, router.Policy{}, 0); st != StatusOK {
		t.Fatalf("join: %v", st)
	}
	kicked, refused := 0, 0
	for i := range 40 {
		e := uint32(i * 7919)
		pn.sendAs("p3", "p1", wmsg{0, &Moved{Targets: []MovedTarget{
			{Group: testGroup, Name: "t0", Target: edgeAddr(0), Epoch: e},
			{Group: testGroup, Name: "t0", Target: edgeAddr(0), Epoch: e + 1<<31},
		}}})
		pn.settle()
		if !targetsAt(p1, testGroup)[edgeAddr(0)] {
			kicked++
		}
		if st := policyJoin(t, pn, p1, 0, testGroup, router.Policy{}, 0); st != StatusOK {
			refused++
		}
		pn.run(100 * time.Millisecond)
	}
	t.Logf("40 forged Moveds from a proxy that admits no edge: target dropped %d times, its rejoin refused %d times", kicked, refused)
	if kicked > 0 || refused > 0 {
		t.Errorf("a proxy that does not admit edge 0 dropped its target %d/40 times with forged Moveds, and %d of the victim's rejoins were refused as too fast", kicked, refused)
	}
}
