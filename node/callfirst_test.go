package node

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/tunnel"
	"github.com/pias-net/pias/tunnel/membind"
)

// meshPair makes two proxies of a static mesh on an in-memory underlay
// whose every datagram waits delay. It returns starters of the one with
// the greater key, which calls first, and of the other.
func meshPair(t *testing.T, delay time.Duration) (caller, callee func() *Proxy) {
	t.Helper()
	net := membind.NewNetwork()
	keys := make([]config.Key, 2)
	for i := range keys {
		k, err := config.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	if pk0, pk1 := keys[0].PublicKey(), keys[1].PublicKey(); bytes.Compare(pk0[:], pk1[:]) < 0 {
		keys[0], keys[1] = keys[1], keys[0]
	}
	eps := []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:51820"), netip.MustParseAddrPort("198.18.0.2:51820")}
	addrs := [][]netip.Addr{{netip.MustParseAddr("100.64.0.1")}, {netip.MustParseAddr("100.64.0.2")}}
	names := []string{"p1", "p2"}
	start := func(i int) *Proxy {
		j := 1 - i
		bind := tunnel.NewLossyBind(net.Bind(eps[i]))
		bind.SetRule(eps[j], tunnel.Rule{Delay: delay})
		cfg := &config.Proxy{Node: config.Node{Name: names[i], PrivateKey: keys[i], PublicKey: keys[i].PublicKey(), Address: addrs[i],
			OverlayPrefix: config.DefaultOverlayPrefix(), AnycastPrefix: config.DefaultAnycastPrefix(),
			MTU: config.DefaultMTU, ControlPort: config.DefaultControlPort, Listen: eps[i],
			Proxies: []config.ProxyPeer{{Name: names[j], PublicKey: keys[j].PublicKey(), Endpoint: eps[j], Address: addrs[j], Cluster: "c1"}}},
			Cluster: "c1", RAPReplicas: 2, MaxFlows: config.DefaultMaxFlows}
		p, err := StartProxy(cfg, Options{Bind: bind, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	return func() *Proxy { return start(0) }, func() *Proxy { return start(1) }
}

// handshaken reports whether p has a WireGuard session with other.
func handshaken(t *testing.T, p, other *Proxy) bool {
	at, err := p.Device.LastHandshake(other.Config.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return !at.IsZero()
}

// TestProxiesStartedTogetherDoNotCrossHandshakes: two proxies of a static
// mesh start at the same moment, 400 ms apart each way. Both have a
// keepalive for the other, so without a rule both would initiate within
// a millisecond; each would answer the other's initiation, refuse the
// answer to its own, and have no session until wireguard-go's retry after
// 5 s (which can cross again). With the greater key calling first, the
// session is up after one exchange, before any retry could be, and each
// proxy has heard the other: the control messages the callee held while it
// waited were sent.
func TestProxiesStartedTogetherDoNotCrossHandshakes(t *testing.T) {
	startCaller, startCallee := meshPair(t, 400*time.Millisecond)
	caller, callee := startCaller(), startCallee()
	if !callee.awaited.any() {
		t.Fatal("the proxy with the lesser key does not await the other's call")
	}
	if caller.awaited.any() {
		t.Fatal("the proxy with the greater key awaits a call")
	}
	both := []string{"p1", "p2"}
	// One exchange is 4 crossings of 400 ms; wireguard-go's first retry
	// comes 5 s after the initiations, so a session by then is the rule's.
	waitFor(t, "a session both ways, and each proxy hearing the other", 4500*time.Millisecond, func() bool {
		return handshaken(t, caller, callee) && handshaken(t, callee, caller) &&
			slices.Equal(caller.Overlay.Live(), both) && slices.Equal(callee.Overlay.Live(), both)
	})
	if callee.awaited.any() {
		t.Fatal("the callee still awaits a call it got")
	}
}

// TestCalleeCallsWhenNotCalled: the proxy with the lesser key starts
// alone, so nobody calls it; after callWait it calls itself (into the
// void), and the two meet once the other is up.
func TestCalleeCallsWhenNotCalled(t *testing.T) {
	startCaller, startCallee := meshPair(t, 0)
	callee := startCallee()
	waitFor(t, "the callee calls", 5*time.Second, func() bool { return !callee.awaited.any() })
	caller := startCaller()
	both := []string{"p1", "p2"}
	waitFor(t, "each proxy hearing the other", 10*time.Second, func() bool {
		return handshaken(t, caller, callee) && handshaken(t, callee, caller) &&
			slices.Equal(caller.Overlay.Live(), both) && slices.Equal(callee.Overlay.Live(), both)
	})
}
