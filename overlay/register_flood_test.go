package overlay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// TestRegisterFloodBounded: a mesh-key holder (proxy p3) registers
// 20,000 made-up groups at p1 with the longest TTL the wire allows (49
// days). p1 keeps an entry for every one it is a RAP of: no cap on groups
// per JAP, no cap on the TTL, so the table outlives the sender by weeks.
func TestRegisterFloodBounded(t *testing.T) {
	pn := newProxyNet(t, 3, 0, nil)
	pn.run(2 * time.Second)
	const n = 20000
	for i := range n {
		g := router.Group{Addr: netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)}), Port: 80, Proto: router.ProtoTCP}
		pn.sendAs("p3", "p1", wmsg{0, &Register{Group: g, JAP: "p3", Targets: 1, Weight: 1, TTL: time.Duration(1<<32-1) * time.Millisecond}})
	}
	pn.settle()
	pn.run(10 * time.Minute)
	got := len(pn.p("p1").RAPTable())
	t.Logf("%d registrations of made-up groups with TTL 49 days: p1 holds %d groups 10 minutes later", n, got)
	if got > 1000 {
		t.Errorf("one proxy made p1 hold %d RAP entries of made-up groups for 49 days", got)
	}
}
