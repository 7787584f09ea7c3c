package router

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// The attacks of issue 11 on the flow tables, each with the victims'
// traffic checked byte for byte afterwards.

// floodPorts makes a new flow for each source port in [1, 65535]: it
// routes the packets of steps in turn, each with the port patched in at its
// offset (the router checks no checksums).
func floodPorts(r *Router, now int64, steps ...step) { routePorts(r, now, 1, 65535, steps...) }

// routePorts is floodPorts for the ports in [lo, hi].
func routePorts(r *Router, now int64, lo, hi int, steps ...step) {
	var buf []byte
	for port := lo; port <= hi; port++ {
		for _, s := range steps {
			buf = append(buf[:0], make([]byte, Headroom)...)
			buf = append(buf, s.pkt...)
			binary.BigEndian.PutUint16(buf[Headroom+s.off:], uint16(port))
			r.Route(buf, Headroom, len(buf), now)
		}
	}
}

// step is a packet of a flood and the offset of the port to patch in it.
type step struct {
	pkt []byte
	off int
}

// victim is a client with an established TCP flow to gTCP.
func victim(i int) netip.AddrPort { return clientN(true, i, 40000) }

const numVictims = 100

// Busy clients hold many flows each, all older than the flood: with the
// victims and the flood, they fill the table.
const (
	numBusy   = 50
	busyFlows = 1000
)

func busy(i int) netip.AddrPort { return clientN(true, 200+i, 0) }

// busyLost counts the busy clients' flows of kind that are gone.
func busyLost(r *Router, kind string) int {
	isBusy := map[netip.Addr]bool{}
	for i := range numBusy {
		isBusy[busy(i).Addr()] = true
	}
	n := numBusy * busyFlows
	for _, f := range r.Flows() {
		if f.Kind == kind && isBusy[f.Client.Addr()] {
			n--
		}
	}
	return n
}

// The attacker: one client, and one target that serves the two groups it
// floods (at two ports, so that its flows need no NAT port search).
var (
	attacker = clientN(true, 1000, 1)
	attackT  = netip.MustParseAddr("100.64.2.50")
)

// floodCases are the floods: 131,070 new flows from one client (every
// source port to two groups), against victims whose established flows have
// been idle a while. Plain datagrams expire within a minute, so they
// outlast only victims idle for nearly the whole established timeout; TCP
// flows that the attacker's own target answers are established, and outlast
// any victim idle longer than the flood.
var floodCases = []struct {
	name  string
	proto uint8
	at    int64 // when the flood comes; the victims' flows are from 1 s
}{
	{"udp", ProtoUDP, sec(1) + int64(DefaultTimeouts.TCPEstablished) - sec(30)},
	{"tcp-established", ProtoTCP, sec(600)},
}

func attackGroups(proto uint8) []Group {
	return []Group{
		{Addr: netip.MustParseAddr("100.65.0.3"), Port: 80, Proto: proto},
		{Addr: netip.MustParseAddr("100.65.0.4"), Port: 80, Proto: proto},
	}
}

