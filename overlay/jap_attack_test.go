package overlay

// Attacks by admitted targets on the JAP: join churn, and policies and
// weights beyond their rights (issue 11, findings 4 and 5).

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// resolveAt has p resolve g and returns its answer: the JAPs, and the
// policy's name.
func (h *harness) resolveAt(p *Proxy, g router.Group) Event {
	h.t.Helper()
	from := len(h.events)
	p.Resolve(g)
	var got Event
	h.until(2*time.Second, fmt.Sprintf("%s resolves %s", p.cfg.Self.Name, g), func() bool {
		for _, e := range h.events[from:] {
			if e.Kind == EventResolved && e.Proxy == p.cfg.Self.Name && e.Group == g {
				got = e
				return true
			}
		}
		return false
	})
	return got
}

func hasJAP(japs []router.JAP, a netip.Addr) bool {
	for _, j := range japs {
		if j.Addr == a {
			return true
		}
	}
	return false
}

func targetsAt(p *Proxy, g router.Group) map[netip.Addr]bool {
	p.jap.mu.Lock()
	defer p.jap.mu.Unlock()
	out := map[netip.Addr]bool{}
	for a := range p.jap.targets[g] {
		out[a] = true
	}
	return out
}

// TestJoinChurnThrottled: one target joins and leaves in a tight loop. Past
// its edge's budget its joins are refused, saying why and when to retry,
// and its leaves are delayed, so the overlay hears little of it; another
// target joins at the same JAP meanwhile, and a resolve at another proxy
// finds it.
func TestJoinChurnThrottled(t *testing.T) {
	pn := newProxyNet(t, 6, 2, nil)
	pn.run(2 * time.Second)
	jap := pn.nonRAP()
	var iap *Proxy
	for _, p := range pn.proxies() {
		if p != jap {
			iap = p
			break
		}
	}
	before := jap.Stats()
	const loops, gap = 1000, 2 * time.Millisecond
	start := pn.clk.Now()
	e := pn.edge(0)
	e.inbox = nil
	for i := range loops {
		j := edgeMsg(TypeJoin, 0, testGroup)
		j.seq = uint32(2 * i)
		pn.anycast(0, jap.cfg.Self.Name, testGroup.Addr, j)
		pn.run(gap)
		l := edgeMsg(TypeLeave, 0, testGroup)
		l.seq = uint32(2*i + 1)
		pn.anycast(0, jap.cfg.Self.Name, testGroup.Addr, l)
		pn.run(gap)
		if i == loops/2 {
			// The victim joins in the middle of the flood.
			if st := policyJoin(t, pn, jap, 1, testGroup, router.Policy{}, 0); st != StatusOK {
				t.Fatalf("another target's join at the flooded JAP: %v", st)
			}
		}
	}
	elapsed := time.Duration(pn.clk.Now() - start)
	refused, reason := 0, ""
	for _, w := range e.inbox {
		if a, ok := w.m.(*JoinAck); ok && a.Status == StatusRefused {
			refused++
			reason = a.Reason
		}
	}
	joins := jap.Stats().Joins - before.Joins
	budget := uint64(DefaultJoinBurst) + uint64(elapsed.Seconds()*DefaultJoinRate) + 1
	t.Logf("%d join/leave pairs in %v: %d joins taken (budget %d), %d refused: %q", loops, elapsed, joins, budget, refused, reason)
	if joins > budget+1 { // +1: the victim's
		t.Errorf("%d joins taken from a target in a tight loop, beyond its budget %d", joins, budget)
	}
	if refused == 0 || !strings.Contains(reason, "too fast") || !strings.Contains(reason, "retry in") {
		t.Errorf("%d joins refused, the last saying %q: want refusals that say too fast and when to retry", refused, reason)
	}
	// The victim is a target, and an IAP finds its JAP.
	if !targetsAt(jap, testGroup)[edgeAddr(1)] {
		t.Fatal("the victim is not a target at its JAP")
	}
	if ans := pn.resolveAt(iap, testGroup); !hasJAP(ans.JAPs, jap.cfg.Self.Addr) {
		t.Errorf("a resolve at %s during the flood answers %v, without the victim's JAP %s", iap.cfg.Self.Name, ans.JAPs, jap.cfg.Self.Name)
	}
	// Once the budget refills, the attacker may join again.
	pn.run(time.Duration(float64(DefaultJoinBurst)/DefaultJoinRate) * time.Second)
	if st := policyJoin(t, pn, jap, 0, testGroup, router.Policy{}, 0); st != StatusOK {
		t.Errorf("a join after the budget refilled: %v", st)
	}
}

