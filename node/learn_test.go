package node

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
)

// TestLearnChecks: a proxy an edge is told of becomes a candidate only if
// it clashes with nothing the edge has and can be reached.
func TestLearnChecks(t *testing.T) {
	a := netip.MustParseAddr
	cfg := &config.Edge{Node: config.Node{
		Name:          "cl1",
		PublicKey:     config.Key{1},
		Address:       []netip.Addr{a("100.64.2.1")},
		OverlayPrefix: config.DefaultOverlayPrefix(),
		Proxies:       []config.ProxyPeer{{Name: "p1", PublicKey: config.Key{2}, Address: []netip.Addr{a("100.64.0.1"), a("fd64::1")}}},
	}}
	e := &Edge{Config: cfg, proxies: cfg.Proxies}
	ok := overlay.Member{Name: "p2", PublicKey: [32]byte{3}, Addr: a("100.64.0.2"), Addr6: a("fd64::2"), Endpoint: netip.MustParseAddrPort("198.18.0.2:51820")}
	if err := e.checkLocked(ok); err != nil {
		t.Fatalf("p2: %v", err)
	}
	with := func(f func(*overlay.Member)) overlay.Member {
		m := ok
		f(&m)
		return m
	}
	for _, tc := range []struct {
		name string
		m    overlay.Member
		want string
	}{
		{"known", with(func(m *overlay.Member) { m.Name, m.PublicKey = "p1", [32]byte{2} }), "known"},
		{"name with another key", with(func(m *overlay.Member) { m.Name = "p1" }), "another key"},
		{"key of another", with(func(m *overlay.Member) { m.PublicKey = [32]byte{2} }), "key of p1"},
		{"address of another", with(func(m *overlay.Member) { m.Addr = a("100.64.0.1") }), "address of p1"},
		{"IPv6 address of another", with(func(m *overlay.Member) { m.Addr6 = a("fd64::1") }), "address of p1"},
		{"own key", with(func(m *overlay.Member) { m.PublicKey = [32]byte{1} }), "own key"},
		{"own address", with(func(m *overlay.Member) { m.Addr = a("100.64.2.1") }), "own key or address"},
		{"outside the overlay", with(func(m *overlay.Member) { m.Addr = a("10.0.0.2") }), "outside"},
		{"no endpoint", with(func(m *overlay.Member) { m.Endpoint = netip.MustParseAddrPort("0.0.0.0:51820") }), "no address to send to"},
	} {
		err := e.checkLocked(tc.m)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for i := len(e.proxies); i < config.MaxCandidates; i++ {
		e.proxies = append(e.proxies, config.ProxyPeer{Name: "x", PublicKey: config.Key{9, byte(i)}})
	}
	if err := e.checkLocked(ok); !errors.Is(err, errFull) {
		t.Errorf("with %d candidates: %v, want errFull", len(e.proxies), err)
	}
}
