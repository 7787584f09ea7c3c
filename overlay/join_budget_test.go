package overlay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// ackTransport keeps the JoinAcks the proxy sends.
type ackTransport struct{ acks []*JoinAck }

func (a *ackTransport) Send(src, dst netip.AddrPort, payload []byte) {
	if _, m, err := ParseMsg(payload); err == nil {
		if ack, ok := m.(*JoinAck); ok {
			a.acks = append(a.acks, ack)
		}
	}
}
func (*ackTransport) Forward([]byte)                         {}
func (*ackTransport) SendUnderlay(netip.AddrPort, []byte)    {}
func (*ackTransport) AddPeer(m Member, keepalive bool) error { return nil }

// TestJoinBudgetPerEdgeNotAddress: one edge with an IPv4 and an IPv6
// address (config allows one of each) and a group of each family. The
// budget is per address, so the edge gets two: within one instant it
// makes twice the burst of port-changing joins.
func TestJoinBudgetPerEdgeNotAddress(t *testing.T) {
	clk := overlaytest.NewClock()
	clk.Advance(time.Hour)
	self := Member{Name: "p1", Addr: netip.MustParseAddr("100.64.0.1"), Addr6: netip.MustParseAddr("fd64::1"), Cluster: "c1",
		Endpoint: netip.MustParseAddrPort("198.18.0.1:51820")}
	r, err := router.New(router.Config{Self: []netip.Addr{self.Addr, self.Addr6}, ControlPort: testCtrl,
		Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16"), netip.MustParsePrefix("fd65::/64")}})
	if err != nil {
		t.Fatal(err)
	}
	g4 := testGroup
	g6 := router.Group{Addr: netip.MustParseAddr("fd65::1"), Port: 80, Proto: router.ProtoTCP}
	a4, a6 := netip.MustParseAddr("100.66.0.1"), netip.MustParseAddr("fd66::1")
	pol := &EdgePolicy{Name: "t", PublicKey: [32]byte{9}, Groups: []router.Group{g4, g6}}
	tr := &ackTransport{}
	p, err := NewProxy(ProxyConfig{Self: self, Members: []Member{self}, ControlPort: testCtrl,
		Edges: map[netip.Addr]*EdgePolicy{a4: pol, a6: pol}, JoinBurst: 4, JoinRate: 0.001,
		Router: r, Clock: clk, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	burst := p.joinBurst(pol)
	for i := range 2 * burst {
		for _, c := range []struct {
			a netip.Addr
			g router.Group
		}{{a4, g4}, {a6, g6}} {
			b, err := AppendMsg(nil, uint32(i+1), &Join{Group: c.g, Port: uint16(8000 + i), Name: "t", Epoch: uint32(i + 1), Weight: 1})
			if err != nil {
				t.Fatal(err)
			}
			p.HandleControl(netip.AddrPortFrom(c.a, edgePort), netip.AddrPortFrom(c.g.Addr, testCtrl), b)
		}
	}
	ok := 0
	for _, a := range tr.acks {
		if a.Status == StatusOK {
			ok++
		}
	}
	t.Logf("edge with burst %d: %d of %d port-changing joins taken at once", burst, ok, len(tr.acks))
	if ok > burst {
		t.Errorf("one edge made %d changing joins at once, over its burst of %d, by using its IPv4 and IPv6 addresses", ok, burst)
	}
}

// TestDelayedLeavesCostTheirToken: a target joins and leaves in a loop for
// 60 s. A leave past the budget is delayed, and when it takes effect it
// spends nothing, so each token buys a join and a leave: the JAP applies
// (and registers) about twice the documented 2 changes a second.
func TestDelayedLeavesCostTheirToken(t *testing.T) {
	clk := overlaytest.NewClock()
	clk.Advance(time.Hour)
	self := Member{Name: "p1", Addr: netip.MustParseAddr("100.64.0.1"), Cluster: "c1", Endpoint: netip.MustParseAddrPort("198.18.0.1:51820")}
	r, err := router.New(router.Config{Self: []netip.Addr{self.Addr}, ControlPort: testCtrl, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("100.66.0.1")
	pol := &EdgePolicy{Name: "t", PublicKey: [32]byte{9}, Groups: []router.Group{testGroup}}
	changes := 0
	p, err := NewProxy(ProxyConfig{Self: self, Members: []Member{self}, ControlPort: testCtrl,
		Edges: map[netip.Addr]*EdgePolicy{a: pol}, Router: r, Clock: clk, Transport: &ackTransport{},
		OnEvent: func(e Event) {
			if e.Kind == EventJoin || e.Kind == EventLeave {
				changes++
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	send := func(m Msg, seq uint32) {
		b, err := AppendMsg(nil, seq, m)
		if err != nil {
			t.Fatal(err)
		}
		p.HandleControl(netip.AddrPortFrom(a, edgePort), netip.AddrPortFrom(testGroup.Addr, testCtrl), b)
	}
	const span = 60 * time.Second
	start := clk.Now()
	for seq := uint32(1); clk.Now()-start < int64(span); seq += 2 {
		send(&Join{Group: testGroup, Port: 8080, Name: "t", Epoch: seq, Weight: 1}, seq)
		send(&Leave{Group: testGroup, Port: 8080}, seq+1)
		clk.Advance(50 * time.Millisecond)
		p.Tick()
	}
	budget := DefaultJoinBurst + int(span.Seconds()*DefaultJoinRate)
	t.Logf("join/leave loop for %v: %d joins and leaves applied; budget %d", span, changes, budget)
	if changes > budget+1 {
		t.Errorf("%d joins and leaves applied in %v, over the budget of %d", changes, span, budget)
	}
}
