package node

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/tunnel"
	"github.com/pias-net/pias/tunnel/membind"
)

// staleIndexBind sends as its inner bind does, but spoils the receiver
// index of every transport packet to one endpoint that carries the first
// index it saw there: the receiver's side of that session is as if it had
// dropped the index, which is what two handshakes that wireguard-go's
// workers run at once leave behind (redial.go). Later sessions pass.
type staleIndexBind struct {
	conn.Bind
	to      netip.AddrPort
	mu      sync.Mutex
	stale   uint32
	seen    bool
	spoiled atomic.Uint64
}

func (b *staleIndexBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if dst, err := netip.ParseAddrPort(ep.DstToString()); err == nil && dst == b.to {
		b.mu.Lock()
		for _, buf := range bufs {
			// A transport message: type 4, then the receiver's index.
			if len(buf) < 16 || binary.LittleEndian.Uint32(buf) != 4 {
				continue
			}
			idx := binary.LittleEndian.Uint32(buf[4:8])
			if !b.seen {
				b.stale, b.seen = idx, true
			}
			if idx == b.stale {
				binary.LittleEndian.PutUint32(buf[4:8], ^idx)
				b.spoiled.Add(1)
			}
		}
		b.mu.Unlock()
	}
	return b.Bind.Send(bufs, ep)
}

// mesh3 is three proxies of one cluster of a static mesh on an in-memory
// underlay, by descending key: of each pair, the lower index calls first.
type mesh3 struct {
	t     *testing.T
	keys  [3]config.Key
	eps   [3]netip.AddrPort
	addrs [3]netip.Addr
	binds [3]conn.Bind
	net   *membind.Network
}

func newMesh3(t *testing.T) *mesh3 {
	m := &mesh3{t: t, net: membind.NewNetwork()}
	for i := range m.keys {
		k, err := config.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		m.keys[i] = k
		m.eps[i] = netip.MustParseAddrPort(fmt.Sprintf("198.18.0.%d:51820", i+1))
		m.addrs[i] = netip.MustParseAddr(fmt.Sprintf("100.64.0.%d", i+1))
	}
	slices.SortFunc(m.keys[:], func(a, b config.Key) int {
		pa, pb := a.PublicKey(), b.PublicKey()
		return -bytes.Compare(pa[:], pb[:])
	})
	for i := range m.binds {
		m.binds[i] = m.net.Bind(m.eps[i])
	}
	return m
}

func (m *mesh3) start(i int) *Proxy {
	m.t.Helper()
	var peers []config.ProxyPeer
	for j := range m.keys {
		if j != i {
			peers = append(peers, config.ProxyPeer{Name: fmt.Sprintf("p%d", j+1), PublicKey: m.keys[j].PublicKey(), Endpoint: m.eps[j], Address: []netip.Addr{m.addrs[j]}, Cluster: "c1"})
		}
	}
	p := startStatic(m.t, meshProxy(fmt.Sprintf("p%d", i+1), m.keys[i], []netip.Addr{m.addrs[i]}, m.eps[i], peers...), m.binds[i])
	m.t.Cleanup(func() {
		if m.t.Failed() { // before p closes: what it has and knows
			ps, _ := p.Device.Peers()
			for _, st := range ps {
				m.t.Logf("%s: peer %x: handshake %v, rx %d, tx %d", p.Name, st.PublicKey[:4], st.LastHandshake, st.RxBytes, st.TxBytes)
			}
			for _, mi := range p.Overlay.Members() {
				m.t.Logf("%s: member %+v", p.Name, mi)
			}
		}
	})
	return p
}

// calledInto reports whether p has sent the peer with this key anything.
func calledInto(p *Proxy, key config.Key) bool {
	ps, err := p.Device.Peers()
	return err == nil && slices.ContainsFunc(ps, func(st tunnel.PeerStats) bool { return st.PublicKey == key && st.TxBytes > 0 })
}

// member is how p sees the member named name.
func member(t *testing.T, p *Proxy, name string) overlay.MemberInfo {
	t.Helper()
	for _, mi := range p.Overlay.Members() {
		if mi.Name == name {
			return mi
		}
	}
	t.Fatalf("%s has no member %s", p.Name, name)
	return overlay.MemberInfo{}
}

