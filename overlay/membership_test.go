package overlay

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

func TestShouldReport(t *testing.T) {
	for _, c := range []struct {
		last, n int
		pct     float64
		want    bool
	}{
		{0, 0, 25, false},
		{0, 1, 25, true},   // 0→n
		{0, 100, 25, true}, // 0→n
		{1, 0, 25, true},   // n→0
		{40, 0, 25, true},  // n→0, however far
		{1, 0, 1000, true}, // n→0 whatever the threshold
		{0, 1, 1000, true}, // 0→n whatever the threshold
		{1, 1, 25, false},
		{1, 2, 25, true}, // +100 %
		{3, 4, 25, true}, // +33 %
		{4, 5, 25, false},
		{4, 3, 25, false}, // exactly 25 %: not more than the threshold
		{4, 6, 25, true},
		{4, 2, 25, true},
		{8, 10, 25, false},
		{8, 11, 25, true},
		{100, 125, 25, false},
		{100, 126, 25, true},
		{100, 74, 25, true},
		{100, 75, 25, false},
		{10, 11, 0, true}, // exact reporting
		{10, 10, 0, false},
		{10, 14, 50, false},
		{10, 16, 50, true},
	} {
		if got := shouldReport(c.last, c.n, c.pct); got != c.want {
			t.Errorf("shouldReport(last %d, now %d, %g%%) = %v, want %v", c.last, c.n, c.pct, got, c.want)
		}
	}
}

// newProxyNet starts n proxies p1…pn of one cluster as a static full mesh,
// on the unit tests' links; edges 0…edges-1 may join testGroup at any of
// them. mod, if set, changes each proxy's config.
func newProxyNet(t *testing.T, n, edges int, mod func(*ProxyConfig)) *harness {
	h := newHarness(t, 1, unitLink)
	var members []Member
	for i := range n {
		members = append(members, testMember(i+1, "c1"))
	}
	// Full rights: these tests are about membership, not rights. One
	// policy per edge, as a proxy's file gives (budgets are per edge).
	policies := map[netip.Addr]*EdgePolicy{}
	for i := range edges {
		policies[edgeAddr(i)] = &EdgePolicy{Name: fmt.Sprintf("t%d", i), PublicKey: [32]byte{0xed, byte(i), byte(i >> 8)},
			Groups: []router.Group{testGroup}, SetsPolicy: true, MaxWeight: MaxWeight}
	}
	for _, m := range members {
		h.start(m, members, func(c *ProxyConfig) {
			c.Edges = policies
			if mod != nil {
				mod(c)
			}
		})
	}
	return h
}

// proxies lists the proxies, by name.
func (h *harness) proxies() []*Proxy {
	var out []*Proxy
	for _, o := range h.net.Hosts() {
		if n := h.nodes[o.Name()]; n != nil && n.p != nil {
			out = append(out, n.p)
		}
	}
	return out
}

// edgeDo has edge i's target join or leave testGroup, sent to the group's
// anycast address and delivered at jap, and settles.
func (h *harness) edgeDo(jap *Proxy, typ Type, i int) {
	h.t.Helper()
	h.anycast(i, jap.cfg.Self.Name, testGroup.Addr, edgeMsg(typ, i, testGroup))
	h.settle()
}

// registers counts the registrations the group's RAPs received.
func (h *harness) registers(jap *Proxy) map[string]uint64 {
	out := map[string]uint64{}
	for _, name := range jap.RAPs(testGroup) {
		out[name] = h.p(name).Stats().Registers
	}
	return out
}

// rapCount is the count of jap's targets the group's RAP rap knows.
func rapCount(rap, jap *Proxy, g router.Group) int {
	for _, j := range rap.RAPTable()[g] {
		if j.Addr == jap.cfg.Self.Addr {
			return j.Targets
		}
	}
	return 0
}

