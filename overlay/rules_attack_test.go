package overlay

import (
	"slices"
	"strings"
	"testing"

	"github.com/pias-net/pias/router"
)

// TestRulesEnforcedBeforeHandlers: admitted edges forge every kind of
// proxy-only message, a target speaks to the wrong address, and a proxy
// speaks for another in a message that is never relayed; each is
// refused at HandleControl, counted by type, and changes nothing: the
// victim proxy stays alive everywhere, no registration appears, and a
// legitimate target's join and a resolve still work afterwards.
func TestRulesEnforcedBeforeHandlers(t *testing.T) {
	const client = 9
	var resolved []Event
	pn := newProxyNet(t, 3, 1, func(c *ProxyConfig) {
		c.Edges[edgeAddr(client)] = &EdgePolicy{Name: "cl9"} // a client: no groups
		c.OnEvent = func(e Event) {
			if e.Kind == EventResolved {
				resolved = append(resolved, e)
			}
		}
	})
	pn.run(pn.p("p1").ProbeInterval() * 30) // every proxy alive everywhere
	p1, p2 := pn.p("p1"), pn.p("p2")
	forged := []wmsg{
		failMsg("p2", 1<<30), // declare a live proxy dead
		{0, &Alive{Name: "p2", Incarnation: 1 << 30}},
		{0, &Register{Group: testGroup, JAP: "p3", Targets: 5, TTL: 30e9}},
		{0, &GroupPolicy{Group: testGroup, Policy: router.Policy{Select: router.SelectRandom}}},
		{0, &MemberRecord{Member: Member{Name: "evil", Addr: edgeAddr(client), Cluster: "c1", PublicKey: [32]byte{1}, Endpoint: p2.cfg.Self.Endpoint}, Incarnation: 1, Sync: true}},
		{0, &Moved{Targets: []MovedTarget{{Group: testGroup, Name: "t0", Target: edgeAddr(0), Epoch: 1 << 30}}}},
		{7, &ResolveReply{Group: testGroup, TTL: 10e9, JAPs: []router.JAP{{Addr: edgeAddr(client), Targets: 1}}}},
		{0, &NoTarget{Group: testGroup}},
		{0, admitsMsg("p2", 1<<30, [32]byte{9}).m},
	}
	for _, from := range []int{0, client} {
		for _, m := range forged {
			pn.edgeSend(from, p1.cfg.Self.Addr, m)
		}
	}
	pn.settle()
	st := p1.Stats()
	for _, m := range forged {
		if got := st.Refused[m.m.Type()]; got != 2 {
			t.Errorf("%v from a target and a client: %d refused, want 2", m.m.Type(), got)
		}
	}
	// A target's join sent to the proxy's own address (not the group's
	// anycast address) is refused too, and takes nothing.
	pn.edgeSend(0, p1.cfg.Self.Addr, edgeMsg(TypeJoin, 0, testGroup))
	pn.settle()
	if got := p1.Stats().Refused[TypeJoin]; got != 1 {
		t.Errorf("join to the proxy's own address: %d refused, want 1", got)
	}
	if ts := p1.cfg.Router.Targets(testGroup); len(ts) != 0 {
		t.Errorf("targets after refused joins: %v", ts)
	}
	// A client may not join: it is told why.
	ack := pn.answer(client, TypeJoinAck, func() { pn.anycast(client, "p1", testGroup.Addr, edgeMsg(TypeJoin, client, testGroup)) })
	if a := ack.m.(*JoinAck); a.Status != StatusRefused || !strings.Contains(a.Reason, `"cl9" may not join`) {
		t.Errorf("a client's join: %v %q, want refused, may not join", a.Status, a.Reason)
	}
	pn.run(p1.ProbeInterval() * 10)
	for _, p := range pn.proxies() {
		if st, _, _ := p.health.state("p2"); st != StateAlive {
			t.Errorf("%s sees p2 %v after forged news", p.cfg.Self.Name, st)
		}
		if !slices.Contains(p.Live(), "p2") || slices.Contains(p.Live(), "evil") {
			t.Errorf("%s lives %v after forged news", p.cfg.Self.Name, p.Live())
		}
		if japs := p.RAPTable()[testGroup]; len(japs) != 0 {
			t.Errorf("%s has forged registrations %v", p.cfg.Self.Name, japs)
		}
	}
	// A proxy may not speak for another in a message that is never
	// relayed: p2 registering as p3, asking as p3, probing as p3.
	for _, m := range []wmsg{
		{0, &Register{Group: testGroup, JAP: "p3", Targets: 5, TTL: 30e9}},
		{0, &AdmitsReq{From: "p3", Incarnation: 1}},
		{1, &Probe{From: "p3", Incarnation: 1}},
		{0, &Digest{From: "p3", Hash: 1}},
	} {
		before := p1.Stats().Refused[m.m.Type()]
		pn.sendAs("p2", "p1", m)
		pn.settle()
		if got := p1.Stats().Refused[m.m.Type()] - before; got != 1 {
			t.Errorf("p2's %v naming p3: %d refused, want 1", m.m.Type(), got)
		}
	}
	if japs := p1.RAPTable()[testGroup]; len(japs) != 0 {
		t.Errorf("a registration in another's name was taken: %v", japs)
	}
	// The overlay still works for everyone else: t0 joins, a resolve at
	// another proxy finds it.
	if st := policyJoin(t, pn, p1, 0, testGroup, router.Policy{}, 0); st != StatusOK {
		t.Fatalf("a legitimate join after the attack: %v", st)
	}
	pn.settle()
	p3 := pn.p("p3")
	p3.Resolve(testGroup)
	pn.settle()
	if len(resolved) == 0 {
		t.Fatal("p3's resolve got no answer")
	}
	if e := resolved[len(resolved)-1]; e.Proxy != "p3" || len(e.JAPs) != 1 || e.JAPs[0].Addr != p1.cfg.Self.Addr {
		t.Errorf("%s resolved %v, want JAP %v", e.Proxy, e.JAPs, p1.cfg.Self.Addr)
	}
}
