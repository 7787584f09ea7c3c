package main

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// udp4 is a UDP datagram from src to dst (router.BuildUDP), with Headroom
// free before it.
func udp4(src, dst netip.AddrPort, payload string) []byte {
	b := make([]byte, router.Headroom+60+8+len(payload))
	n, err := router.BuildUDP(b[router.Headroom:], src, dst, []byte(payload))
	if err != nil {
		panic(err)
	}
	return b[:router.Headroom+n]
}

// TestResolveFloodLogBounded: an admitted client sends datagrams to fresh
// anycast ports (groups nobody serves) for 60 s. The router lets it
// resolve 64 groups per NegativeTTL, as designed, but every resolve and
// its answer is a line in the proxy's event log, and these are not
// refusals, so no limit applies: one client writes ~128 lines a second.
func TestResolveFloodLogBounded(t *testing.T) {
	clk := overlaytest.NewClock()
	clk.Advance(time.Hour)
	self := overlay.Member{Name: "p1", Addr: netip.MustParseAddr("100.64.0.1"), Cluster: "c1",
		Endpoint: netip.MustParseAddrPort("198.18.0.1:51820")}
	r, err := router.New(router.Config{Self: []netip.Addr{self.Addr}, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}, ControlPort: attackCtrl})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	p, err := overlay.NewProxy(overlay.ProxyConfig{Self: self, Members: []overlay.Member{self}, ControlPort: attackCtrl,
		Edges:  map[netip.Addr]*overlay.EdgePolicy{attackerAddr: {Name: "c", PublicKey: [32]byte{1}}},
		Router: r, Clock: clk, Transport: nullTransport{}, OnEvent: newEventLog(&buf, clk.Wall).event})
	if err != nil {
		t.Fatal(err)
	}
	const span = 60 * time.Second
	src := netip.AddrPortFrom(attackerAddr, 40000)
	i := 0
	for clk.Now() < int64(time.Hour+span) {
		for range 100 {
			i++
			dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 65, byte(i >> 16), byte(i >> 8)}), uint16(1024+i%60000))
			pkt := udp4(src, dst, "x")
			if res := r.Route(pkt, router.Headroom, len(pkt), clk.Now()); res.Resolve {
				p.Resolve(res.Group)
			}
		}
		clk.Advance(100 * time.Millisecond)
		r.Expire(clk.Now())
		p.Tick()
	}
	lines := len(logLines(buf.String()))
	t.Logf("one client, %v of datagrams to fresh groups: %d log lines (%.0f a second)", span, lines, float64(lines)/span.Seconds())
	if lines > 1000 {
		t.Errorf("one client wrote %d event-log lines in %v by sending to groups nobody serves", lines, span)
	}
}
