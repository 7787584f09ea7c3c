package overlay

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// A JAP's last count and its withdrawal cross on the way to a RAP (links
// reorder): the count arrives last. Nothing refreshes a withdrawal, so a
// RAP that took the count would list the JAP until the entry's TTL (30 s)
// and send it flows it has no target for. (Found by sim's churn scenario:
// a RAP table took 27 s to converge.) Register carries a version, and the
// RAP takes nothing older than the withdrawal. The RAP here had no entry
// when the withdrawal came (it never got the count), as a group's new RAP.
func TestWithdrawalOvertakenByACount(t *testing.T) {
	h := newHarness(t, 1, unitLink)
	names := h.startMesh(3, func(c *ProxyConfig) {
		c.Replicas, c.Inaccuracy = 1, -1
		c.Edges = map[netip.Addr]*EdgePolicy{edgeAddr(1): {Name: "e1", Groups: []router.Group{testGroup}}}
	})
	g := testGroup
	rap := RAPs(g, names, 1)[0]
	jap := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == rap })[0]
	h.run(time.Second)

	// The count the join makes is held back on its way to the RAP.
	var held *Register
	h.dropMsgs(func(src, dst netip.Addr, m Msg) bool {
		r, ok := m.(*Register)
		if ok && r.Group == g && r.Targets > 0 && dst == h.node(rap).m.Addr && held == nil {
			held = r
			return true
		}
		return false
	})
	h.anycast(1, jap, g.Addr, edgeMsg(TypeJoin, 1, g))
	h.until(time.Second, "the count is sent", func() bool { return held != nil })
	h.dropMsgs(nil)
	// The target leaves: the withdrawal reaches the RAP first, then the
	// count.
	h.anycast(1, jap, g.Addr, edgeMsg(TypeLeave, 1, g))
	h.run(50 * time.Millisecond)
	h.sendAs(jap, rap, wmsg{seq: 1, m: held})
	h.run(50 * time.Millisecond)
	if held.Version == 0 {
		t.Fatal("the JAP's Register carries no version")
	}
	if n := len(h.p(rap).RAPTable()[g]); n != 0 {
		t.Fatalf("%s lists %s after a count older than its withdrawal", rap, jap)
	}
	// A newer count is taken, of course.
	h.anycast(1, jap, g.Addr, edgeMsg(TypeJoin, 1, g))
	h.until(time.Second, rap+" lists "+jap+" again", func() bool { return len(h.p(rap).RAPTable()[g]) == 1 })
}
