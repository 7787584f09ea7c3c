package overlay

import (
	"bytes"
	"crypto/ed25519"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/admit"
	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// Attacks on a CA-mode proxy's handshake, on a fake clock: a proxy alone,
// fed datagrams by hand, with a transport that records what it sends.

// caNet is a CA-mode proxy's transport: it keeps what it sends outside
// the tunnels, and its edges' peers.
type caNet struct {
	out   []caDatagram
	peers map[[32]byte][]netip.Addr
	// handshakes: when each peer last handshook (none: never).
	handshakes map[[32]byte]time.Time
}

type caDatagram struct {
	to netip.AddrPort
	b  []byte
}

func (n *caNet) Send(src, dst netip.AddrPort, payload []byte) {}
func (n *caNet) Forward(pkt []byte)                           {}
func (n *caNet) SendUnderlay(to netip.AddrPort, pkt []byte) {
	n.out = append(n.out, caDatagram{to, bytes.Clone(pkt)})
}
func (n *caNet) AddPeer(m Member, keepalive bool) error { return nil }
func (n *caNet) AddEdge(key [32]byte, addrs []netip.Addr, ep netip.AddrPort) error {
	n.peers[key] = addrs
	return nil
}
func (n *caNet) RemovePeer(key [32]byte) { delete(n.peers, key) }

// LastHandshake is what a test says; by default never, so that a lease
// lives on hellos alone.
func (n *caNet) LastHandshake(k [32]byte) time.Time { return n.handshakes[k] }

// take removes and returns what was sent to to.
func (n *caNet) take(to netip.AddrPort) [][]byte {
	var got [][]byte
	n.out = slices.DeleteFunc(n.out, func(d caDatagram) bool {
		if d.to == to {
			got = append(got, d.b)
		}
		return d.to == to
	})
	return got
}

// caFixture is a CA and a proxy p1 in CA mode that trusts it.
type caFixture struct {
	t    testing.TB
	clk  *overlaytest.Clock
	ca   *cert.CA
	key  ed25519.PrivateKey
	pool *cert.Pool
	p    *Proxy
	net  *caNet
	keys *admit.Keys // p1's
	ep   netip.AddrPort
}

var caRight = cert.GroupRight{Prefix: netip.MustParsePrefix("100.65.0.0/24"), Proto: router.ProtoUDP}

func newCAFixture(t testing.TB) *caFixture {
	t.Helper()
	clk := overlaytest.NewClock()
	clk.Advance(time.Hour)
	wall := clk.Wall()
	ca, key, err := cert.NewCA("test", wall.Add(-time.Hour), wall.Add(30*24*time.Hour), nil, nil, rand.NewChaCha8([32]byte{1}))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := cert.NewPool(ca)
	if err != nil {
		t.Fatal(err)
	}
	f := &caFixture{t: t, clk: clk, ca: ca, key: key, pool: pool, net: &caNet{peers: map[[32]byte][]netip.Addr{}},
		ep: netip.MustParseAddrPort("198.18.0.1:51820")}
	priv, keys := caKeys(t, 1)
	f.keys = keys
	c := f.sign("p1", cert.RoleProxy, keys.Public, "100.64.0.1")
	self := Member{Name: "p1", Addr: netip.MustParseAddr("100.64.0.1"), Cluster: "c1", PublicKey: keys.Public, Endpoint: f.ep}
	r, err := router.New(router.Config{Self: []netip.Addr{self.Addr}, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}, ControlPort: testCtrl})
	if err != nil {
		t.Fatal(err)
	}
	f.p, err = NewProxy(ProxyConfig{Self: self, Members: []Member{self}, ControlPort: testCtrl, Router: r, Clock: clk, Transport: f.net,
		Certs: &CertConfig{Pool: pool, Cert: c, PrivateKey: priv}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func caKeys(t testing.TB, seed uint64) ([32]byte, *admit.Keys) {
	t.Helper()
	var priv [32]byte
	rng := rand.New(rand.NewPCG(seed, 99))
	for i := range priv {
		priv[i] = byte(rng.Uint32())
	}
	k, err := admit.NewKeys(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, k
}

// sign is a certificate the fixture's CA signs, valid for a day.
func (f *caFixture) sign(name string, role cert.Role, key [32]byte, addr string) *cert.Certificate {
	f.t.Helper()
	c := &cert.Certificate{Name: name, Role: role, PublicKey: key, Addresses: []netip.Addr{netip.MustParseAddr(addr)},
		NotBefore: f.clk.Wall().Add(-time.Minute), NotAfter: f.clk.Wall().Add(24 * time.Hour)}
	switch role {
	case cert.RoleProxy:
		c.Cluster = "c1"
	case cert.RoleTarget:
		c.Groups, c.MaxWeight = []cert.GroupRight{caRight}, 1
	}
	if err := f.ca.Sign(c, f.key); err != nil {
		f.t.Fatal(err)
	}
	return c
}

// forgedHellos are n hellos to p1 of good-looking target certificates
// (signed by the CA, even) whose keys the sender does not hold: no MAC
// checks.
func (f *caFixture) forgedHellos(n int) [][]byte {
	f.t.Helper()
	_, mine := caKeys(f.t, 1000)
	c := f.sign("victim", cert.RoleTarget, [32]byte{9, 9, 9}, "100.64.9.9")
	raw, err := c.Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	out := make([][]byte, n)
	for i := range out {
		raw := bytes.Clone(raw)
		b, err := admit.AppendHello(mine, f.clk.Wall(), uint64(i), f.keys.Public, raw, nil)
		if err != nil {
			f.t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// caEdge is an edge admitted through the handshake's client, at ep.
type caEdge struct {
	f        *caFixture
	c        *admit.Client
	ep       netip.AddrPort
	name     string
	welcomes int
}

func (f *caFixture) newEdge(name, addr string, seed uint64, ep netip.AddrPort) *caEdge {
	f.t.Helper()
	_, keys := caKeys(f.t, seed)
	c := f.sign(name, cert.RoleTarget, keys.Public, addr)
	raw, err := c.Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	cl := admit.NewClient(admit.ClientConfig{Keys: keys, Pool: f.pool, Cert: raw, Renew: EdgeRenew, Seed: seed})
	cl.Add(f.ep, f.clk.Now())
	return &caEdge{f: f, c: cl, ep: ep, name: name}
}

// run sends what is due and takes what p1 answered.
func (e *caEdge) run() {
	f := e.f
	for _, d := range e.c.Tick(f.clk.Now(), f.clk.Wall()) {
		f.p.HandleUnderlay(e.ep, d.B)
	}
	e.answers()
}

func (e *caEdge) answers() {
	f := e.f
	for len(f.net.out) > 0 {
		got := f.net.take(e.ep)
		if len(got) == 0 {
			return
		}
		for _, b := range got {
			r, out, ok := e.c.Handle(f.clk.Now(), f.clk.Wall(), f.ep, b)
			if ok && (r.Admitted || r.Renewed) {
				e.welcomes++
			}
			for _, d := range out {
				f.p.HandleUnderlay(e.ep, d.B)
			}
		}
	}
}

// runFor runs the edge and its proxy for n ticks of 100 ms.
func (e *caEdge) runFor(n int) {
	for range n {
		e.run()
		e.f.p.Tick()
		e.f.clk.Advance(100 * time.Millisecond)
	}
}

func (e *caEdge) admitted() bool { return slices.Contains(e.f.p.CertEdges(), e.name) }

// TestCAEdgeAdmittedAndRenewed: the fixture works: an edge is admitted,
// renews its lease, and keeps it for ten minutes.
func TestCAEdgeAdmittedAndRenewed(t *testing.T) {
	f := newCAFixture(t)
	e := f.newEdge("t1", "100.64.1.1", 7, netip.MustParseAddrPort("198.18.1.1:40000"))
	for range 6000 { // ten minutes, a tick every 100 ms
		e.run()
		f.p.Tick()
		f.clk.Advance(100 * time.Millisecond)
	}
	if !e.admitted() || e.welcomes < 25 {
		t.Fatalf("admitted %v, %d welcomes in ten minutes", e.admitted(), e.welcomes)
	}
}

// TestCAForgedHelloFloodCutsOffEdges: 100,000 forged hellos a second (well
// under what one goroutine sends on loopback: see node's TestCAAttacks) at
// a proxy for two minutes. They need not even name this proxy: the hello
// bucket is spent before anything is checked. The admitted edge's
// renewals must still get through, or it loses its lease and is cut off
// (its peer removed, its joins and flows dropped).
func TestCAForgedHelloFloodCutsOffEdges(t *testing.T) {
	f := newCAFixture(t)
	e := f.newEdge("t1", "100.64.1.1", 7, netip.MustParseAddrPort("198.18.1.1:40000"))
	e.runFor(10)
	if !e.admitted() {
		t.Fatal("t1 not admitted before the flood")
	}
	attacker := netip.MustParseAddrPort("203.0.113.9:51820")
	rng := rand.New(rand.NewPCG(5, 6))
	const perMs = 100
	welcomes := e.welcomes
	var cutAt time.Duration
	var forged [][]byte
	for ms := 0; ms < 120_000; ms++ {
		if ms%30_000 == 0 { // fresh ones every 30 s
			forged = f.forgedHellos(perMs)
			for i := range forged {
				forged[i][admit.HeaderLen+8] ^= 1 // for another proxy: not even an X25519
			}
		}
		// The edge's datagrams come at a random place among the
		// millisecond's forged ones.
		r := rng.IntN(perMs + 1)
		for i := range perMs {
			if i == r {
				e.run()
			}
			f.p.HandleUnderlay(attacker, forged[i])
		}
		if r == perMs {
			e.run()
		}
		if ms%100 == 0 {
			f.p.Tick()
			if !e.admitted() && cutAt == 0 {
				cutAt = time.Duration(ms) * time.Millisecond
			}
		}
		f.clk.Advance(time.Millisecond)
	}
	if len(f.net.take(attacker)) != 0 {
		t.Fatal("forged hellos answered")
	}
	t.Logf("two minutes of %d forged hellos/s: t1 renewed %d times; cut off after %v of flood (0: never)", perMs*1000, e.welcomes-welcomes, cutAt)
	if cutAt != 0 {
		t.Error("a flood of forged hellos spends the hello bucket (helloRate 500/s) before any check, so renewals starve and the admitted edge loses its lease and is cut off; fix: keep the bucket for unknown keys only (a hello whose certificate's key is an admitted edge's gets its own budget, checked after the MAC), or count a live WireGuard session with the edge as a renewal")
	}
}

// TestCASelfSignedFutureHellosLockOutNewcomers: anyone can make a CA and a
// certificate of a key they hold, so their hellos' MACs check. Dated
// admit.Ahead in the future, 300 a second (under the hello bucket's
// rate) fill the replay memory, whose floor then stays ahead of the
// clock: every genuine hello is dropped as a replay.
func TestCASelfSignedFutureHellosLockOutNewcomers(t *testing.T) {
	// Dated now, the same flood leaves room: the test can tell.
	if !selfSignedFlood(t, 0) {
		t.Fatal("a newcomer is not admitted during a flood of self-signed hellos dated now")
	}
	if !selfSignedFlood(t, admit.Ahead-10*time.Millisecond) {
		t.Error("hellos whose MAC checks but whose certificate no trusted CA signed go into the replay memory (admit.Seen) before the certificate is verified; dated admit.Ahead ahead at ~300/s they keep its floor ahead of the clock and every genuine hello is dropped as a replay. Fix (overlay/certs.go handleAdmit): verify the certificate (pool.Verify) before seen.Take")
	}
}

// selfSignedFlood sends a proxy 300 hellos a second, dated ahead, of a
// certificate its sender signed itself, for 30 s; a newcomer starts after
// 5 s. It reports whether the newcomer was admitted.
func selfSignedFlood(t *testing.T, ahead time.Duration) bool {
	f := newCAFixture(t)
	wall := f.clk.Wall()
	mine, raw := selfSigned(t, wall)
	attacker := netip.MustParseAddrPort("203.0.113.9:51820")
	e := f.newEdge("newcomer", "100.64.1.2", 8, netip.MustParseAddrPort("198.18.1.2:40000"))
	const step = time.Second / 300
	var nonce uint64
	for i := 0; time.Duration(i)*step < 30*time.Second; i++ {
		nonce++
		b, err := admit.AppendHello(mine, f.clk.Wall().Add(ahead), nonce, f.keys.Public, raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		f.p.HandleUnderlay(attacker, b)
		if got := f.net.take(attacker); len(got) != 1 {
			t.Fatalf("%d answers to a self-signed hello; want one refusal", len(got))
		}
		if time.Duration(i)*step > 5*time.Second { // the newcomer starts once the memory is full
			e.run()
		}
		if i%30 == 0 {
			f.p.Tick()
		}
		f.clk.Advance(step)
	}
	return e.admitted()
}

// BenchmarkForgedHello is what a proxy spends on one forged hello (a good
// certificate, a key the sender does not hold): header, parse, X25519,
// SHA-256, no answer. The clock moves 2 ms each, so the hello bucket
// never runs dry.
func BenchmarkForgedHello(b *testing.B) {
	f := newCAFixture(b)
	forged := f.forgedHellos(64)
	from := netip.MustParseAddrPort("203.0.113.9:51820")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.p.HandleUnderlay(from, forged[i%len(forged)])
		f.clk.Advance(time.Second / helloRate)
		if i%10_000 == 9_999 { // 20 s on: fresh ones
			b.StopTimer()
			forged = f.forgedHellos(64)
			b.StartTimer()
		}
	}
	b.StopTimer()
	if len(f.net.out) != 0 {
		b.Fatalf("%d answers to forged hellos", len(f.net.out))
	}
}

// BenchmarkForgedHelloLimited: the same with the hello bucket dry (the
// clock stands still): the cost of the header and the bucket only.
func BenchmarkForgedHelloLimited(b *testing.B) {
	f := newCAFixture(b)
	forged := f.forgedHellos(64)
	from := netip.MustParseAddrPort("203.0.113.9:51820")
	for i := range helloBurst + 1 {
		f.p.HandleUnderlay(from, forged[i%len(forged)])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.p.HandleUnderlay(from, forged[i%len(forged)])
	}
}

// BenchmarkSelfSignedHello: a hello whose MAC checks, of a certificate of
// an unknown CA: the proxy also answers (a refusal) and remembers it.
func BenchmarkSelfSignedHello(b *testing.B) {
	f := newCAFixture(b)
	wall := f.clk.Wall()
	mine, raw := selfSigned(b, wall)
	hellos := make([][]byte, 4096)
	for i := range hellos {
		hellos[i], _ = admit.AppendHello(mine, wall, uint64(i), f.keys.Public, raw, nil)
	}
	from := netip.MustParseAddrPort("203.0.113.9:51820")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.p.HandleUnderlay(from, hellos[i%len(hellos)])
		f.net.out = f.net.out[:0]
		if i%len(hellos) == len(hellos)-1 {
			b.StopTimer()
			f.clk.Advance(admit.Skew / 4) // a new round of fresh ones
			for j := range hellos {
				hellos[j], _ = admit.AppendHello(mine, f.clk.Wall(), uint64(i+j), f.keys.Public, raw, nil)
			}
			b.StartTimer()
		}
		f.clk.Advance(time.Second / helloRate)
	}
}

// FuzzCAUnderlay: a CA-mode proxy takes any datagram on its WireGuard
// socket without panicking, answers with no more bytes than it got, and
// answers the same datagram twice only if it is a request (stateless).
func FuzzCAUnderlay(f *testing.F) {
	fx := newCAFixture(f)
	_, keys := caKeys(f, 7)
	c := fx.sign("t1", cert.RoleTarget, keys.Public, "100.64.1.1")
	raw, err := c.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	wall := fx.clk.Wall()
	hello, err := admit.AppendHello(keys, wall, 1, fx.keys.Public, raw, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(admit.AppendRequest(wall, 1))
	f.Add(hello)
	f.Add(fx.forgedHellos(1)[0])
	f.Add(admit.AppendOffer(wall, 1, raw, admit.RequestLen))
	f.Add([]byte("PIAS\x02\x01"))
	from := netip.MustParseAddrPort("203.0.113.9:51820")
	f.Fuzz(func(t *testing.T, pkt []byte) {
		fx := newCAFixture(t)
		fx.p.HandleUnderlay(from, pkt)
		got := fx.net.take(from)
		for _, b := range got {
			if len(b) > len(pkt) {
				t.Fatalf("an answer of %d bytes to %d", len(b), len(pkt))
			}
		}
		if len(fx.net.out) != 0 {
			t.Fatalf("%d datagrams to others", len(fx.net.out))
		}
		fx.p.HandleUnderlay(from, pkt)
		if again := fx.net.take(from); len(again) != 0 && (len(pkt) < admit.RequestLen || pkt[len(admit.Magic)+1] != admit.KindRequest) {
			t.Fatal("the same datagram answered twice")
		}
	})
}

// TestCALeaseLivesOnHandshakes: an admitted edge whose hellos stop
// arriving (a flood fills the queues before them) keeps its lease while
// its WireGuard session is alive, and loses it once the session is not.
func TestCALeaseLivesOnHandshakes(t *testing.T) {
	f := newCAFixture(t)
	f.net.handshakes = map[[32]byte]time.Time{}
	e := f.newEdge("t1", "100.64.1.1", 7, netip.MustParseAddrPort("198.18.1.1:40000"))
	e.runFor(10)
	if !e.admitted() {
		t.Fatal("t1 not admitted")
	}
	var tk [32]byte // t1's: p1's only peer
	for k := range f.net.peers {
		tk = k
	}
	// Five minutes without a hello, handshaking every two minutes.
	for s := range 300 {
		if s%120 == 0 {
			f.net.handshakes[tk] = f.clk.Wall()
		}
		for range 10 {
			f.p.Tick()
			f.clk.Advance(100 * time.Millisecond)
		}
	}
	if !e.admitted() {
		t.Fatal("an edge with a live WireGuard session lost its lease")
	}
	// The session dies too: the lease ends within a lease and a rekey.
	for range (edgeLease + wireguardRekey + EdgeRenew) / (100 * time.Millisecond) {
		f.p.Tick()
		f.clk.Advance(100 * time.Millisecond)
	}
	if e.admitted() {
		t.Fatal("an edge with neither hellos nor a session kept its lease")
	}
	if _, ok := f.net.peers[tk]; ok {
		t.Error("the lapsed edge is still a WireGuard peer")
	}
}

// selfSigned is a key and a client certificate for it, signed by a CA its
// holder made (no proxy trusts it): a hello of it passes the MAC check.
func selfSigned(t testing.TB, wall time.Time) (*admit.Keys, []byte) {
	t.Helper()
	own, ownKey, err := cert.NewCA("mine", wall.Add(-time.Hour), wall.Add(time.Hour), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, mine := caKeys(t, 2000)
	c := &cert.Certificate{Name: "m", Role: cert.RoleClient, PublicKey: mine.Public, Addresses: []netip.Addr{netip.MustParseAddr("100.64.9.1")},
		NotBefore: wall.Add(-time.Minute), NotAfter: wall.Add(time.Hour)}
	if err := own.Sign(c, ownKey); err != nil {
		t.Fatal(err)
	}
	raw, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return mine, raw
}