// TestLeaveTooFastDelayed: a leave past the budget is not lost: the target
// goes when the budget allows; a join before then keeps it.
func TestLeaveTooFastDelayed(t *testing.T) {
	pn := newProxyNet(t, 1, 1, func(c *ProxyConfig) { c.JoinRate, c.JoinBurst = 1, 3 })
	p := pn.p("p1")
	in := func() bool { return targetsAt(p, testGroup)[edgeAddr(0)] }
	pn.edgeDo(p, TypeJoin, 0)
	pn.edgeDo(p, TypeLeave, 0)
	pn.edgeDo(p, TypeJoin, 0) // the budget of 3 is spent
	if !in() {
		t.Fatal("not joined")
	}
	pn.edgeDo(p, TypeLeave, 0) // past the budget: delayed
	if !in() {
		t.Fatal("a leave past the budget took effect at once")
	}
	d := pn.until(2*time.Second, "the delayed leave takes effect", func() bool { return !in() })
	t.Logf("the delayed leave took effect after %v", d)
	// Delayed again, then cancelled by a join (a refresh: free).
	pn.run(3 * time.Second)
	pn.edgeDo(p, TypeJoin, 0)
	pn.edgeDo(p, TypeLeave, 0)
	pn.edgeDo(p, TypeJoin, 0)
	pn.edgeDo(p, TypeLeave, 0) // delayed
	pn.edgeDo(p, TypeLeave, 0) // a repeat costs nothing more
	if st := policyJoin(t, pn, p, 0, testGroup, router.Policy{}, 0); st != StatusOK {
		t.Fatalf("a join while the leave waits: %v", st)
	}
	pn.run(3 * time.Second)
	if !in() {
		t.Error("a join after a delayed leave did not keep the target")
	}
}

