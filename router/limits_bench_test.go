package router

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkNewFlowNearlyFullPorts is issue 11's first finding: two groups
// served by the same target address, port and protocol at one JAP, and one
// client whose flows to the first group hold nearly every reply port
// (T:tp → C:cp for cp in [1024, 65535], all but free of them). Each
// iteration is a new flow from the client to the second group on a taken
// port, so its reply key must be remapped; the flow, when created, is
// removed again so that every iteration sees the same port space.
func BenchmarkNewFlowNearlyFullPorts(b *testing.B) {
	for _, free := range []int{0, 512} {
		b.Run(fmt.Sprintf("free=%d", free), func(b *testing.B) {
			r := newRouter(b, selfP2(), func(c *Config) { c.MaxFlows = 1 << 19 })
			gA := Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: ProtoUDP}
			gB := Group{Addr: netip.MustParseAddr("100.65.0.2"), Port: 80, Proto: ProtoUDP}
			r.addTarget(gA, tgt)
			r.addTarget(gB, tgt)
			isFree := func(port int) bool { return free > 0 && port%(natPortRange/free) == 0 }
			fill := encap(p1, p2, udp(client, netip.AddrPortFrom(gA.Addr, 80), "x"))
			buf := make([]byte, Headroom+len(fill))
			var taken []uint16
			for port := natPortMin; port < 65536; port++ {
				if isFree(port) {
					continue
				}
				copy(buf[Headroom:], fill)
				binary.BigEndian.PutUint16(buf[Headroom+40:], uint16(port))
				if res := r.Route(buf, Headroom, len(buf), 0); res.Action != Forward {
					b.Fatal(res)
				}
				taken = append(taken, uint16(port))
			}
			orig := encap(p1, p2, udp(client, netip.AddrPortFrom(gB.Addr, 80), "x"))
			k := flowKey{src: key16(client.Addr()), dst: key16(gB.Addr), dport: 80, proto: ProtoUDP, fam: 4}
			created := 0
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k.sport = taken[i%len(taken)]
				i++
				copy(buf[Headroom:], orig)
				binary.BigEndian.PutUint16(buf[Headroom+40:], k.sport)
				if res := r.Route(buf, Headroom, len(buf), 0); res.Action == Forward {
					created++
					h := k.hash()
					s := r.jap.shard(h)
					s.mu.Lock()
					r.jap.removeLocked(s, s.m.get(&k, h))
					s.mu.Unlock()
				}
			}
			b.ReportMetric(float64(created)/float64(i), "created/op")
		})
	}
}

// BenchmarkJoinNewPort is issue 11's fourth finding, the router's half: a
// target JOINs again with a new local port (or the same one) while the
// proxy holds 120,000 flows of other clients (60,000 IAP flows and their
// 60,000 JAP flows: the proxy is its own JAP).
func BenchmarkJoinNewPort(b *testing.B) {
	for _, newPort := range []bool{false, true} {
		name := "same-port"
		if newPort {
			name = "new-port"
		}
		b.Run(name, func(b *testing.B) {
			r := newRouter(b, selfP2())
			r.addTarget(gUDP, tgt)
			orig := udp(client, netip.AddrPortFrom(anyIP, 53), "x")
			buf := make([]byte, Headroom+len(orig))
			for i := range 60000 {
				c := clientN(true, i/100, uint16(1000+i%100))
				copy(buf[Headroom:], orig)
				a := c.Addr().As4()
				copy(buf[Headroom+12:], a[:])
				binary.BigEndian.PutUint16(buf[Headroom+20:], c.Port())
				if res := r.Route(buf, Headroom, len(buf), 0); res.Action != Forward {
					b.Fatal(res)
				}
			}
			if st := r.Stats(); st.IAPFlows+st.JAPFlows != 120000 {
				b.Fatalf("%d flows", st.IAPFlows+st.JAPFlows)
			}
			// The churning target serves another group.
			g := Group{Addr: anyIP, Port: 443, Proto: ProtoTCP}
			r.addTarget(g, tgt2)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				port, w := tgt2.Port(), 1
				if newPort {
					port += uint16(i % 2)
				} else {
					w += i % 2
				}
				r.AddTargetWeight(g, netip.AddrPortFrom(tgt2.Addr(), port), w)
			}
		})
	}
}
