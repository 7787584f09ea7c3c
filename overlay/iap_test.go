package overlay

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// ip4 is an IPv4 packet from src to dst carrying a UDP datagram, or a
// TCP SYN (no L4 checksum: the router does not check it), with the
// router's headroom before it.
func ip4(proto uint8, src, dst netip.AddrPort) []byte {
	l4 := 8
	if proto == router.ProtoTCP {
		l4 = 20
	}
	b := make([]byte, router.Headroom+20+l4)
	h := b[router.Headroom:]
	ipv4Header(h, proto, src.Addr(), dst.Addr())
	binary.BigEndian.PutUint16(h[20:], src.Port())
	binary.BigEndian.PutUint16(h[22:], dst.Port())
	if proto == router.ProtoTCP {
		h[32], h[33] = 5<<4, 0x02 // data offset, SYN
	} else {
		binary.BigEndian.PutUint16(h[24:], 8)
	}
	return b
}

// ipv4Header writes, at the start of h (the whole packet), an IPv4 header
// from src to dst for proto, with its length and checksum.
func ipv4Header(h []byte, proto uint8, src, dst netip.Addr) {
	h[0], h[8], h[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(h[2:], uint16(len(h)))
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
}

// TestResolveFloodAtIAP: a client sends to thousands of fresh groups
// through p1, as a node would (each Queued result that asks for a resolve
// calls Resolve). p1 sends at most the router's per-client cap of RESOLVE
// messages, whether the RAPs answer "no such group" (negative entries,
// charged to the client) or stay silent (p1 gives up after its tries and
// the router's queues go with it); meanwhile a victim's new group
// resolves.
func TestResolveFloodAtIAP(t *testing.T) {
	const perClient = 8
	pn := newProxyNet(t, 4, 1, func(c *ProxyConfig) {
		r, err := router.New(router.Config{Self: []netip.Addr{c.Self.Addr}, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")},
			ControlPort: testCtrl, MaxResolvesPerSource: perClient})
		if err != nil {
			t.Fatal(err)
		}
		c.Router = r
	})
	pn.run(pn.p("p1").ProbeInterval() * 30) // every proxy alive everywhere
	p1, p2 := pn.p("p1"), pn.p("p2")
	pn.edgeDo(p2, TypeJoin, 0) // a target of testGroup at p2
	rt := p1.cfg.Router

	// RESOLVE messages p1 puts on the wire; silent loses those of fresh
	// groups.
	var wire int
	silent := false
	pn.dropMsgs(func(src, dst netip.Addr, m Msg) bool {
		r, ok := m.(*Resolve)
		if !ok || src != p1.cfg.Self.Addr {
			return false
		}
		wire++
		return silent && r.Group != testGroup
	})
	send := func(proto uint8, src, dst netip.AddrPort) router.Result {
		b := ip4(proto, src, dst)
		res := rt.Route(b, router.Headroom, len(b), pn.clk.Now())
		if res.Action == router.Queued && res.Resolve {
			p1.Resolve(res.Group)
		}
		return res
	}
	// flood sends to n fresh groups from src, those of which p1 is not a
	// RAP (so each resolve goes on the wire), and counts the resolves the
	// router asked for.
	next := 0
	flood := func(src netip.AddrPort, n int) (resolves int) {
		for sent := 0; sent < n; next++ {
			dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 65, byte(next >> 8), byte(next)}), uint16(1000+next))
			g := router.Group{Addr: dst.Addr(), Port: dst.Port(), Proto: router.ProtoUDP}
			if slices.Contains(p1.RAPs(g), "p1") {
				continue
			}
			sent++
			if send(router.ProtoUDP, src, dst).Resolve {
				resolves++
			}
		}
		return resolves
	}

	// The RAPs answer: no such group.
	attacker := netip.AddrPortFrom(edgeAddr(7), 5000)
	if got := flood(attacker, 2000); got != perClient {
		t.Errorf("the router asked %d resolves, want %d", got, perClient)
	}
	pn.settle()
	if wire != perClient {
		t.Errorf("%d RESOLVE messages for 2000 unknown groups, want %d", wire, perClient)
	}
	if got := flood(attacker, 2000); got != 0 {
		t.Errorf("%d more resolves while the negative entries live", got)
	}
	drops := rt.Stats().Drops
	t.Logf("answered: %d resolves on the wire; drops: %d resolve-limit", wire, drops[router.DropResolveLimit])

	// The RAPs are silent: p1 tries each resolve Replicas*2 times, then
	// gives up, and the router's queue goes with it. (The harness never
	// calls Router.Expire: only giving up empties the queues.)
	silent, wire = true, 0
	attacker2 := netip.AddrPortFrom(edgeAddr(8), 5000)
	if got := flood(attacker2, 2000); got != perClient {
		t.Errorf("silent RAPs: the router asked %d resolves, want %d", got, perClient)
	}
	// A victim's packet to a group that exists still goes, while both
	// attackers are at their caps.
	var resolvedTo []router.JAP
	p1.cfg.OnEvent = func(e Event) {
		if e.Kind == EventResolved && e.Group == testGroup {
			resolvedTo = e.JAPs
		}
	}
	before := rt.Stats().Forwarded
	victim := netip.AddrPortFrom(edgeAddr(9), 5000)
	if res := send(router.ProtoTCP, victim, netip.AddrPortFrom(testGroup.Addr, testGroup.Port)); res.Action != router.Queued || !res.Resolve {
		t.Fatalf("the victim's packet: %+v, want queued and resolved", res)
	}
	if got := rt.Stats().Resolving; got != perClient+1 {
		t.Errorf("%d groups being resolved, want %d", got, perClient+1)
	}
	pn.run(3 * time.Second)
	if len(resolvedTo) != 1 || resolvedTo[0].Addr != p2.cfg.Self.Addr || rt.Stats().Forwarded != before+1 {
		t.Errorf("the victim's group resolved to %v, %d packets forwarded; want p2 and 1", resolvedTo, rt.Stats().Forwarded-before)
	}
	maxTries := 2 * p1.cfg.Replicas
	if wire > perClient*maxTries+1 {
		t.Errorf("%d RESOLVE messages to silent RAPs, want at most %d", wire, perClient*maxTries+1)
	}
	st := rt.Stats()
	if st.Resolving != 0 || st.QueuedBytes != 0 {
		t.Errorf("after giving up: %d groups being resolved, %d bytes queued", st.Resolving, st.QueuedBytes)
	}
	if st.Drops[router.DropResolveTimeout] != perClient {
		t.Errorf("%d resolve-timeout drops, want %d", st.Drops[router.DropResolveTimeout], perClient)
	}
	t.Logf("silent: %d resolves on the wire; drops: %d resolve-timeout", wire, st.Drops[router.DropResolveTimeout])
}