// TestMovedCoalesced: the targets that join a JAP within one tick are told
// to each other proxy in one Moved, and only to proxies that admit their
// edges.
func TestMovedCoalesced(t *testing.T) {
	const targets = 20
	h := newHarness(t, 1, unitLink)
	var members []Member
	for i := range 4 {
		members = append(members, testMember(i+1, "c1"))
	}
	all := map[netip.Addr]*EdgePolicy{}
	for i := range targets {
		all[edgeAddr(i)] = &EdgePolicy{Name: fmt.Sprintf("t%d", i), PublicKey: [32]byte{1, byte(i)}, Groups: []router.Group{testGroup}}
	}
	for _, m := range members {
		edges := all
		if m.Name == "p4" {
			edges = nil // p4 admits none of them: it cannot hold them
		}
		h.start(m, members, func(c *ProxyConfig) { c.Edges = edges })
	}
	h.run(2 * time.Second) // health and admitted edges known
	moved := map[string][]int{}
	h.dropMsgs(func(src, dst netip.Addr, m Msg) bool {
		if mv, ok := m.(*Moved); ok {
			moved[dst.String()] = append(moved[dst.String()], len(mv.Targets))
		}
		return false
	})
	for i := range targets {
		h.anycast(i, "p1", testGroup.Addr, edgeMsg(TypeJoin, i, testGroup))
	}
	h.run(time.Second)
	for _, m := range members[1:] {
		got := moved[m.Addr.String()]
		t.Logf("%s got Moved messages carrying %v targets", m.Name, got)
		switch {
		case m.Name == "p4" && len(got) > 0:
			t.Errorf("p4, which admits none of the targets, got Moved %v", got)
		case m.Name != "p4" && (len(got) > 2 || sum(got) != targets):
			t.Errorf("%s got %d Moved carrying %v targets: want the %d targets in at most 2", m.Name, len(got), got, targets)
		}
	}
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// rightsNet is newProxyNet with two edges of different rights: edge 0, an
// attacker admitted for testGroup with no right to set its policy and
// weight at most 1; edge 1, the group's owner, with the right and weight
// up to 10.
func rightsNet(t *testing.T, n int) *harness {
	h := newHarness(t, 1, unitLink)
	var members []Member
	for i := range n {
		members = append(members, testMember(i+1, "c1"))
	}
	edges := map[netip.Addr]*EdgePolicy{
		edgeAddr(0): {Name: "attacker", PublicKey: [32]byte{1}, Groups: []router.Group{testGroup}},
		edgeAddr(1): {Name: "owner", PublicKey: [32]byte{2}, Groups: []router.Group{testGroup}, SetsPolicy: true, MaxWeight: 10},
	}
	for _, m := range members {
		h.start(m, members, func(c *ProxyConfig) { c.Edges = edges })
	}
	h.run(2 * time.Second)
	return h
}

// weightJoin is policyJoin with a weight; it returns the answer.
func weightJoin(t *testing.T, h *harness, jap *Proxy, i int, pol router.Policy, weight uint32) *JoinAck {
	t.Helper()
	w := joinMsg(i, testGroup, pol, 0)
	w.m.(*Join).Weight = weight
	return h.answer(i, TypeJoinAck, func() { h.anycast(i, jap.cfg.Self.Name, testGroup.Addr, w) }).m.(*JoinAck)
}

// TestPolicyAndWeightAreRights: the attack. An admitted target
// joins the group first, asking for select=random and weight 1000; the
// group's owner joins later with its own policy. The attacker's weight is
// refused, its policy ignored; the owner is never refused or evicted, the
// group has the owner's policy everywhere, and the owner's JAP is in every
// answer. At two JAPs (the arbiter RAP decides) and at one.
func TestPolicyAndWeightAreRights(t *testing.T) {
	random := router.Policy{Select: router.SelectRandom}
	owners := router.Policy{Select: router.SelectLoad, Scope: router.ScopeSameCluster}
	for _, tc := range []struct {
		name                string
		attackerAt, ownerAt string
	}{
		{"two JAPs", "p1", "p2"},
		{"two JAPs, the other way", "p2", "p1"},
		{"one JAP", "p3", "p3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := rightsNet(t, 4)
			ja, jo := h.p(tc.attackerAt), h.p(tc.ownerAt)
			ack := weightJoin(t, h, ja, 0, random, 1000)
			if ack.Status != StatusRefused || !strings.Contains(ack.Reason, "max_weight") {
				t.Fatalf("the attacker's join with weight 1000: %v %q, want refused for its max_weight", ack.Status, ack.Reason)
			}
			if ack := weightJoin(t, h, ja, 0, random, 1); ack.Status != StatusOK {
				t.Fatalf("the attacker's join with weight 1: %v %q (it may join, following the group's policy)", ack.Status, ack.Reason)
			}
			if got := ja.cfg.Router.Policy(testGroup); got != (router.Policy{}) {
				t.Errorf("a target without the right set the policy %v", got)
			}
			h.run(time.Second)
			if ack := weightJoin(t, h, jo, 1, owners, 5); ack.Status != StatusOK {
				t.Fatalf("the owner's join: %v %q", ack.Status, ack.Reason)
			}
			// Several registration lifetimes, both keeping alive: the owner
			// is never dropped, and everyone has its policy.
			var iap *Proxy
			for _, p := range h.proxies() {
				if p != ja && p != jo {
					iap = p
				}
			}
			at := map[int]*Proxy{0: ja, 1: jo}
			for range 4 {
				for range int(jo.cfg.RegisterTTL / (5 * time.Second)) {
					h.run(5 * time.Second)
					for _, i := range []int{0, 1} {
						ka := h.answer(i, TypeKeepaliveAck, func() {
							h.anycast(i, at[i].cfg.Self.Name, testGroup.Addr, edgeMsg(TypeKeepalive, i, testGroup))
						}).m.(*KeepaliveAck)
						if ka.Status != StatusOK && i == 1 {
							t.Fatalf("the owner's keepalive at %s: %v (evicted)", at[i].cfg.Self.Name, ka.Status)
						}
					}
				}
				ans := h.resolveAt(iap, testGroup)
				if !hasJAP(ans.JAPs, jo.cfg.Self.Addr) || ans.Reason != owners.String() {
					t.Fatalf("%s resolves %v with policy %q; want the owner's JAP %s and its policy %q",
						iap.cfg.Self.Name, ans.JAPs, ans.Reason, jo.cfg.Self.Name, owners)
				}
			}
			for _, p := range []*Proxy{ja, jo} {
				if got := p.cfg.Router.Policy(testGroup); got != owners {
					t.Errorf("JAP %s has policy %v, want the owner's %v", p.cfg.Self.Name, got, owners)
				}
			}
			if !targetsAt(jo, testGroup)[edgeAddr(1)] {
				t.Error("the owner is no target at its JAP")
			}
			if !targetsAt(ja, testGroup)[edgeAddr(0)] {
				t.Error("the attacker, following the group's policy, was dropped")
			}
			// The attacker cannot change it by joining again.
			if ack := weightJoin(t, h, ja, 0, random, 1); ack.Status != StatusOK || ja.cfg.Router.Policy(testGroup) != owners {
				t.Errorf("the attacker's rejoin: %v, policy now %v", ack.Status, ja.cfg.Router.Policy(testGroup))
			}
		})
	}
}