// TestFloodKeepsOthersFlowsJAP: the flood comes through one IAP to a JAP
// whose NAT table holds the established TCP flows of 100 other clients,
// which came through another IAP. Every victim's flow survives: its next
// segment reaches the target and the target's reply reaches the victim's
// IAP, byte for byte.
func TestFloodKeepsOthersFlowsJAP(t *testing.T) {
	for _, c := range floodCases {
		t.Run(c.name, func(t *testing.T) {
			jap := newRouter(t, selfP2())
			jap.addTarget(gTCP, tgt)
			for i := range numVictims {
				v := victim(i)
				mustForward(t, jap, encap(p3, p2, tcp(v, anyTCP, tcpSYN)), sec(1))
				mustForward(t, jap, tcp(tgt, v, tcpSYN|tcpACK), sec(1))
				mustForward(t, jap, encap(p3, p2, tcp(v, anyTCP, tcpACK)), sec(1))
			}
			jap.addTarget(gUDP, tgt2)
			for i := range numBusy {
				routePorts(jap, sec(1), 1, busyFlows, step{encap(p3, p2, udp(busy(i), netip.AddrPortFrom(anyIP, 53), "x")), 40})
			}
			for i, g := range attackGroups(c.proto) {
				ga := netip.AddrPortFrom(g.Addr, g.Port)
				ta := netip.AddrPortFrom(attackT, uint16(8080+i))
				jap.addTarget(g, ta)
				if c.proto == ProtoUDP {
					floodPorts(jap, c.at, step{encap(p1, p2, udp(attacker, ga, "x")), 40})
					continue
				}
				floodPorts(jap, c.at,
					step{encap(p1, p2, tcp(attacker, ga, tcpSYN)), 40},
					step{tcp(ta, attacker, tcpSYN|tcpACK), 22},
					step{encap(p1, p2, tcp(attacker, ga, tcpACK)), 40})
			}

			// The target speaks first, as a server pushing data does: its
			// reply finds the flow only if the flood left it.
			lost := 0
			now := c.at + sec(1)
			for i := range numVictims {
				v := victim(i)
				rep := pkt{src: tgt, dst: v, proto: ProtoTCP, flags: tcpACK, payload: []byte("response")}.build()
				res, out := route(jap, rep, now)
				if res.Action != Forward {
					lost++
					continue
				}
				d := decode(t, out)
				in := decode(t, d.inner)
				if d.dst.Addr() != p3 || in.src != anyTCP || in.dst != v || !bytes.Equal(in.payload, []byte("response")) {
					t.Fatalf("victim %v's reply arrived as %v: %v → %v %q", v, d.dst, in.src, in.dst, in.payload)
				}
				seg := pkt{src: v, dst: anyTCP, proto: ProtoTCP, flags: tcpACK, payload: []byte("request")}.build()
				if d := decode(t, mustForward(t, jap, encap(p3, p2, seg), now)); d.src != v || d.dst != tgt || !bytes.Equal(d.payload, []byte("request")) {
					t.Fatalf("victim %v's segment arrived as %v → %v %q", v, d.src, d.dst, d.payload)
				}
			}
			st := jap.Stats()
			bl := busyLost(jap, "jap")
			t.Logf("JAP, %s flood: %d of %d victims' flows lost, %d of %d busy clients' flows; %d evictions in all, %d JAP flows",
				c.name, lost, numVictims, bl, numBusy*busyFlows, st.Evicted, st.JAPFlows)
			if lost > 0 || bl > 0 {
				t.Errorf("the flood evicted %d victims' established flows and %d busy clients' flows", lost, bl)
			}
		})
	}
}

// TestFloodKeepsOthersFlowsIAP is the same flood at an IAP: the victims'
// IAP flows (which hold their JAP) survive, and their segments still go to
// it, byte for byte.
func TestFloodKeepsOthersFlowsIAP(t *testing.T) {
	for _, c := range floodCases {
		t.Run(c.name, func(t *testing.T) {
			iap := newRouter(t, selfP1())
			iap.resolved(gTCP, []JAP{{Addr: p2, Targets: 1}}, 1<<62, 0)
			for i := range numVictims {
				v := victim(i)
				mustForward(t, iap, tcp(v, anyTCP, tcpSYN), sec(1))
				mustForward(t, iap, encap(p2, p1, tcp(anyTCP, v, tcpSYN|tcpACK)), sec(1))
				mustForward(t, iap, tcp(v, anyTCP, tcpACK), sec(1))
			}
			iap.resolved(gUDP, []JAP{{Addr: p2, Targets: 1}}, 1<<62, 0)
			for i := range numBusy {
				routePorts(iap, sec(1), 1, busyFlows, step{udp(busy(i), netip.AddrPortFrom(anyIP, 53), "x"), 20})
			}
			for _, g := range attackGroups(c.proto) {
				ga := netip.AddrPortFrom(g.Addr, g.Port)
				iap.resolved(g, []JAP{{Addr: p3, Targets: 1}}, 1<<62, 0)
				if c.proto == ProtoUDP {
					floodPorts(iap, c.at, step{udp(attacker, ga, "x"), 20})
					continue
				}
				floodPorts(iap, c.at,
					step{tcp(attacker, ga, tcpSYN), 20},
					step{encap(p3, p1, tcp(ga, attacker, tcpSYN|tcpACK)), 42},
					step{tcp(attacker, ga, tcpACK), 20})
			}

			alive := map[netip.AddrPort]bool{}
			for _, f := range iap.Flows() {
				if f.Kind == "iap" && f.Group == gTCP && f.State == "established" && f.JAP == p2 {
					alive[f.Client] = true
				}
			}
			lost := 0
			now := c.at + sec(1)
			for i := range numVictims {
				v := victim(i)
				if !alive[v] {
					lost++
				}
				seg := pkt{src: v, dst: anyTCP, proto: ProtoTCP, flags: tcpACK, payload: []byte("request")}.build()
				d := decode(t, mustForward(t, iap, seg, now))
				if d.dst.Addr() != p2 || !bytes.Equal(d.inner, seg) {
					t.Fatalf("victim %v's segment went to %v as %x", v, d.dst, d.inner)
				}
				rep := pkt{src: anyTCP, dst: v, proto: ProtoTCP, flags: tcpACK, payload: []byte("response")}.build()
				if out := mustForward(t, iap, encap(p2, p1, rep), now); !bytes.Equal(out, rep) {
					t.Fatalf("victim %v's reply arrived as %x", v, out)
				}
			}
			st := iap.Stats()
			bl := busyLost(iap, "iap")
			t.Logf("IAP, %s flood: %d of %d victims' flows lost, %d of %d busy clients' flows; %d evictions in all, %d IAP flows",
				c.name, lost, numVictims, bl, numBusy*busyFlows, st.Evicted, st.IAPFlows)
			if lost > 0 || bl > 0 {
				t.Errorf("the flood evicted %d victims' established flows and %d busy clients' flows", lost, bl)
			}
		})
	}
}

