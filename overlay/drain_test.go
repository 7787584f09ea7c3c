package overlay

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// encap4 wraps the IPv4 packet b[Headroom:] in the outer header an IAP at
// src puts on it for the JAP at dst.
func encap4(src, dst netip.Addr, b []byte) []byte {
	inner := b[router.Headroom:]
	out := make([]byte, router.Headroom+20+len(inner))
	h := out[router.Headroom:]
	ipv4Header(h, router.ProtoIPIP, src, dst)
	copy(h[20:], inner)
	return out
}

// drainMsg is edge i's target draining testGroup with timeout.
func drainMsg(seq uint32, timeout time.Duration) wmsg {
	return wmsg{seq, &Drain{Group: testGroup, Port: 8080, Timeout: timeout}}
}

// TestDrain: the only target of testGroup at p2 drains while a flow to it
// is live. p2 withdraws at the group's RAPs, so an IAP's new flows go to
// p3, whose target still takes them; a new flow that reaches p2 all the
// same is dropped (DropNoTarget, for the IAP to resolve again); the live
// flow goes on, and p2 keeps answering the target's keepalives. When the
// flow ends, p2 drops the target ("drained"). A join ends a drain.
func TestDrain(t *testing.T) {
	pn := newProxyNet(t, 4, 2, nil)
	p1, p2, p3 := pn.p("p1"), pn.p("p2"), pn.p("p3")
	pn.run(p1.ProbeInterval() * 30) // every proxy alive everywhere
	pn.edgeDo(p2, TypeJoin, 0)
	pn.edgeDo(p3, TypeJoin, 1)
	rap := pn.p(p2.RAPs(testGroup)[0])
	if rapCount(rap, p2, testGroup) != 1 || rapCount(rap, p3, testGroup) != 1 {
		t.Fatalf("RAP table %v, want p2 and p3 with a target each", rap.RAPTable()[testGroup])
	}
	addr1, addr2 := p1.cfg.Self.Addr, p2.cfg.Self.Addr
	target := netip.AddrPortFrom(edgeAddr(0), 8080)
	any := netip.AddrPortFrom(testGroup.Addr, testGroup.Port)
	// The live flow, from an IAP at p1 to p2's target.
	client := netip.MustParseAddrPort("100.64.9.1:40000")
	live := func(what string) {
		t.Helper()
		b := encap4(addr1, addr2, ip4(router.ProtoTCP, client, any))
		res := p2.cfg.Router.Route(b, router.Headroom, len(b), pn.clk.Now())
		if res.Action != router.Forward || netip.AddrFrom4([4]byte(b[res.Start+16:res.Start+20])) != target.Addr() {
			t.Fatalf("%s: the live flow's packet: %+v", what, res)
		}
	}
	live("before the drain")

	ack := pn.answer(0, TypeDrainAck, func() { pn.anycast(0, "p2", testGroup.Addr, drainMsg(2, 0)) }).m.(*DrainAck)
	if ack.Status != StatusOK || ack.Flows != 1 {
		t.Fatalf("drain answered %+v, want ok with 1 flow", ack)
	}
	pn.settle()
	if n := rapCount(rap, p2, testGroup); n != 0 {
		t.Errorf("RAP counts %d targets at p2 after its only target drained: it did not withdraw", n)
	}
	if l := p2.cfg.Router.Loads(testGroup); len(l) != 1 || !l[0].Draining || l[0].Flows != 1 {
		t.Errorf("p2's router: %+v, want the target draining with its flow", l)
	}
	live("while draining")
	// An IAP with a stale list still sends a new flow to p2: dropped, so
	// that it resolves again.
	b := encap4(addr1, addr2, ip4(router.ProtoTCP, netip.MustParseAddrPort("100.64.9.2:40000"), any))
	if res := p2.cfg.Router.Route(b, router.Headroom, len(b), pn.clk.Now()); res.Reason != router.DropNoTarget {
		t.Errorf("a new flow at p2 while its target drains: %+v, want DropNoTarget", res)
	}
	// An IAP that resolves now sends its new flows to p3.
	rt1 := p1.cfg.Router
	b = ip4(router.ProtoTCP, netip.MustParseAddrPort("100.64.9.3:40000"), any)
	if res := rt1.Route(b, router.Headroom, len(b), pn.clk.Now()); res.Action != router.Queued || !res.Resolve {
		t.Fatalf("p1's first packet of the group: %+v, want a resolve", res)
	}
	p1.Resolve(testGroup)
	pn.settle()
	for i := range 20 {
		b = ip4(router.ProtoTCP, netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 10, byte(i)}), 40000), any)
		res := rt1.Route(b, router.Headroom, len(b), pn.clk.Now())
		if res.Action != router.Forward || netip.AddrFrom4([4]byte(b[res.Start+16:res.Start+20])) != p3.cfg.Self.Addr {
			t.Fatalf("p1's new flow %d: %+v to %v, want p3", i, res, netip.AddrFrom4([4]byte(b[res.Start+16:res.Start+20])))
		}
	}
	// Still a target: its keepalives are answered, and a repeated drain
	// says how many flows are left.
	if ka := pn.answer(0, TypeKeepaliveAck, func() { pn.anycast(0, "p2", testGroup.Addr, edgeMsg(TypeKeepalive, 0, testGroup)) }).m.(*KeepaliveAck); ka.Status != StatusOK {
		t.Errorf("keepalive of a draining target answered %v", ka.Status)
	}
	pn.run(10 * time.Second)
	live("10s on")

	// The flow ends: p2 drops the target at its next tick.
	mark := len(pn.events)
	p2.cfg.Router.Expire(pn.clk.Now() + int64(3*time.Hour))
	pn.run(200 * time.Millisecond)
	if !slices.ContainsFunc(pn.events[mark:], func(e Event) bool {
		return e.Kind == EventDrained && e.Proxy == "p2" && e.Target == target && e.Reason == "its flows ended"
	}) {
		t.Errorf("no drained event at p2: %+v", pn.events[mark:])
	}
	if ack := pn.answer(0, TypeDrainAck, func() { pn.anycast(0, "p2", testGroup.Addr, drainMsg(3, 0)) }).m.(*DrainAck); ack.Status != StatusUnknown {
		t.Errorf("drain after the flows ended answered %+v, want unknown (drained)", ack)
	}

	// Undrain: a join again, and p2 registers again.
	pn.edgeDo(p2, TypeJoin, 0)
	pn.settle()
	if n := rapCount(rap, p2, testGroup); n != 1 {
		t.Errorf("RAP counts %d targets at p2 after the join that ends the drain, want 1", n)
	}
}

