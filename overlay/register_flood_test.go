package overlay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// TestRegisterFloodBounded: a mesh-key holder (proxy p3) registers 2,000
// made-up groups at p1 with the longest TTL the wire allows (49 days).
// Before, p1 kept an entry for each it is a RAP of for 49 days; the TTL is
// now capped at 3×register_ttl, so they are gone 90 s later.
func TestRegisterFloodBounded(t *testing.T) {
	pn := newProxyNet(t, 3, 0, nil)
	pn.run(2 * time.Second)
	const n = 2000
	for i := range n {
		g := router.Group{Addr: netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)}), Port: 80, Proto: router.ProtoTCP}
		pn.sendAs("p3", "p1", wmsg{0, &Register{Group: g, JAP: "p3", Targets: 1, Weight: 1, TTL: time.Duration(1<<32-1) * time.Millisecond}})
	}
	pn.settle()
	held := len(pn.p("p1").RAPTable())
	pn.run(2 * time.Minute) // the cap: 3×register_ttl, 90 s
	got := len(pn.p("p1").RAPTable())
	t.Logf("%d registrations of made-up groups with TTL 49 days: p1 holds %d groups, and %d 2 minutes later", n, held, got)
	if held == 0 {
		t.Fatal("p1 took none of them: the test tests nothing")
	}
	if got != 0 {
		t.Errorf("one proxy made p1 hold %d RAP entries of made-up groups past 3×register_ttl", got)
	}
}

// TestRAPGroupsPerJAPBounded: one JAP can hold at most maxGroupsPerJAP
// groups at a RAP; other JAPs still register.
func TestRAPGroupsPerJAPBounded(t *testing.T) {
	var r rap
	r.init()
	jap, other := netip.MustParseAddr("100.64.0.3"), netip.MustParseAddr("100.64.0.2")
	reg := func(from netip.Addr, i int) {
		g := router.Group{Addr: netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)}), Port: uint16(80 + i>>16), Proto: router.ProtoTCP}
		r.register(from, &Register{Group: g, JAP: "x", Targets: 1, Weight: 1, TTL: time.Minute}, false, 0)
	}
	for i := range maxGroupsPerJAP + 100 {
		reg(jap, i)
	}
	if r.perJAP[jap] != maxGroupsPerJAP || len(r.entries) != maxGroupsPerJAP {
		t.Errorf("one JAP holds %d groups (%d in the table), want %d", r.perJAP[jap], len(r.entries), maxGroupsPerJAP)
	}
	reg(other, maxGroupsPerJAP+50)
	if r.perJAP[other] != 1 {
		t.Error("another JAP's registration was refused")
	}
	r.expire(int64(2 * time.Minute))
	if len(r.perJAP) != 0 || len(r.entries) != 0 {
		t.Errorf("after expiry: %d JAPs counted, %d groups", len(r.perJAP), len(r.entries))
	}
}

// TestRAPWithdrawalsPerJAPBounded: a JAP that withdraws made-up groups
// leaves at most maxGroupsPerJAP withdrawals remembered at a RAP, until
// they expire; another JAP's withdrawal is still kept, and still orders
// its reports.
func TestRAPWithdrawalsPerJAPBounded(t *testing.T) {
	var r rap
	r.init()
	jap, other := netip.MustParseAddr("100.64.0.3"), netip.MustParseAddr("100.64.0.2")
	group := func(i int) router.Group {
		return router.Group{Addr: netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)}), Port: uint16(80 + i>>16), Proto: router.ProtoTCP}
	}
	for i := range maxGroupsPerJAP + 100 {
		r.register(jap, &Register{Group: group(i), JAP: "x", TTL: time.Minute, Version: uint64(i + 1)}, false, 0)
	}
	if r.tombsOf[jap] != maxGroupsPerJAP || len(r.tombs) != maxGroupsPerJAP {
		t.Errorf("one JAP left %d withdrawals (%d groups), want %d", r.tombsOf[jap], len(r.tombs), maxGroupsPerJAP)
	}
	g := group(maxGroupsPerJAP + 50)
	r.register(other, &Register{Group: g, JAP: "y", TTL: time.Minute, Version: 10}, false, 0)
	r.register(other, &Register{Group: g, JAP: "y", Targets: 1, Weight: 1, TTL: time.Minute, Version: 9}, false, 0)
	if r.entries[g][other] != nil {
		t.Error("another JAP's count, older than its withdrawal, was taken")
	}
	r.register(other, &Register{Group: g, JAP: "y", Targets: 1, Weight: 1, TTL: time.Minute, Version: 11}, false, 0)
	if r.entries[g][other] == nil {
		t.Error("another JAP's count, newer than its withdrawal, was refused")
	}
	r.expire(int64(2 * time.Minute))
	if len(r.tombsOf) != 0 || len(r.tombs) != 0 || len(r.entries) != 0 {
		t.Errorf("after expiry: %d JAPs with withdrawals, %d groups, %d entries", len(r.tombsOf), len(r.tombs), len(r.entries))
	}
}
