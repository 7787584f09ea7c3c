package overlay

// Robustness tests: dynamic membership and group policies, over the
// harness's network (tunnel and underlay) and fake clock.

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// meshMember is proxy name with overlay address 100.64.0.i.
func meshMember(name string, i int) Member {
	m := testMember(i, "c1")
	m.Name = name
	return m
}

// add starts a proxy self with the test mesh key that knows members (its
// seeds, or a static mesh).
func (h *harness) add(self Member, members ...Member) *Proxy {
	return h.start(self, append([]Member{self}, members...), func(c *ProxyConfig) { c.MeshKey = testMeshKey })
}

func knownNames(p *Proxy) []string {
	var out []string
	for _, m := range p.Known() {
		out = append(out, m.Name)
	}
	return out
}

// TestNewcomerLearnsAProxyItsSyncLost: one TypeMember of the seed's sync
// to a newcomer is lost; the anti-entropy digests bring it in all the same,
// and every proxy ends up knowing and seeing every other alive.
func TestNewcomerLearnsAProxyItsSyncLost(t *testing.T) {
	n := newHarness(t, 1, unitLink)
	p1, p2, p3 := meshMember("p1", 1), meshMember("p2", 2), meshMember("p3", 3)
	n.add(p1, p2)
	b := n.add(p2, p1)
	n.run(time.Second) // the static mesh is up
	lost := 0
	n.dropMsgs(func(src, dst netip.Addr, m Msg) bool {
		// One datagram lost: the sync's record of p2, seed p1 → newcomer.
		if src == p1.Addr && dst == p3.Addr && isRecordOf(m, "p2") && lost == 0 {
			lost++
			return true
		}
		return false
	})
	c := n.add(p3, p1) // seeded by p1 only
	n.run(60 * time.Second)
	if lost != 1 {
		t.Fatalf("the sync record was not sent (%d)", lost)
	}
	t.Logf("p3 knows %v and sees live %v; p2 knows %v and sees live %v", knownNames(c), c.Live(), knownNames(b), b.Live())
	if !slices.Contains(knownNames(c), "p2") {
		t.Errorf("60 s after one lost sync datagram the newcomer p3 still does not know p2 (knows %v), "+
			"while p2 has it live: %v", knownNames(c), b.Live())
	}
}

// TestNewcomerWhoseSeedDiesMidJoin: the seed welcomes the newcomer and
// dies before its flood and sync leave, then comes back having forgotten
// it. The newcomer, alone, says hello again and learns everyone.
func TestNewcomerWhoseSeedDiesMidJoin(t *testing.T) {
	n := newHarness(t, 1, unitLink)
	p1, p2, p3 := meshMember("p1", 1), meshMember("p2", 2), meshMember("p3", 3)
	n.add(p1, p2)
	n.add(p2, p1)
	n.run(time.Second)
	// Hello and welcome only; then p1 dies with its tunnel packets unsent.
	n.dropMsgs(func(src, dst netip.Addr, m Msg) bool { return src == p1.Addr })
	c := n.add(p3, p1)
	n.until(time.Second, "p3 is welcomed", func() bool { return c.mem.admission.welcomed })
	n.dropMsgs(nil)
	n.kill("p1")
	n.run(5 * time.Second)
	if slices.Contains(knownNames(c), "p2") {
		t.Fatalf("p3 learned p2 while its seed was dead: the test does not test the seed dying mid-join")
	}
	// p1 restarts with its configuration (p2), having forgotten p3.
	n.restart("p1")
	n.run(60 * time.Second)
	if !slices.Contains(knownNames(c), "p2") {
		t.Errorf("newcomer p3, welcomed by a seed that died before its sync, never learns p2: it knows %v, live %v",
			knownNames(c), c.Live())
	}
}

// policyJoin sends a join of edge i for g with pol at jap and returns the
// status of the JAP's answer: whether it took the target (StatusOK) or not
// (StatusRefused).
func policyJoin(t *testing.T, h *harness, jap *Proxy, i int, g router.Group, pol router.Policy, ka time.Duration) Status {
	t.Helper()
	ack := h.answer(i, TypeJoinAck, func() { h.anycast(i, jap.cfg.Self.Name, g.Addr, joinMsg(i, g, pol, ka)) })
	return ack.m.(*JoinAck).Status
}

func reviewTargets(p *Proxy, g router.Group) int {
	p.jap.mu.Lock()
	defer p.jap.mu.Unlock()
	return len(p.jap.targets[g])
}

