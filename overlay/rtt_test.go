package overlay

import (
	"cmp"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// memberInfo is how p sees the member called name.
func memberInfo(t *testing.T, p *Proxy, name string) MemberInfo {
	t.Helper()
	for _, m := range p.Members() {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("%s does not know %s", p.cfg.Self.Name, name)
	return MemberInfo{}
}

// TestProximityIgnoresHandshakeAndStaleRTTs: p1 (cluster c1) measures p2
// (c2) at 10 ms and the three proxies of c3 at 2 ms. Its first probes of
// one of them, w3, take 600 ms (they wait as for a WireGuard handshake),
// and w3 later leaves p1's watch set; another, w2, is then cut off from
// p1 alone. Neither the first samples nor RTTs no longer measured may
// make c3 look farther than c2, and a dead member has no RTT.
func TestProximityIgnoresHandshakeAndStaleRTTs(t *testing.T) {
	h := newHarness(t, 1, unitLink)
	p1m, p2m := testMember(1, "c1"), testMember(2, "c2")
	c3 := []Member{testMember(3, "c3"), testMember(4, "c3"), testMember(5, "c3")}
	all := append([]Member{p1m, p2m}, c3...)
	// p1 watches 2 of c3's 3 (WatchPerCluster), the heaviest by
	// rendezvous weight: w1 and w2 while w1 lives, w2 and w3 while it is
	// dead.
	slices.SortFunc(c3, func(a, b Member) int {
		return cmp.Compare(pairWeight(p1m.Name, b.Name), pairWeight(p1m.Name, a.Name))
	})
	w1, w2, w3 := c3[0].Name, c3[1].Name, c3[2].Name
	for _, m := range all {
		h.start(m, all, nil)
	}
	p1 := h.p("p1")
	interval := p1.ProbeInterval()
	h.kill(w1)
	h.net.SetLink("p1", "p2", overlaytest.Link{Delay: 5 * time.Millisecond})
	// Until the first answer, p1's probes of w3 take 600 ms (within the
	// probeWindow that acks match).
	h.net.SetLink("p1", w3, overlaytest.Link{Delay: 300 * time.Millisecond})
	var worst time.Duration
	watch := h.clk.Every(time.Millisecond, func() { worst = max(worst, memberInfo(t, p1, w3).RTT) })
	// p1 starts probing w3 at its first tick after w1's death; the answer
	// to that first probe comes 700 ms after the death. The path is fast
	// for every probe sent after it.
	h.until(5*time.Second, "p1 declares "+w1+" dead", func() bool { return h.state("p1", w1) == StateDead })
	h.run(interval + 550*time.Millisecond)
	h.net.SetLink("p1", w3, unitLink)

	japs := func(names ...string) []router.JAP {
		var out []router.JAP
		for _, n := range names {
			out = append(out, router.JAP{Addr: h.node(n).m.Addr, Targets: 1})
		}
		return out
	}
	order := func(js []router.JAP) []netip.Addr {
		var out []netip.Addr
		for _, j := range js {
			out = append(out, j.Addr)
		}
		return out
	}
	wantRank := func(what string, in []router.JAP, want []router.JAP) {
		t.Helper()
		if got := p1.rankByDistance(in); !slices.Equal(order(got), order(want)) {
			t.Errorf("%s: p1 ranks %v, want %v (members: %+v)", what, order(got), order(want), p1.Members())
		}
	}

	h.run(10 * interval)
	watch.Stop()
	if worst > 10*time.Millisecond {
		t.Errorf("p1 measured %s at up to %v: it counted samples that waited for the first answer", w3, worst)
	}
	if r := memberInfo(t, p1, w3).RTT; r <= 0 || r > 3*time.Millisecond {
		t.Errorf("p1 measures %s at %v, want about 2ms", w3, r)
	}
	wantRank("w3 watched", japs("p2", w3), japs(w3, "p2"))

	// w1 comes back: p1 watches it and w2, and stops probing w3.
	h.restart(w1)
	h.until(5*time.Second, "p1 watches "+w1+" again", func() bool {
		mi := memberInfo(t, p1, w1)
		return mi.State == StateAlive && mi.Watched && !memberInfo(t, p1, w3).Watched
	})
	h.run(10 * interval)
	if mi := memberInfo(t, p1, w3); mi.RTT != 0 {
		t.Errorf("p1 no longer probes %s but shows its RTT %v", w3, mi.RTT)
	}
	if r := memberInfo(t, p1, w1).RTT; r <= 0 || r > 3*time.Millisecond {
		t.Errorf("p1 measures %s at %v after its comeback, want about 2ms", w1, r)
	}
	// w3 is as far as the members of c3 that p1 measures now.
	wantRank("w3 unwatched", japs("p2", w3), japs(w3, "p2"))

	// Cut off from p1 alone, w2 stays alive (others reach it) but p1's
	// RTT of it ages out.
	if r := memberInfo(t, p1, w2).RTT; r <= 0 {
		t.Fatalf("p1 has no RTT of %s before the cut", w2)
	}
	h.net.Cut("p1", w2)
	took := h.until(2*rttAgeProbes*interval, "p1's RTT of "+w2+" ages out", func() bool { return memberInfo(t, p1, w2).RTT == 0 })
	if mi := memberInfo(t, p1, w2); mi.State == StateDead || !mi.Watched {
		t.Errorf("%s: %+v, want watched and not dead (the RTT must age, not go with a death)", w2, mi)
	}
	if took > (rttAgeProbes+1)*interval {
		t.Errorf("p1's RTT of %s lasted %v after its last sample, want at most %v", w2, took, (rttAgeProbes+1)*interval)
	}
	wantRank("w2 cut off", japs("p2", w2), japs(w2, "p2"))

	// A dead member has no RTT.
	if memberInfo(t, p1, w1).RTT == 0 {
		t.Fatalf("p1 has no RTT of %s before it dies", w1)
	}
	h.kill(w1)
	h.until(5*time.Second, "p1 declares "+w1+" dead", func() bool { return h.state("p1", w1) == StateDead })
	if mi := memberInfo(t, p1, w1); mi.RTT != 0 {
		t.Errorf("dead %s shows RTT %v", w1, mi.RTT)
	}
}
