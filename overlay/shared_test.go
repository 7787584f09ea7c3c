package overlay

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// Proxies configured with one MemberList share its table until one of
// them changes its own, and run as a mesh configured by Members does.
func TestSharedMemberList(t *testing.T) {
	h := newHarness(t, 1, unitLink)
	var all []Member
	for i := 1; i <= 4; i++ {
		all = append(all, testMember(i, "c1"))
	}
	shared := NewMemberList(all)
	var ps []*Proxy
	for _, m := range all {
		ps = append(ps, h.start(m, nil, func(c *ProxyConfig) { c.Shared = shared }))
	}
	for i, p := range ps {
		if p.mem.table() != shared.t {
			t.Fatalf("%s built its own table", all[i].Name)
		}
		if !slices.Equal(p.Known(), all) {
			t.Fatalf("%s knows %v, want %v", all[i].Name, p.Known(), all)
		}
	}
	h.run(3 * time.Second)
	for i, p := range ps {
		if got := len(p.Live()); got != len(all) {
			t.Fatalf("%s sees %d live, want %d", all[i].Name, got, len(all))
		}
	}
	// A change at one proxy is its own: the others keep the shared table.
	ep := netip.MustParseAddrPort("198.18.9.9:51820")
	ps[0].SetEndpoint(ep)
	if ps[0].Known()[0].Endpoint != ep {
		t.Fatalf("p1's endpoint did not change")
	}
	if ps[1].mem.table() != shared.t || ps[1].Known()[0] != all[0] {
		t.Fatalf("p1's change reached p2's table: %v", ps[1].Known()[0])
	}
}

func TestSharedMemberListChecks(t *testing.T) {
	h := newHarness(t, 1, unitLink)
	a, b := testMember(1, "c1"), testMember(2, "c1")
	shared := NewMemberList([]Member{a})
	n := h.addNode(b)
	r := h.start(a, []Member{a}, nil).cfg.Router // a router to borrow
	base := func(self Member) ProxyConfig {
		return ProxyConfig{Self: self, Shared: shared, ControlPort: testCtrl, Router: r, Clock: h.clk, Transport: n}
	}
	if _, err := NewProxy(base(b)); err == nil {
		t.Error("a proxy missing from its shared list was taken")
	}
	moved := a
	moved.Endpoint = netip.MustParseAddrPort("198.18.9.9:51820")
	if _, err := NewProxy(base(moved)); err == nil {
		t.Error("a proxy configured unlike its shared record was taken")
	}
	cfg := base(a)
	cfg.Members = []Member{a}
	if _, err := NewProxy(cfg); err == nil {
		t.Error("Members and Shared both set were taken")
	}
	if _, err := NewProxy(base(a)); err != nil {
		t.Errorf("a proxy in its shared list: %v", err)
	}
}
