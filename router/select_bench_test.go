package router

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkSelect is the choice a new flow makes under each Select: the
// IAP's JAP among 4 (chooseJAP) and the JAP's target among 4 of different
// weights (localTargets and pickTarget), for a new client address each
// time. Creating the flows is BenchmarkNewFlow's.
func BenchmarkSelect(b *testing.B) {
	for sel := range numSelect {
		b.Run(sel.String(), func(b *testing.B) {
			pol := Policy{Select: sel}
			iap := policyRouter(b, p1, 1)
			iap.rnd = nil // math/rand/v2, as in production
			iap.ResolvedPolicy(gUDP, pol, []JAP{{Addr: p2, Targets: 2, Weight: 3}, {Addr: p3, Targets: 4},
				{Addr: p4, Targets: 1}, {Addr: p5, Targets: 3}}, time.Hour, 0)
			e := iap.cached(gUDP, 0)
			proxies := iap.proxies.Load()
			jap := newRouter(b, selfP2())
			jap.SetPolicy(gUDP, pol)
			for k := 1; k <= 4; k++ {
				jap.AddTargetWeight(gUDP, tgtN(gUDP, k), k)
			}
			c := key16(client.Addr())
			var self japInfo
			b.ReportAllocs()
			i := uint32(0)
			for b.Loop() {
				i++
				binary.BigEndian.PutUint32(c[12:], 0x64800000|i) // 100.128.x.y
				h := mix64(uint64(i))
				if iap.chooseJAP(pol, e, &self, &c, h, proxies) == 0 {
					b.Fatal("no JAP")
				}
				loc := jap.localTargets(gUDP, &c)
				if jap.pickTarget(&loc, sel, &c) == nil {
					b.Fatal("no target")
				}
			}
		})
	}
}

// BenchmarkReplicate is a datagram of a group with Replicate 3 whose flows
// exist: "jap" at a JAP with 3 targets (Route, then the 2 copies), "iap" at
// an IAP with 3 JAPs of one target each (likewise, encapsulated). The copy
// that restores the packet is included.
func BenchmarkReplicate(b *testing.B) {
	ap := netip.AddrPortFrom(anyIP, 53)
	pol := Policy{Replicate: 3}
	for _, side := range []string{"jap", "iap"} {
		b.Run(side, func(b *testing.B) {
			r := policyRouter(b, p2, 1)
			orig := udp(client, ap, string(benchPayload))
			if side == "jap" {
				r.SetPolicy(gUDP, pol)
				for k := 1; k <= 3; k++ {
					r.addTarget(gUDP, tgtN(gUDP, k))
				}
				orig = encap(p1, p2, orig)
				orig[4], orig[5] = replicaMark>>8, 3
			} else {
				r.ResolvedPolicy(gUDP, pol, []JAP{{Addr: p3, Targets: 1}, {Addr: p4, Targets: 1}, {Addr: p5, Targets: 1}}, time.Hour, 0)
			}
			buf := make([]byte, Headroom+len(orig))
			dst := make([]byte, len(buf))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf[Headroom:], orig)
				res := r.Route(buf, Headroom, len(buf), 1)
				if res.Copies != 2 {
					b.Fatal(res)
				}
				for i := range res.Copies {
					r.Copy(&res, i, dst)
				}
			}
		})
	}
}