// TestDrainTimeout: a flow that outlives the drain's timeout is dropped
// with the target; a join before then ends the drain, with the flow kept.
func TestDrainTimeout(t *testing.T) {
	pn := newProxyNet(t, 3, 1, nil)
	p1, p2 := pn.p("p1"), pn.p("p2")
	pn.run(p1.ProbeInterval() * 30)
	pn.edgeDo(p2, TypeJoin, 0)
	any := netip.AddrPortFrom(testGroup.Addr, testGroup.Port)
	b := encap4(p1.cfg.Self.Addr, p2.cfg.Self.Addr, ip4(router.ProtoTCP, netip.MustParseAddrPort("100.64.9.1:40000"), any))
	if res := p2.cfg.Router.Route(b, router.Headroom, len(b), pn.clk.Now()); res.Action != router.Forward {
		t.Fatalf("the flow: %+v", res)
	}
	// A join ends a drain: the flow stays, the target takes new flows.
	pn.answer(0, TypeDrainAck, func() { pn.anycast(0, "p2", testGroup.Addr, drainMsg(2, 5*time.Second)) })
	pn.edgeDo(p2, TypeJoin, 0)
	if l := p2.cfg.Router.Loads(testGroup); len(l) != 1 || l[0].Draining || l[0].Flows != 1 {
		t.Fatalf("after the join: %+v, want the target not draining, with its flow", l)
	}
	pn.run(6 * time.Second)
	if l := p2.cfg.Router.Loads(testGroup); len(l) != 1 {
		t.Fatalf("the undrained target was dropped: %+v", l)
	}

	// Drain again, for 2s: the flow does not end, the timeout drops both.
	mark := len(pn.events)
	pn.run(2 * time.Second) // the join budget refills
	ack := pn.answer(0, TypeDrainAck, func() { pn.anycast(0, "p2", testGroup.Addr, drainMsg(3, 2*time.Second)) }).m.(*DrainAck)
	if ack.Status != StatusOK || ack.Flows != 1 {
		t.Fatalf("drain answered %+v", ack)
	}
	pn.run(1500 * time.Millisecond)
	if len(p2.cfg.Router.Loads(testGroup)) != 1 {
		t.Fatal("the target was dropped before its drain timed out")
	}
	pn.run(time.Second)
	if l := p2.cfg.Router.Loads(testGroup); l != nil || p2.cfg.Router.Stats().JAPFlows != 0 {
		t.Errorf("after the timeout: targets %+v, %d flows", l, p2.cfg.Router.Stats().JAPFlows)
	}
	if !slices.ContainsFunc(pn.events[mark:], func(e Event) bool {
		return e.Kind == EventDrained && strings.Contains(e.Reason, "timed out with 1 flows left")
	}) {
		t.Errorf("no drained event for the timeout: %+v", pn.events[mark:])
	}
}

// TestDrainUnknownAndForged: a drain from a target that is not joined here
// is answered "unknown" and changes nothing; one from a proxy or to the
// proxy's own address is refused by the rules.
func TestDrainUnknownAndForged(t *testing.T) {
	pn := newProxyNet(t, 2, 2, nil)
	p1 := pn.p("p1")
	pn.edgeDo(p1, TypeJoin, 0)
	if ack := pn.answer(1, TypeDrainAck, func() { pn.anycast(1, "p1", testGroup.Addr, drainMsg(2, 0)) }).m.(*DrainAck); ack.Status != StatusUnknown {
		t.Errorf("drain of a target not joined: %+v", ack)
	}
	refused := p1.Stats().Refused[TypeDrain]
	pn.edgeSend(0, p1.cfg.Self.Addr, drainMsg(3, 0)) // to the proxy's own address
	pn.sendAs("p2", "p1", drainMsg(4, 0))
	pn.settle()
	if got := p1.Stats().Refused[TypeDrain] - refused; got != 2 {
		t.Errorf("%d forged drains refused, want 2", got)
	}
	if l := p1.cfg.Router.Loads(testGroup); len(l) != 1 || l[0].Draining {
		t.Errorf("target 0 after the forged drains: %+v", l)
	}
}