// TestChurnLimit: a client at its share of a table that makes new flows
// faster than SourceChurn a second (each evicting one of its own) has them
// dropped past a second's burst, at the IAP and at the JAP; another
// client's new flow still goes, byte for byte, and the flooder may churn
// again once its pace allows.
func TestChurnLimit(t *testing.T) {
	const extra = 2000
	ga := netip.AddrPortFrom(anyIP, 53)
	for _, c := range []struct {
		name string
		r    *Router
		flow func(src netip.AddrPort) []byte // a new flow's first packet
		off  int                             // of its source port
		want func(d decoded, src netip.AddrPort) bool
	}{
		{"iap", newRouter(t, selfP1(), func(c *Config) { c.MaxFlows = 1024 }),
			func(src netip.AddrPort) []byte { return udp(src, ga, "x") }, 20,
			func(d decoded, src netip.AddrPort) bool {
				in := decode(t, d.inner)
				return d.dst.Addr() == p2 && in.src == src && in.dst == ga && bytes.Equal(in.payload, []byte("x"))
			}},
		{"jap", newRouter(t, selfP2(), func(c *Config) { c.MaxFlows = 1024 }),
			func(src netip.AddrPort) []byte { return encap(p1, p2, udp(src, ga, "x")) }, 40,
			func(d decoded, src netip.AddrPort) bool {
				return d.src.Addr() == src.Addr() && d.dst == tgt && bytes.Equal(d.payload, []byte("x"))
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.r
			if c.name == "iap" {
				r.resolved(gUDP, []JAP{{Addr: p2, Targets: 1}}, 1<<62, 0)
			} else {
				r.addTarget(gUDP, tgt)
			}
			share := r.iap.srcCap // one shard at 1,024 flows, in either table
			now := sec(10)
			before := r.Stats()
			routePorts(r, now, 1, share+extra, step{c.flow(attacker), c.off})
			st := r.Stats()
			dropped := st.Drops[DropFlowRate] - before.Drops[DropFlowRate]
			// A second's burst at the table's pace: SourceChurn, and one.
			if want := uint64(extra - (SourceChurn + 1)); dropped != want {
				t.Errorf("%d of %d new flows past the share dropped for their rate, want %d", dropped, extra, want)
			}
			if ev := st.Evicted - before.Evicted; ev != SourceChurn+1 {
				t.Errorf("%d of the flooder's flows evicted, want %d", ev, SourceChurn+1)
			}
			v := victim(0)
			if d := decode(t, mustForward(t, r, c.flow(v), now)); !c.want(d, v) {
				t.Fatalf("another client's new flow went as %+v", d)
			}
			// Its pace allows one more a little over a second later.
			late := netip.AddrPortFrom(attacker.Addr(), 65000)
			if d := decode(t, mustForward(t, r, c.flow(late), now+sec(2))); !c.want(d, late) {
				t.Fatalf("the flooder's flow two seconds later went as %+v", d)
			}
		})
	}
}
