package router

import (
	"net/netip"
	"testing"
	"time"
)

// A flow's packets through an IAP (p1) and a JAP (p2) count under their
// roles, with the bytes handed to WireGuard; the IAP's cache lookups count
// by what they found; the tables count flows by protocol.
func TestStatsByRole(t *testing.T) {
	iap, jap := newRouter(t, selfP1()), newRouter(t, selfP2())
	jap.addTarget(gTCP, tgt)
	jap.addTarget(gUDP, tgt)

	// The first packet misses and waits; the RAP's answer sends it on.
	syn := tcp(client, anyTCP, tcpSYN)
	if res, _ := route(iap, syn, 0); res.Action != Queued || !res.Resolve {
		t.Fatalf("first packet: %+v", res)
	}
	out := iap.resolved(gTCP, []JAP{{Addr: p2, Targets: 1}}, time.Minute, 0)
	if len(out) != 1 {
		t.Fatalf("resolved: %d packets", len(out))
	}
	ack := tcp(client, anyTCP, tcpACK)
	enc := mustForward(t, iap, ack, 1) // established: no lookup
	// A second client's flow finds the JAP list cached.
	client2 := netip.MustParseAddrPort("100.64.1.11:40001")
	mustForward(t, iap, tcp(client2, anyTCP, tcpSYN), 2)
	// A group that the RAP does not know: a negative entry, then drops.
	gNone := Group{Addr: anyIP, Port: 81, Proto: ProtoTCP}
	none := tcp(client, netip.AddrPortFrom(anyIP, 81), tcpSYN)
	route(iap, none, 3)
	iap.resolved(gNone, nil, time.Minute, 3)
	mustDrop(t, iap, none, 4, DropNoGroup)
	mustDrop(t, iap, none, 5, DropNoGroup)

	// At the JAP: the client's packet is NATed, the target's reply sent
	// back encapsulated; a UDP datagram makes a UDP flow.
	nat := mustForward(t, jap, enc, 1)
	reply := tcp(tgt, client, tcpACK)
	back := mustForward(t, jap, reply, 2)
	mustForward(t, jap, encap(p1, p2, udp(client, netip.AddrPortFrom(anyIP, 53), "q")), 3)
	// The IAP hands the reply to the client; it answers a ping.
	mustForward(t, iap, back, 3)
	ping := echo(client.Addr(), p1, icmpEchoRequest)
	mustForward(t, iap, ping, 4)

	want := func(r *Router, name string, pkts, bytes [NumRoles]uint64) {
		t.Helper()
		st := r.Stats()
		if st.Packets != pkts || st.Bytes != bytes {
			t.Errorf("%s: packets %v bytes %v, want %v %v", name, st.Packets, st.Bytes, pkts, bytes)
		}
		var sum uint64
		for _, n := range st.Packets {
			sum += n
		}
		if st.Forwarded != sum {
			t.Errorf("%s: forwarded %d, roles sum to %d", name, st.Forwarded, sum)
		}
	}
	n := func(b []byte) uint64 { return uint64(len(b)) }
	// Ingress: the SYN, the ACK and client2's SYN, each with the outer
	// header; reply: the decapsulated reply; echo: the ping.
	want(iap, "iap",
		[NumRoles]uint64{RoleIngress: 3, RoleReply: 1, RoleEcho: 1},
		[NumRoles]uint64{RoleIngress: 3*EncapOverhead + 2*n(syn) + n(ack), RoleReply: n(reply), RoleEcho: n(ping)})
	want(jap, "jap",
		[NumRoles]uint64{RoleJoin: 2, RoleReply: 1},
		[NumRoles]uint64{RoleJoin: n(nat) + n(udp(client, netip.AddrPortFrom(anyIP, 53), "q")), RoleReply: n(back)})

	st := iap.Stats()
	if got := st.Lookups; got != [NumLookups]uint64{LookupHit: 1, LookupMiss: 2, LookupNegative: 2} {
		t.Errorf("lookups %v, want 1 hit, 2 misses (the two first packets), 2 negative", got)
	}
	if st.IAP.Live != [NumFlowProtos]int{FlowTCP: 2} || st.IAP.New != [NumFlowProtos]uint64{FlowTCP: 2} || st.JAP != (TableStats{}) {
		t.Errorf("iap flows %+v %+v", st.IAP, st.JAP)
	}
	if st := jap.Stats(); st.JAP.Live != [NumFlowProtos]int{FlowTCP: 1, FlowUDP: 1} || st.JAP.New != [NumFlowProtos]uint64{FlowTCP: 1, FlowUDP: 1} || st.Lookups != [NumLookups]uint64{} {
		t.Errorf("jap flows %+v, lookups %v", st.JAP, st.Lookups)
	}
	// Flows that expire leave Live and stay counted in New.
	jap.Expire(sec(3600 * 3))
	if st := jap.Stats(); st.JAP.Live != [NumFlowProtos]int{} || st.JAP.New != [NumFlowProtos]uint64{FlowTCP: 1, FlowUDP: 1} || st.JAPFlows != 0 {
		t.Errorf("after expiry: jap flows %+v, %d", st.JAP, st.JAPFlows)
	}
}

// The per-packet counters stay off the heap: an established flow's packet
// allocates nothing.
func TestStatsNoAlloc(t *testing.T) {
	r := newRouter(t, selfP1())
	r.resolved(gTCP, []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
	b := tcp(client, anyTCP, tcpACK)
	buf := make([]byte, Headroom+len(b))
	copy(buf[Headroom:], b)
	mustForward(t, r, b, 0)
	if a := testing.AllocsPerRun(100, func() { r.Route(buf, Headroom, len(buf), 1) }); a != 0 {
		t.Errorf("%v allocs per packet", a)
	}
}

// The packed per-stripe words fold into the wide counters before their
// packet field fills: goroutines hammering one stripe past 2^21 packets
// each are counted exactly, bytes too, with nobody reading (the packets
// fold themselves) and with a reader, who never sees a count go down.
func TestStatsFold(t *testing.T) {
	r := newRouter(t, selfP1())
	const workers, each, size = 2, 1<<21 + 1000, 1500
	var last Stats
	for _, read := range []bool{false, true} {
		done := make(chan struct{})
		for range workers {
			go func() {
				defer func() { done <- struct{}{} }()
				for range each {
					r.st.forward(7, RoleJoin, size)
				}
			}()
		}
		for running := workers; running > 0; {
			if !read {
				<-done
				running--
				continue
			}
			select {
			case <-done:
				running--
			default:
				st := r.Stats()
				if st.Packets[RoleJoin] < last.Packets[RoleJoin] || st.Bytes[RoleJoin] < last.Bytes[RoleJoin] {
					t.Fatalf("counts went down: %d %d after %d %d", st.Packets[RoleJoin], st.Bytes[RoleJoin], last.Packets[RoleJoin], last.Bytes[RoleJoin])
				}
				last = st
			}
		}
		if w := r.st.fwd[7].w[RoleJoin].Load(); w&packFull != 0 {
			t.Errorf("the word was not folded: %#x", w)
		}
		st := r.Stats()
		n := uint64(workers * each)
		if read {
			n *= 2
		}
		if st.Packets[RoleJoin] != n || st.Bytes[RoleJoin] != n*size || st.Forwarded != n {
			t.Errorf("read %v: counted %d packets, %d bytes, want %d, %d", read, st.Packets[RoleJoin], st.Bytes[RoleJoin], n, n*size)
		}
		last = st
	}
}
