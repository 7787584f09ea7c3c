package node

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pias-net/pias/config"
)

// silentProxy is a UDP socket standing for a proxy that never answers.
func silentProxy(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// testClient is a netstack client at addr with one proxy p1 (proxyAddrs)
// at the silent endpoint ep.
func testClient(t *testing.T, addr netip.Addr, ep netip.AddrPort, learn bool, proxyAddrs ...netip.Addr) *Edge {
	t.Helper()
	k, err := config.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pk, err := config.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Edge{
		Node: config.Node{
			Name: "cl1", PrivateKey: k, PublicKey: k.PublicKey(), Address: []netip.Addr{addr},
			OverlayPrefix: config.DefaultOverlayPrefix(), AnycastPrefix: config.DefaultAnycastPrefix(),
			MTU: config.DefaultMTU, ControlPort: config.DefaultControlPort, Listen: netip.MustParseAddrPort("127.0.0.1:0"),
			Proxies: []config.ProxyPeer{{Name: "p1", PublicKey: pk.PublicKey(), Endpoint: ep, Address: proxyAddrs}},
		},
		Role: config.RoleClient, Interface: config.InterfaceNetstack, Keepalive: config.DefaultKeepalive, LearnProxies: learn,
	}
	e, err := StartEdge(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// TestEdgeProbesItsOwnFamily: an IPv6-only edge probes its proxy's IPv6
// address; with a proxy that has none it cannot probe or ask, and stays
// on it without an attacher.
func TestEdgeProbesItsOwnFamily(t *testing.T) {
	v6 := netip.MustParseAddr("fd64::2:1")
	e := testClient(t, v6, silentProxy(t), true, netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd64::1"))
	if e.Attach == nil {
		t.Fatal("an edge that learns proxies runs no attacher")
	}
	if c := e.Attach.Status().Candidates; len(c) != 1 || c[0].Addr != netip.MustParseAddr("fd64::1") {
		t.Errorf("IPv6-only edge probes %+v, want p1 at fd64::1", c)
	}
	e = testClient(t, v6, silentProxy(t), true, netip.MustParseAddr("100.64.0.1"))
	if e.Attach != nil {
		t.Errorf("IPv6-only edge runs an attacher for a proxy with no IPv6 address: %+v", e.Attach.Status())
	}
}