func TestTwoTierMembership(t *testing.T) {
	const targets = 10
	pn := newProxyNet(t, 4, targets, nil)
	// A JAP that is not a RAP of the group, so every registration crosses
	// the network.
	var jap *Proxy
	for _, p := range pn.proxies() {
		if name := p.cfg.Self.Name; !contains(p.RAPs(testGroup), name) && !contains(p.RAPs(router.EchoGroup(testGroup.Addr)), name) {
			jap = p
			break
		}
	}
	if jap == nil {
		t.Skip("every proxy is a RAP of the group or its echo group")
	}
	raps := jap.RAPs(testGroup)
	before := pn.registers(jap)
	for i := range targets {
		pn.edgeDo(jap, TypeJoin, i)
		pn.run(100 * time.Millisecond)
		for _, name := range raps {
			// What the RAP knows is what the rule lets it know: the JAP
			// would not report the count it has now.
			if got := rapCount(pn.p(name), jap, testGroup); shouldReport(got, i+1, DefaultInaccuracy) {
				t.Fatalf("after %d joins RAP %s counts %d: beyond %d%%", i+1, name, got, DefaultInaccuracy)
			}
		}
	}
	st := jap.Stats()
	t.Logf("%d joins: JAP sent %d registrations (group and echo, %d RAPs each), suppressed %d count changes",
		targets, st.RegistersSent, len(raps), st.RegistersSuppressed)
	// The same joins with every change reported, for comparison.
	exact := newProxyNet(t, 4, targets, func(c *ProxyConfig) { c.Inaccuracy = -1 })
	ejap := exact.p(jap.cfg.Self.Name)
	ebefore := exact.registers(ejap)
	for i := range targets {
		exact.edgeDo(ejap, TypeJoin, i)
	}
	eafter, after := exact.registers(ejap), pn.registers(jap)
	for _, name := range raps {
		got, base := after[name]-before[name], eafter[name]-ebefore[name]
		// Registers counts the group's and, when this RAP is one of the
		// echo group too, its registrations.
		t.Logf("RAP %s received %d registrations for %d joins (%d when every change is reported)", name, got, targets, base)
		if got*10 > base*6 {
			t.Errorf("RAP %s received %d registrations for %d joins, %d without the threshold: it saves too little", name, got, targets, base)
		}
		count := rapCount(pn.p(name), jap, testGroup)
		if shouldReport(count, targets, DefaultInaccuracy) {
			t.Errorf("RAP %s counts %d of %d targets: beyond %d%%", name, count, targets, DefaultInaccuracy)
		}
		t.Logf("RAP %s counts %d of %d targets", name, count, targets)
	}
	if st.RegistersSuppressed == 0 {
		t.Error("no count change was suppressed")
	}

	// The slow refresh brings the count up to date.
	pn.run(jap.cfg.RegisterTTL/3 + time.Second)
	pn.settle()
	for _, name := range raps {
		if got := rapCount(pn.p(name), jap, testGroup); got != targets {
			t.Errorf("after the refresh RAP %s counts %d, want %d", name, got, targets)
		}
	}

	// Leaves within the threshold are not told; the last one (n→0) is, at once.
	suppressed := jap.Stats().RegistersSuppressed
	for i := range targets - 1 {
		pn.edgeDo(jap, TypeLeave, i)
		for _, name := range raps {
			if got := rapCount(pn.p(name), jap, testGroup); shouldReport(got, targets-1-i, DefaultInaccuracy) {
				t.Fatalf("with %d targets left RAP %s counts %d", targets-1-i, name, got)
			}
		}
	}
	if jap.Stats().RegistersSuppressed == suppressed {
		t.Error("no leave was suppressed")
	}
	b := pn.registers(jap)
	pn.edgeDo(jap, TypeLeave, targets-1)
	for _, name := range raps {
		rap := pn.p(name)
		if n := rap.Stats().Registers - b[name]; n == 0 {
			t.Errorf("RAP %s was not told of the last leave", name)
		}
		if _, ok := rap.RAPTable()[testGroup]; ok {
			t.Errorf("RAP %s still lists JAPs of %s after the last leave: %v", name, testGroup, rap.RAPTable()[testGroup])
		}
		if _, ok := rap.RAPTable()[router.EchoGroup(testGroup.Addr)]; ok && contains(jap.RAPs(router.EchoGroup(testGroup.Addr)), name) {
			t.Errorf("RAP %s still lists the echo group after the last leave", name)
		}
	}
	for _, name := range jap.RAPs(router.EchoGroup(testGroup.Addr)) {
		if _, ok := pn.p(name).RAPTable()[router.EchoGroup(testGroup.Addr)]; ok {
			t.Errorf("echo RAP %s still lists JAPs after the last leave", name)
		}
	}
}

