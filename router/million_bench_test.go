package router

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// BenchmarkMillionFlows holds 1,000,000 live TCP flows and reports the heap
// they take, in all and per flow (issue 15's goal: 256 MiB at most). "iap":
// an IAP's flows to a remote JAP, one table entry each; "jap": a JAP's NAT
// flows, which are also indexed by their reply key. Clients are 15,625
// addresses of 64 flows each. Run it with -benchtime=1x: each op builds
// the table anew.
func BenchmarkMillionFlows(b *testing.B) {
	const n = 1_000_000
	for _, name := range []string{"iap", "jap"} {
		b.Run(name, func(b *testing.B) {
			var total, per float64
			for range b.N {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				var r *Router
				var orig []byte
				if name == "iap" {
					r = newRouter(b, selfP1(), func(c *Config) { c.MaxFlows = n + n/8 })
					r.resolved(gTCP, []JAP{{Addr: p2, Targets: 1}}, 1000*time.Hour, 0)
					orig = pkt{src: client, dst: anyTCP, proto: ProtoTCP, flags: tcpSYN, mss: 1460}.build()
				} else {
					r = newRouter(b, selfP2(), func(c *Config) { c.MaxFlows = n + n/8 })
					r.addTarget(gTCP, tgt)
					orig = encap(p1, p2, pkt{src: client, dst: anyTCP, proto: ProtoTCP, flags: tcpSYN, mss: 1460}.build())
				}
				inner := 0 // the client packet's offset: after the outer IPv4 header at a JAP
				if name == "jap" {
					inner = 20
				}
				buf := make([]byte, Headroom+len(orig))
				for i := range n {
					copy(buf[Headroom:], orig)
					// Client 100.64.128.0 + i/64 (never a proxy), port 1024 + i%64.
					a := uint32(100)<<24 | uint32(64)<<16 | 0x8000 + uint32(i/64)
					binary.BigEndian.PutUint32(buf[Headroom+inner+12:], a)
					binary.BigEndian.PutUint16(buf[Headroom+inner+20:], uint16(1024+i%64))
					if res := r.Route(buf, Headroom, len(buf), int64(i)); res.Action != Forward {
						b.Fatalf("flow %d: %v", i, res)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if st := r.Stats(); st.IAPFlows+st.JAPFlows != n {
					b.Fatalf("%d IAP and %d JAP flows, want %d", st.IAPFlows, st.JAPFlows, n)
				}
				total = float64(after.HeapAlloc - before.HeapAlloc)
				per = total / n
				runtime.KeepAlive(r)
			}
			b.ReportMetric(total/(1<<20), "heap-MiB")
			b.ReportMetric(per, "B/flow")
		})
	}
}

// TestFlowSize: a flow fits the 160-byte size class. At 168 bytes it took
// 176 (the allocator's next class), 16 MiB more per million flows.
func TestFlowSize(t *testing.T) {
	if n := unsafe.Sizeof(flow{}); n > 160 {
		t.Errorf("a flow is %d bytes, want at most 160", n)
	}
}
