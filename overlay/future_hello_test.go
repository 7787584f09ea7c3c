package overlay

import (
	"github.com/pias-net/pias/admit"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestFutureHellosLockOutNoNewcomer: a mesh-key holder sends seed p1
// admit.MaxSeen hellos dated 119 s ahead (within underlaySkew). They fill
// p1's replay cache; the next genuine hello evicts the "oldest", a future
// one, raising the floor to now+119 s, so every genuine hello is refused
// as a replay for two minutes (and the flood can be repeated).
func TestFutureHellosLockOutNoNewcomer(t *testing.T) {
	h := newHarness(t, 1, unitLink)
	p1 := meshMember("p1", 1)
	seed := h.add(p1)
	h.run(time.Second)

	// The flood: records that p1 refuses (its own name), so nobody is added.
	future := h.clk.Wall().Add(underlaySkew - time.Second)
	rec := MemberRecord{Member: meshMember("p1", 50), Incarnation: 1}
	for i := range admit.MaxSeen {
		body, err := appendHello(nil, helloMsg{nonce: uint64(i) + 1, seed: "p1", rec: rec})
		if err != nil {
			t.Fatal(err)
		}
		h.net.Send(netip.MustParseAddrPort("203.0.113.9:51820"), p1.Endpoint, sealUnderlay(testMeshKey, kindHello, future, body))
	}
	h.settle()

	nm := meshMember("n", 8)
	h.add(nm, p1)
	admitted := func() bool { return slices.Contains(knownNames(seed), "n") }
	for range 20 {
		h.run(time.Second)
		if admitted() {
			return
		}
	}
	seed.mem.mu.Lock()
	floor := seed.mem.seen.Floor()
	seed.mem.mu.Unlock()
	t.Errorf("a genuine newcomer was not admitted within 20 s after %d future-dated hellos: the replay floor is %v ahead of the seed's clock",
		admit.MaxSeen, time.Duration(floor-h.clk.Wall().UnixMilli())*time.Millisecond)
}

// TestRedTeamHelloFloodAddsMembers: a mesh-key holder sends seed p1 hellos
// for 3,000 made-up proxies (fresh names, addresses and keys). Each is
// admitted: a WireGuard peer, a member, flooded to everyone. Nothing caps
// the member table, so one key holder grows every proxy's state at will.
