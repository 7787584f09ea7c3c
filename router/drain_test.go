package router

import (
	"net/netip"
	"testing"
	"time"
)

// TestDrainTarget: under every policy, a draining target gets no new flow
// while its established flow carries bytes both ways, unchanged; with no
// other target, new flows are dropped (DropNoTarget) and the old one still
// goes on; once the flow is gone, Loads says so and RemoveTarget drops
// nothing live; a join puts the target back.
func TestDrainTarget(t *testing.T) {
	for _, sel := range []Select{SelectProximity, SelectLoad, SelectRandom, SelectAffinity} {
		t.Run(sel.String(), func(t *testing.T) {
			r := newRouter(t, selfP2(), func(c *Config) {
				c.Timeouts = Timeouts{TCPEstablished: 100 * time.Second}
			})
			r.SetPolicy(gTCP, Policy{Select: sel})
			r.addTarget(gTCP, tgt)
			// The old flow: to tgt, the only target then, established.
			old := netip.MustParseAddrPort("100.64.1.99:41000")
			mustForward(t, r, encap(p1, p2, tcp(old, anyTCP, tcpSYN)), 0)
			r.addTarget(gTCP, tgt2)
			if !r.DrainTarget(gTCP, tgt.Addr()) || r.DrainTarget(gTCP, tgt.Addr()) {
				t.Fatal("DrainTarget results wrong")
			}
			if w := r.Weight(gTCP); w != 1 {
				t.Errorf("Weight with one of two draining = %d, want 1", w)
			}
			if got := r.Targets(gTCP); len(got) != 1 || got[0] != tgt2 {
				t.Errorf("Targets = %v, want only %v", got, tgt2)
			}
			exchange := func(now int64) {
				t.Helper()
				b := pkt{src: old, dst: anyTCP, proto: ProtoTCP, flags: tcpACK, payload: []byte("to the target")}.build()
				d := decode(t, mustForward(t, r, encap(p1, p2, b), now))
				if d.dst != tgt || string(d.payload) != "to the target" {
					t.Fatalf("old flow's packet went to %v with %q", d.dst, d.payload)
				}
				b = pkt{src: tgt, dst: netip.AddrPortFrom(old.Addr(), d.src.Port()), proto: ProtoTCP, flags: tcpACK, payload: []byte("to the client")}.build()
				out := mustForward(t, r, b, now)
				in := decode(t, out[EncapOverhead:]) // encapsulated back to the IAP
				if in.src != anyTCP || in.dst != old || string(in.payload) != "to the client" {
					t.Fatalf("old flow's reply %v → %v %q", in.src, in.dst, in.payload)
				}
			}
			exchange(sec(1))
			for i := range 200 {
				c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 1, byte(i)}), uint16(10000+i))
				d := decode(t, mustForward(t, r, encap(p1, p2, tcp(c, anyTCP, tcpSYN)), sec(2)))
				if d.dst != tgt2 {
					t.Fatalf("new flow %d went to %v, a draining target", i, d.dst)
				}
			}
			// The last other target leaves: new flows find none here.
			r.RemoveTarget(gTCP, tgt2.Addr())
			mustDrop(t, r, encap(p1, p2, tcp(netip.MustParseAddrPort("100.64.1.200:5"), anyTCP, tcpSYN)), sec(3), DropNoTarget)
			exchange(sec(4))
			loads := r.Loads(gTCP)
			if len(loads) != 1 || !loads[0].Draining || loads[0].Flows != 1 || loads[0].Target != tgt {
				t.Fatalf("Loads = %+v, want tgt draining with 1 flow", loads)
			}
			// The flow ends (idle past its timeout): no live flow is left.
			r.Expire(sec(200))
			if l := r.Loads(gTCP); len(l) != 1 || l[0].Flows != 0 {
				t.Fatalf("Loads after expiry = %+v", l)
			}
			if !r.RemoveTarget(gTCP, tgt.Addr()) || r.Loads(gTCP) != nil {
				t.Fatal("the drained target is not removed")
			}
		})
	}
}

// TestUndrainTarget: UndrainTarget and a join both end a drain, and the
// target's flows go on; echo answers for the IP only while a target takes
// new flows.
func TestUndrainTarget(t *testing.T) {
	for _, how := range []string{"undrain", "join"} {
		t.Run(how, func(t *testing.T) {
			r := newRouter(t, selfP2())
			r.addTarget(gTCP, tgt)
			c := netip.MustParseAddrPort("100.64.1.99:41000")
			mustForward(t, r, encap(p1, p2, tcp(c, anyTCP, tcpSYN)), 0)
			r.DrainTarget(gTCP, tgt.Addr())
			if r.byAddr[anyIP] != 0 {
				t.Errorf("a draining target still counts for echo")
			}
			mustDrop(t, r, encap(p1, p2, tcp(client, anyTCP, tcpSYN)), 1, DropNoTarget)
			if how == "undrain" {
				if !r.UndrainTarget(gTCP, tgt.Addr()) || r.UndrainTarget(gTCP, tgt.Addr()) {
					t.Fatal("UndrainTarget results wrong")
				}
			} else if r.addTarget(gTCP, tgt) {
				t.Fatal("the join of a draining target says it is new")
			}
			if l := r.Loads(gTCP); len(l) != 1 || l[0].Draining || l[0].Flows != 1 {
				t.Fatalf("Loads after %s = %+v", how, l)
			}
			if d := decode(t, mustForward(t, r, encap(p1, p2, tcp(client, anyTCP, tcpSYN)), 2)); d.dst != tgt {
				t.Errorf("new flow after %s went to %v", how, d.dst)
			}
			if r.byAddr[anyIP] != 1 {
				t.Errorf("echo count %d after %s, want 1", r.byAddr[anyIP], how)
			}
		})
	}
}

// TestDrainTargetLocalIAP: at a proxy that is its own IAP and JAP, the
// draining target's flow goes on, and a new flow goes to the JAP the cache
// names instead.
func TestDrainTargetLocalIAP(t *testing.T) {
	r := newRouter(t, selfP1())
	r.addTarget(gTCP, tgt)
	mustForward(t, r, tcp(client, anyTCP, tcpSYN), 0)
	r.DrainTarget(gTCP, tgt.Addr())
	d := decode(t, mustForward(t, r, tcp(client, anyTCP, tcpACK), 1))
	if d.dst != tgt {
		t.Fatalf("the local flow went to %v", d.dst)
	}
	c2 := netip.MustParseAddrPort("100.64.1.11:40000")
	res, _ := route(r, tcp(c2, anyTCP, tcpSYN), 2)
	if res.Action != Queued || !res.Resolve {
		t.Fatalf("new flow at a draining local target: %+v, want a resolve", res)
	}
	r.resolved(gTCP, []JAP{{Addr: p3, Targets: 1}}, time.Minute, 3)
	out := mustForward(t, r, tcp(netip.MustParseAddrPort("100.64.1.12:1"), anyTCP, tcpSYN), 4)
	if o := decode(t, out); o.dst.Addr() != p3 {
		t.Errorf("new flow encapsulated to %v, want %v", o.dst, p3)
	}
}
