package sim

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/overlay/overlaytest"
)

// BenchmarkRAPRegister10k is the cost of one Register at a RAP of an
// overlay of 10,000 proxies: what fig6 does 10⁷ times.
func BenchmarkRAPRegister10k(b *testing.B) {
	const n = 10000
	members := make([]overlay.Member, n)
	names := make([]string, n)
	for i := range members {
		members[i] = proxyMember(i, 10)
		names[i] = members[i].Name
	}
	rap := indexOf(names, overlay.RAPs(Group, names, 4)[0])
	w := newWorld(1, overlaytest.Link{Delay: time.Millisecond})
	s, err := w.addProxy(members[rap], overlay.ProxyConfig{Members: members, Replicas: 4})
	if err != nil {
		b.Fatal(err)
	}
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i], _ = overlay.AppendMsg(nil, uint32(i+1), &overlay.Register{Group: Group, JAP: names[i], Targets: uint32(i + 1), Weight: uint32(i + 1), TTL: 30 * time.Second})
	}
	dst := netip.AddrPortFrom(members[rap].Addr, ControlPort)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(msgs)
		s.p.HandleControl(netip.AddrPortFrom(members[k].Addr, ControlPort), dst, msgs[k])
	}
}