// TestPolicyConflictHasOneArbiter: two JAPs, each a RAP of the group, take
// targets with different policies at about the same time. Each RAP heard
// its own JAP first, but only the group's first RAP arbitrates, so one side
// keeps its targets.
func TestPolicyConflictHasOneArbiter(t *testing.T) {
	pn := newProxyNet(t, 2, 2, nil)
	p1, p2 := pn.p("p1"), pn.p("p2")
	if r := p1.RAPs(testGroup); len(r) != 2 {
		t.Fatalf("RAPs %v", r)
	}
	load := router.Policy{Select: router.SelectLoad}
	if st := policyJoin(t, pn, p1, 0, testGroup, router.Policy{}, 0); st != StatusOK {
		t.Fatalf("join at p1: %v", st)
	}
	if st := policyJoin(t, pn, p2, 1, testGroup, load, 0); st != StatusOK {
		t.Fatalf("join at p2: %v", st)
	}
	pn.settle()
	n1, n2 := reviewTargets(p1, testGroup), reviewTargets(p2, testGroup)
	t.Logf("targets left: p1 %d, p2 %d", n1, n2)
	if n1 == 0 && n2 == 0 {
		t.Errorf("a policy conflict between two JAPs dropped the targets of both (one policy should win)")
	}
	// And both refuse their own targets' rejoin for RegisterTTL.
	s1 := policyJoin(t, pn, p1, 0, testGroup, router.Policy{}, 0)
	s2 := policyJoin(t, pn, p2, 1, testGroup, load, 0)
	if s1 == StatusRefused && s2 == StatusRefused {
		t.Errorf("both JAPs refuse their own targets' rejoin (p1: %v, p2: %v): the group has no target anywhere for %v", s1, s2, p1.cfg.RegisterTTL)
	}
}

// TestReplicateOneIsNoReplication: "replicate = 1" and no replicate are the
// same policy, so neither join is refused.
func TestReplicateOneIsNoReplication(t *testing.T) {
	pn := newProxyNet(t, 1, 2, nil)
	p := pn.p("p1")
	g := router.Group{Addr: testGroup.Addr, Port: 53, Proto: router.ProtoUDP}
	for i := range 2 {
		p.cfg.Edges[edgeAddr(i)].Groups = append(p.cfg.Edges[edgeAddr(i)].Groups, g)
	}
	if st := policyJoin(t, pn, p, 0, g, router.Policy{}, 0); st != StatusOK {
		t.Fatalf("first join: %v", st)
	}
	if st := policyJoin(t, pn, p, 1, g, router.Policy{Replicate: 1}, 0); st != StatusOK {
		t.Errorf("a target with replicate=1 (no replication) is refused (%v) beside one without replicate", st)
	}
}

// TestTargetKeepaliveAgainstTimeout: a target whose keepalive interval is
// above a third of the JAP's target_timeout would be dropped between
// keepalives: its join is refused (the reason says why); one at a third is
// kept through five intervals.
func TestTargetKeepaliveAgainstTimeout(t *testing.T) {
	pn := newProxyNet(t, 1, 1, nil) // TargetTimeout: the default 15 s
	p := pn.p("p1")
	if st := policyJoin(t, pn, p, 0, testGroup, router.Policy{}, 20*time.Second); st != StatusRefused {
		t.Fatalf("join with keepalive 20s: %v, want refused", st)
	}
	ka := 5 * time.Second
	if st := policyJoin(t, pn, p, 0, testGroup, router.Policy{}, ka); st != StatusOK {
		t.Fatalf("join: %v", st)
	}
	drops := 0
	for range 5 {
		pn.run(ka)
		// The keepalive, on time.
		if !p.keepalive(edgeAddr(0), testGroup) {
			drops++
			policyJoin(t, pn, p, 0, testGroup, router.Policy{}, ka) // "unknown": join again
		}
	}
	if drops > 0 {
		t.Errorf("a target keeping alive every %v, on time, was dropped %d times in 5 intervals (timeout %v)", ka, drops, p.targetTimeout(ka))
	}
}

// TestJoinDuringUndetectedPartition: a proxy cut off shortly before a
// newcomer joins, but not yet declared dead, misses the flood; the
// anti-entropy digests tell it of the newcomer once the cut heals.
func TestJoinDuringUndetectedPartition(t *testing.T) {
	n := newHarness(t, 1, unitLink)
	p1, p2, p3, nm := meshMember("p1", 1), meshMember("p2", 2), meshMember("p3", 3), meshMember("n", 9)
	n.add(p1, p2, p3)
	b := n.add(p2, p1, p3)
	n.add(p3, p1, p2)
	n.run(3 * time.Second)
	c := n.add(nm, p1)
	n.isolate("p2")
	n.run(10 * time.Second) // n joins at once; p2 is declared dead later
	if st, _, _ := n.p("p1").health.state("p2"); st != StateDead {
		t.Fatalf("p2 not dead at p1: %v", st)
	}
	n.net.Heal()
	n.run(60 * time.Second)
	t.Logf("p2 knows %v, live %v; n knows %v, live %v", knownNames(b), b.Live(), knownNames(c), c.Live())
	if !slices.Contains(knownNames(b), "n") {
		t.Errorf("p2, cut off while n joined and back since, never learns n: it knows %v", knownNames(b))
	}
}

// isRecordOf reports whether m is a member record of the proxy name.
func isRecordOf(m Msg, name string) bool {
	r, ok := m.(*MemberRecord)
	return ok && r.Member.Name == name
}
