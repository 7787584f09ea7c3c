package node

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/tunnel"
	"github.com/pias-net/pias/tunnel/membind"
)

// meshPair is two proxies of a static mesh on an in-memory underlay, each
// with a LossyBind: index 0 has the greater key and calls first, index 1
// is called.
type meshPair struct {
	t     *testing.T
	keys  [2]config.Key
	eps   [2]netip.AddrPort
	binds [2]*tunnel.LossyBind
}

const caller, callee = 0, 1

func newMeshPair(t *testing.T) *meshPair {
	m := &meshPair{t: t, eps: [2]netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:51820"), netip.MustParseAddrPort("198.18.0.2:51820")}}
	for i := range m.keys {
		k, err := config.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		m.keys[i] = k
	}
	if pk0, pk1 := m.keys[0].PublicKey(), m.keys[1].PublicKey(); bytes.Compare(pk0[:], pk1[:]) < 0 {
		m.keys[0], m.keys[1] = m.keys[1], m.keys[0]
	}
	net := membind.NewNetwork()
	for i := range m.binds {
		m.binds[i] = tunnel.NewLossyBind(net.Bind(m.eps[i]))
	}
	return m
}

// delay makes every datagram between the two wait d, each way.
func (m *meshPair) delay(d time.Duration) {
	m.binds[0].SetRule(m.eps[1], tunnel.Rule{Delay: d})
	m.binds[1].SetRule(m.eps[0], tunnel.Rule{Delay: d})
}

func (m *meshPair) start(i int) *Proxy {
	m.t.Helper()
	j := 1 - i
	names := []string{"p1", "p2"}
	addrs := [][]netip.Addr{{netip.MustParseAddr("100.64.0.1")}, {netip.MustParseAddr("100.64.0.2")}}
	return startStatic(m.t, meshProxy(names[i], m.keys[i], addrs[i], m.eps[i],
		config.ProxyPeer{Name: names[j], PublicKey: m.keys[j].PublicKey(), Endpoint: m.eps[j], Address: addrs[j], Cluster: "c1"}), m.binds[i])
}

// meshProxy is the file of a proxy of cluster c1 of a static mesh.
func meshProxy(name string, key config.Key, addrs []netip.Addr, listen netip.AddrPort, peers ...config.ProxyPeer) *config.Proxy {
	return &config.Proxy{Node: config.Node{Name: name, PrivateKey: key, PublicKey: key.PublicKey(), Address: addrs,
		OverlayPrefix: config.DefaultOverlayPrefix(), AnycastPrefix: config.DefaultAnycastPrefix(),
		MTU: config.DefaultMTU, ControlPort: config.DefaultControlPort, Listen: listen, Proxies: peers},
		Cluster: "c1", RAPReplicas: 2, MaxFlows: config.DefaultMaxFlows}
}

// startStatic starts the proxy of cfg on bind until the test ends.
func startStatic(t *testing.T, cfg *config.Proxy, bind conn.Bind) *Proxy {
	t.Helper()
	p, err := StartProxy(cfg, Options{Bind: bind, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// meet waits until the two have a session both ways, each has heard the
// other, and the callee b no longer waits.
func meet(t *testing.T, a, b *Proxy, within time.Duration) {
	t.Helper()
	heard := func(p *Proxy) bool {
		for _, n := range p.Overlay.Stats().Received {
			if n > 0 {
				return true
			}
		}
		return false
	}
	waitFor(t, "a session both ways, and each proxy hearing the other", within, func() bool {
		return handshaken(t, a, b) && handshaken(t, b, a) && heard(a) && heard(b) && !b.awaited.any()
	})
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
// mesh start at the same moment, 80 ms apart each way. Both have a
// keepalive for the other, so without a rule both would initiate within
// a millisecond; each would answer the other's initiation, refuse the
// answer to its own, and have no session until wireguard-go's retry after
// 5 s (which can cross again). With the greater key calling first, the
// session is up after one exchange, and the callee's wait ends with the
// call; what it held meanwhile is sent, not dropped.
func TestProxiesStartedTogetherDoNotCrossHandshakes(t *testing.T) {
	m := newMeshPair(t)
	m.delay(80 * time.Millisecond)
	a, b := m.start(caller), m.start(callee)
	if !b.awaited.any() {
		t.Fatal("the proxy with the lesser key does not await the other's call")
	}
	if a.awaited.any() {
		t.Fatal("the proxy with the greater key awaits a call")
	}
	// One exchange is 3 crossings of 80 ms; wireguard-go's first retry
	// comes 5 s after the initiations, so a session by then is the rule's.
	meet(t, a, b, 4500*time.Millisecond)
	byCall, byTimeout, held := b.awaited.ended()
	if byCall != 1 || byTimeout != 0 {
		t.Fatalf("waits ended: %d by the call, %d without; want 1 and 0", byCall, byTimeout)
	}
	// The callee announced itself (Alive) as it started, while it waited;
	// with no death in this mesh, that is the only Alive the caller gets.
	if held == 0 {
		t.Fatal("the callee held nothing while it waited: the test proves nothing about what it holds")
	}
	waitFor(t, "the callee's held announcement reaches the caller", 2*time.Second, func() bool {
		return a.Overlay.Stats().Received[overlay.TypeAlive] > 0
	})
}

// TestCalleeCallsWhenTheCallIsLost: the caller's first initiation is lost,
// and wireguard-go would send the next only 5 s later. The callee calls
// itself after callWait, so the two meet well before that (after callWait and
// a round trip).
func TestCalleeCallsWhenTheCallIsLost(t *testing.T) {
	m := newMeshPair(t)
	m.binds[caller].SetRule(m.eps[callee], tunnel.Rule{Drop: true})
	a := m.start(caller)
	waitFor(t, "the caller's first initiation is dropped", 5*time.Second, func() bool {
		dropped, _ := m.binds[caller].Stats()
		return dropped > 0
	})
	m.binds[caller].Clear()
	b := m.start(callee)
	meet(t, a, b, 3*time.Second)
	if byCall, byTimeout, _ := b.awaited.ended(); byCall != 0 || byTimeout != 1 {
		t.Fatalf("waits ended: %d by the call, %d without; want 0 and 1", byCall, byTimeout)
	}
}

// TestCalleeCallsWhenNotCalled: the proxy with the lesser key starts
// alone, so nobody calls it; after callWait it calls itself (into the
// void), and the two meet once the other is up and calls.
func TestCalleeCallsWhenNotCalled(t *testing.T) {
	m := newMeshPair(t)
	b := m.start(callee)
	// Its call must be gone before the other starts: one that reached a
	// starting caller would cross the caller's own.
	waitFor(t, "the callee calls", 5*time.Second, func() bool {
		ps, err := b.Device.Peers()
		return err == nil && len(ps) == 1 && ps[0].TxBytes > 0
	})
	a := m.start(caller)
	meet(t, a, b, 10*time.Second)
}