// TestTwoTierMembershipRAPChange: a RAP that takes over a group learns its
// count at once, whatever the threshold.
func TestTwoTierMembershipRAPChange(t *testing.T) {
	pn := newProxyNet(t, 4, 6, nil)
	jap := pn.p("p1")
	for i := range 6 {
		pn.edgeDo(jap, TypeJoin, i)
	}
	raps := jap.RAPs(testGroup)
	// Kill a RAP other than the JAP: the others learn it through health
	// monitoring.
	victim := ""
	for _, p := range pn.proxies() {
		if p != jap && contains(raps, p.cfg.Self.Name) {
			victim = p.cfg.Self.Name
			break
		}
	}
	if victim == "" {
		t.Skip("the JAP is the only RAP")
	}
	pn.kill(victim)
	pn.until(5*time.Second, victim+" dead everywhere", pn.allSee(victim, StateDead))
	pn.settle()
	newRAPs := jap.RAPs(testGroup)
	if contains(newRAPs, victim) {
		t.Fatalf("dead %s still a RAP: %v", victim, newRAPs)
	}
	for _, name := range newRAPs {
		if got := rapCount(pn.p(name), jap, testGroup); got != 6 {
			t.Errorf("RAP %s counts %d after the RAP change, want 6", name, got)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// nonRAP is a proxy that is no RAP of testGroup: its registrations cross
// the network.
func (h *harness) nonRAP() *Proxy {
	h.t.Helper()
	for _, p := range h.proxies() {
		if !contains(p.RAPs(testGroup), p.cfg.Self.Name) {
			return p
		}
	}
	h.t.Fatal("every proxy is a RAP of the test group")
	return nil
}

// TestLostWithdrawalHealsAtNoTarget: when a JAP's withdrawal from a
// group's RAPs is lost, the first flow an IAP sends it for the group (the
// RAPs still list it) makes it withdraw again, besides telling the IAP.
func TestLostWithdrawalHealsAtNoTarget(t *testing.T) {
	pn := newProxyNet(t, 4, 1, nil)
	jap := pn.nonRAP()
	pn.edgeDo(jap, TypeJoin, 0)
	rap := pn.p(jap.RAPs(testGroup)[0])
	if n := rapCount(rap, jap, testGroup); n != 1 {
		t.Fatalf("RAP counts %d targets at the JAP, want 1", n)
	}
	// The target leaves; the withdrawal is lost on the way.
	pn.dropMsgs(func(src, dst netip.Addr, m Msg) bool { return src == jap.cfg.Self.Addr && m.Type() == TypeRegister })
	pn.edgeDo(jap, TypeLeave, 0)
	pn.dropMsgs(nil)
	if n := rapCount(rap, jap, testGroup); n != 1 {
		t.Fatalf("RAP counts %d after the lost withdrawal, want the stale 1", n)
	}
	iap := pn.p(rap.cfg.Self.Name)
	jap.NoTarget(iap.cfg.Self.Addr, testGroup)
	pn.settle()
	if n := rapCount(rap, jap, testGroup); n != 0 {
		t.Errorf("RAP still counts %d targets at the JAP after it dropped a flow for lack of one", n)
	}
	// A JAP that has a target again does not withdraw.
	pn.edgeDo(jap, TypeJoin, 0)
	pn.run(time.Second)
	jap.NoTarget(iap.cfg.Self.Addr, testGroup)
	pn.settle()
	if n := rapCount(rap, jap, testGroup); n != 1 {
		t.Errorf("RAP counts %d after a NoTarget with a target joined, want 1", n)
	}
}

// TestRefutedJAPRegistersAgain: a JAP falsely declared dead loses its
// entries at the group's RAPs; when it refutes, it registers again at once
// (it saw no member change, so nothing else would make it).
func TestRefutedJAPRegistersAgain(t *testing.T) {
	pn := newProxyNet(t, 4, 1, nil)
	jap := pn.nonRAP()
	pn.edgeDo(jap, TypeJoin, 0)
	rap := pn.p(jap.RAPs(testGroup)[0])
	var other *Proxy
	for _, p := range pn.proxies() {
		if p != jap && p != rap {
			other = p
		}
	}
	send := func(from, to *Proxy, m wmsg) {
		pn.sendAs(from.cfg.Self.Name, to.cfg.Self.Name, m)
		pn.settle()
	}
	inc := jap.health.incarnation()
	send(other, rap, failMsg(jap.cfg.Self.Name, inc))
	if n := rapCount(rap, jap, testGroup); n != 0 {
		t.Fatalf("RAP counts %d at a JAP it holds dead, want 0", n)
	}
	// The JAP hears of it (as a probe's answer would tell it) and refutes.
	send(rap, jap, failMsg(jap.cfg.Self.Name, inc))
	if st, _, _ := rap.health.state(jap.cfg.Self.Name); st == StateDead {
		t.Fatal("the refutation did not reach the RAP")
	}
	if n := rapCount(rap, jap, testGroup); n != 1 {
		t.Errorf("RAP counts %d at the JAP after it refuted, want 1", n)
	}
}