// TestSessionThatCarriesNothingIsRedialed: every packet p2 sends p1 in
// their first session reaches p1 with an index p1 does not hold, as after
// two handshakes that ran at once. The overlay suspects the one silent to
// it, never heard, and the session is started afresh: the two hear each
// other well before wireguard-go would start again.
//   - p1 calls: p1's own packets arrive, p1 hears nothing, and wireguard-go
//     would start again only after 15 s of silence. p1 redials.
//   - p2 calls (p1's call at its start was lost): p1 never confirms the
//     session, and neither hears the other. p2, whose session carried
//     nothing, redials.
func TestSessionThatCarriesNothingIsRedialed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		p1Calls bool
	}{{"p1 calls", true}, {"p2 calls", false}} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMesh3(t)
			stale := &staleIndexBind{Bind: m.binds[1], to: m.eps[0]}
			m.binds[1] = stale
			start := time.Now()
			var p1, p2, p3 *Proxy
			if tc.p1Calls {
				// p2 and p3 call p1 into the void first, when their
				// waits for p1's call end; then p1 starts and calls.
				// (Were p1 to start as p3's wait ends, the two calls
				// would cross: no session until wireguard-go's retry.)
				p2, p3 = m.start(1), m.start(2)
				waitFor(t, "p2 and p3 call p1, who is not up", 5*time.Second, func() bool {
					return calledInto(p2, m.keys[0].PublicKey()) && calledInto(p3, m.keys[0].PublicKey())
				})
				start = time.Now()
				p1 = m.start(0)
			} else {
				p1, p2, p3 = m.start(0), m.start(1), m.start(2)
			}
			waitFor(t, "p1 and p2 hear each other", 8*time.Second, func() bool {
				return member(t, p1, "p2").Heard && member(t, p2, "p1").Heard
			})
			took := time.Since(start)
			if stale.spoiled.Load() == 0 {
				t.Fatal("no packet of p2's first session was spoiled: the test proves nothing")
			}
			called := p2 // its session carried nothing
			if tc.p1Calls {
				called = p1
			}
			if called.redials.Load() == 0 {
				t.Fatalf("p1 and p2 heard each other after %v; redials: p1 %d, p2 %d; want %s's", took, p1.redials.Load(), p2.redials.Load(), called.Name)
			}
			waitFor(t, "p3 hears the others", 3*time.Second, func() bool {
				return member(t, p3, "p1").Heard && member(t, p3, "p2").Heard
			})
			// (A session p3 never got, under load, may be started afresh:
			// recalls, not redials.)
			if n := p3.redials.Load(); n != 0 {
				t.Errorf("p3 redialed %d times; its sessions all carried traffic", n)
			}
			t.Logf("p1 and p2 heard each other %v after p1 started; redials: p1 %d, p2 %d; recalls: p1 %d, p2 %d, p3 %d; %d packets spoiled",
				took.Round(time.Millisecond), p1.redials.Load(), p2.redials.Load(),
				p1.recalls.Load(), p2.recalls.Load(), p3.recalls.Load(), stale.spoiled.Load())
		})
	}
}

// TestCutPathKeepsItsSession: once the three have met, everything p2 sends
// to p1 is lost. p1 finds p2 unreachable (alive by p3's word), but the
// session is older than the silence: the path is cut, not the session,
// and p1 keeps it, so that p2 is heard again as soon as the path works.
func TestCutPathKeepsItsSession(t *testing.T) {
	m := newMesh3(t)
	lossy := tunnel.NewLossyBind(m.binds[1])
	m.binds[1] = lossy
	p1, p2, p3 := m.start(0), m.start(1), m.start(2)
	waitFor(t, "all three hear each other", 8*time.Second, func() bool {
		return member(t, p1, "p2").Heard && member(t, p1, "p3").Heard && member(t, p2, "p1").Heard &&
			member(t, p2, "p3").Heard && member(t, p3, "p1").Heard && member(t, p3, "p2").Heard
	})
	before, err := p1.Device.LastHandshake(p2.Config.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	lossy.SetRule(m.eps[0], tunnel.Rule{Drop: true})
	waitFor(t, "p1 finds p2 unreachable", 8*time.Second, func() bool { return member(t, p1, "p2").Unreachable })
	// Two redial rounds (redialEvery) while it stays cut.
	deadline := time.Now().Add(4500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if mi := member(t, p1, "p2"); !mi.Unreachable || mi.State == overlay.StateDead {
			t.Fatalf("p2 is %v, unreachable %v at p1 during the cut; the test wants it alive and unreachable", mi.State, mi.Unreachable)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := p1.redials.Load(); n != 0 {
		t.Fatalf("p1 redialed p2 %d times over a cut path", n)
	}
	if after, err := p1.Device.LastHandshake(p2.Config.PublicKey); err != nil || !after.Equal(before) {
		t.Fatalf("p1's session with p2 changed during the cut: %v, then %v (%v)", before, after, err)
	}
	lossy.Clear()
	waitFor(t, "p1 reaches p2 again", 3*time.Second, func() bool { return !member(t, p1, "p2").Unreachable })
}

// TestRedialAge: which silent peers are reset. A session that began within
// the silence is, once past sessionGrace; an older one is not (a cut path).
// No session is reset by the lesser key, to wait for the greater's call,
// and left to wireguard-go's retry by the greater.
func TestRedialAge(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		name string
		st   tunnel.PeerStats
		want bool
	}{
		{"session within the silence", tunnel.PeerStats{LastHandshake: now.Add(-time.Second)}, true},
		{"session within the silence, too young to tell", tunnel.PeerStats{LastHandshake: now.Add(-200 * time.Millisecond)}, false},
		{"session older than the silence", tunnel.PeerStats{LastHandshake: now.Add(-3 * time.Second)}, false},
		{"no session", tunnel.PeerStats{RxBytes: 148}, true},
	} {
		if age, got := redialAge(tc.st, 2*time.Second, now, false); got != tc.want {
			t.Errorf("%s, of the lesser key: reset %v (session of %v), want %v", tc.name, got, age, tc.want)
		}
		// The greater key resets the same sessions, and leaves none to
		// wireguard-go's retry.
		want := tc.want && !tc.st.LastHandshake.IsZero()
		if age, got := redialAge(tc.st, 2*time.Second, now, true); got != want {
			t.Errorf("%s, of the greater key: reset %v (session of %v), want %v", tc.name, got, age, want)
		}
	}
}
