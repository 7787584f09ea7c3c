package router

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// benchPayload makes packets of a typical small segment size.
var benchPayload = make([]byte, 100)

func benchTCP(src, dst netip.AddrPort) []byte {
	return pkt{src: src, dst: dst, proto: ProtoTCP, flags: tcpACK, payload: benchPayload}.build()
}

// BenchmarkEstablishedJAP is an established flow's packet at its JAP:
// proxy check, decapsulation, flow lookup, NAT rewrite, checksum update.
// Route rewrites the packet in place, so each iteration first restores the
// encapsulated packet with a copy (about 160 bytes), which is included.
func BenchmarkEstablishedJAP(b *testing.B) {
	for _, f := range families {
		b.Run(f.name, func(b *testing.B) {
			r := newRouter(b, selfP2())
			r.addTarget(group(f.any, ProtoTCP), f.tgt)
			orig := encap(p1, p2, benchTCP(f.client, f.any))
			buf := make([]byte, Headroom+len(orig))
			copy(buf[Headroom:], orig)
			if res := r.Route(buf, Headroom, len(buf), 0); res.Action != Forward {
				b.Fatal(res)
			}
			b.SetBytes(int64(len(orig)))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf[Headroom:], orig)
				r.Route(buf, Headroom, len(buf), 1)
			}
		})
	}
}

// BenchmarkEstablishedIAP is an established flow's packet at its IAP:
// flow lookup and encapsulation into the headroom. The packet itself is not
// changed, so the same buffer is routed again without a restore.
func BenchmarkEstablishedIAP(b *testing.B) {
	for _, f := range families {
		b.Run(f.name, func(b *testing.B) {
			r := newRouter(b, selfP1())
			r.resolved(group(f.any, ProtoTCP), []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
			orig := benchTCP(f.client, f.any)
			buf := make([]byte, Headroom+len(orig))
			copy(buf[Headroom:], orig)
			if res := r.Route(buf, Headroom, len(buf), 0); res.Action != Forward || res.Start != 0 {
				b.Fatal(res)
			}
			b.SetBytes(int64(len(orig)))
			b.ReportAllocs()
			for b.Loop() {
				r.Route(buf, Headroom, len(buf), 1)
			}
		})
	}
}

// BenchmarkReplyJAP is a target's reply at the JAP: reverse NAT lookup,
// rewrite, encapsulation to the IAP. The copy that restores the packet is
// included.
func BenchmarkReplyJAP(b *testing.B) {
	for _, f := range families {
		b.Run(f.name, func(b *testing.B) {
			r := newRouter(b, selfP2())
			r.addTarget(group(f.any, ProtoTCP), f.tgt)
			mustForward(b, r, encap(p1, p2, benchTCP(f.client, f.any)), 0)
			orig := benchTCP(f.tgt, f.client)
			buf := make([]byte, Headroom+len(orig))
			copy(buf[Headroom:], orig)
			if res := r.Route(buf, Headroom, len(buf), 0); res.Action != Forward || res.Start != 0 {
				b.Fatal(res)
			}
			b.SetBytes(int64(len(orig)))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf[Headroom:], orig)
				r.Route(buf, Headroom, len(buf), 1)
			}
		})
	}
}

// BenchmarkNewFlow is the first packet of a flow (SYN) at an IAP: the JAP
// choice and the flow's creation. "remote" creates an IAP flow to a cached
// JAP; "local" is an IAP that is its own JAP, creating both an IAP flow and
// a NAT flow. Each iteration has a new client address and port; the tables
// have the default cap, so once full every new flow also evicts one.
func BenchmarkNewFlow(b *testing.B) {
	for _, local := range []bool{false, true} {
		name := "remote"
		if local {
			name = "local"
		}
		b.Run(name, func(b *testing.B) {
			r := newRouter(b, selfP1())
			if local {
				r.addTarget(gTCP, tgt)
			} else {
				r.resolved(gTCP, []JAP{{Addr: p2, Targets: 1}, {Addr: p3, Targets: 1}}, time.Hour, 0)
			}
			orig := pkt{src: client, dst: anyTCP, proto: ProtoTCP, flags: tcpSYN, mss: 1460}.build()
			buf := make([]byte, Headroom+len(orig))
			b.ReportAllocs()
			i := uint32(0)
			for b.Loop() {
				i++
				copy(buf[Headroom:], orig)
				// A new source port, and a new source address every 1,000
				// flows: within a source's share of the table, whose new
				// flows past it are held to SourceChurn a second. The
				// router does not check checksums, so they are not fixed.
				binary.BigEndian.PutUint16(buf[Headroom+12+2:], uint16(i/1000)|0x8000) // 100.64.128+x.y: never a proxy
				binary.BigEndian.PutUint16(buf[Headroom+20:], uint16(1024+i%1000))
				if res := r.Route(buf, Headroom, len(buf), int64(i)); res.Action != Forward {
					b.Fatal(res)
				}
			}
		})
	}
}

// BenchmarkEstablishedJAPParallel is BenchmarkEstablishedJAP from many
// goroutines, each its own flow, as wireguard-go's per-peer goroutines do.
func BenchmarkEstablishedJAPParallel(b *testing.B) {
	r := newRouter(b, selfP2())
	r.addTarget(gTCP, tgt)
	var next uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		next++
		c := netip.AddrPortFrom(client.Addr(), uint16(10000+next))
		orig := encap(p1, p2, benchTCP(c, anyTCP))
		buf := make([]byte, Headroom+len(orig))
		for pb.Next() {
			copy(buf[Headroom:], orig)
			r.Route(buf, Headroom, len(buf), 1)
		}
	})
}

// BenchmarkMapKey compares the flow key against one built from netip.Addr,
// which is why flowKey holds [16]byte.
func BenchmarkMapKey(b *testing.B) {
	type addrKey struct {
		src, dst     netip.Addr
		sport, dport uint16
		proto        uint8
	}
	const n = 4096
	bytesMap := make(map[flowKey]*flow, n)
	addrMap := make(map[addrKey]*flow, n)
	var bk [n]flowKey
	var ak [n]addrKey
	for i := range n {
		c := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		bk[i] = flowKey{src: key16(c), dst: key16(anyIP), sport: uint16(i), dport: 80, proto: ProtoTCP, fam: 4}
		ak[i] = addrKey{src: c, dst: anyIP, sport: uint16(i), dport: 80, proto: ProtoTCP}
		bytesMap[bk[i]] = &flow{}
		addrMap[ak[i]] = &flow{}
	}
	b.Run("bytes16", func(b *testing.B) {
		i := 0
		for b.Loop() {
			_ = bytesMap[bk[i%n]]
			i++
		}
	})
	b.Run("netip", func(b *testing.B) {
		i := 0
		for b.Loop() {
			_ = addrMap[ak[i%n]]
			i++
		}
	})
}
