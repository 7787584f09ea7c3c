package overlay

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// A group's RAP dies, and a JAP hears of it before the group's new RAP
// does: the new RAP, no RAP yet by its own view, drops the registration
// the JAP sends it at once. The JAP registers again a second later, so
// that the new RAP lists it soon after it hears of the death itself, not
// at the next refresh (RegisterTTL/3, 10 s) with only the JAPs that
// happened to be slower until then. (Found by sim's cross-check with the
// lab: a new RAP held a partial table for 10 s.)
func TestNewRAPBehindTheJAPGetsTheRegistration(t *testing.T) {
	h := newHarness(t, 1, unitLink)
	names := h.startMesh(5, func(c *ProxyConfig) {
		c.Replicas, c.Inaccuracy, c.Health.Incarnation = 1, -1, 1
		c.Edges = map[netip.Addr]*EdgePolicy{edgeAddr(1): {Name: "e1", Groups: []router.Group{testGroup}}}
	})
	g := testGroup
	victim := RAPs(g, names, 1)[0]
	rest := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == victim })
	newRAP := RAPs(g, rest, 1)[0]
	jap := slices.DeleteFunc(slices.Clone(rest), func(n string) bool { return n == newRAP })[0]
	h.run(time.Second)
	h.anycast(1, jap, g.Addr, edgeMsg(TypeJoin, 1, g))
	lists := func(rap string) func() bool {
		return func() bool { return len(h.p(rap).RAPTable()[g]) == 1 }
	}
	h.until(time.Second, victim+" lists "+jap, lists(victim))

	// The victim dies; the JAP is told at once, the new RAP only finds
	// out by probing it.
	h.dropMsgs(func(src, dst netip.Addr, m Msg) bool {
		return dst == h.node(newRAP).m.Addr && (m.Type() == TypeFail || m.Type() == TypeNews)
	})
	h.kill(victim)
	h.sendAs(rest[len(rest)-1], jap, failMsg(victim, 1))
	h.until(100*time.Millisecond, jap+" holds "+victim+" dead", func() bool { return h.state(jap, victim) == StateDead })
	dead := h.until(3*time.Second, newRAP+" holds "+victim+" dead", func() bool { return h.state(newRAP, victim) == StateDead })
	if len(h.p(newRAP).RAPTable()[g]) != 0 {
		t.Fatalf("%s took the registration it got while %s was alive for it (the test did not set up the race)", newRAP, victim)
	}
	took := h.until(2*time.Second, newRAP+", the new RAP, lists "+jap, lists(newRAP))
	t.Logf("%s held %s dead %v after %s; listed %s %v later", newRAP, victim, dead, jap, jap, took)
}
