package overlay

import (
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
)

// joinLeaveCost has edge 0's target join and leave testGroup pairs times
// at a JAP that is no RAP of it, among 6 proxies, gap apart, and returns
// the control messages of membership (joins, leaves, their answers,
// registrations, moved notices; not health) sent per pair. With only,
// only the JAP and one other proxy admit the edge.
func joinLeaveCost(t *testing.T, pairs int, gap time.Duration, only bool) float64 {
	pn := newProxyNet(t, 6, 2, nil)
	jap := pn.nonRAP()
	if only {
		pn = newProxyNet(t, 6, 2, func(c *ProxyConfig) {
			if c.Self.Name != jap.cfg.Self.Name && c.Self.Name != "p1" && c.Self.Name != "p2" {
				c.Edges = nil
			}
		})
		jap = pn.p(jap.cfg.Self.Name)
	}
	pn.run(2 * time.Second)
	rec := &overlaytest.Recorder{}
	pn.net.Trace(rec.Record)
	for range pairs {
		pn.anycast(0, jap.cfg.Self.Name, testGroup.Addr, edgeMsg(TypeJoin, 0, testGroup))
		pn.run(gap)
		pn.anycast(0, jap.cfg.Self.Name, testGroup.Addr, edgeMsg(TypeLeave, 0, testGroup))
		pn.run(gap)
	}
	pn.run(2 * time.Second)
	n := rec.Count(func(p overlaytest.Packet) bool {
		_, m, err := ParseMsg(p.Payload)
		if err != nil {
			return false
		}
		switch m.Type() {
		case TypeJoin, TypeLeave, TypeJoinAck, TypeRegister, TypeMoved, TypePolicy, TypeNoTarget:
			return true
		}
		return false
	})
	return float64(n) / float64(pairs)
}

// TestJoinLeaveCost measures what one target's join and leave cost the
// overlay of 6 proxies: spaced out, and in a tight loop.
func TestJoinLeaveCost(t *testing.T) {
	slow := joinLeaveCost(t, 10, time.Second, false)
	tight := joinLeaveCost(t, 200, 5*time.Millisecond, false)
	t.Logf("messages per JOIN/LEAVE pair, 6 proxies: %.1f a second apart, %.1f in a tight loop (5 ms apart)", slow, tight)
	few := joinLeaveCost(t, 10, time.Second, true)
	t.Logf("the same a second apart, with the edge admitted by 2 or 3 of the 6: %.1f", few)
	if tight > slow/2 {
		t.Errorf("a tight loop costs %.1f messages per pair, spaced pairs %.1f: churn is not throttled", tight, slow)
	}
}
