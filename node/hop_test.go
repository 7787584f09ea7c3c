//go:build unix

package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/tunnel"
	"github.com/pias-net/pias/tunnel/membind"
)

// One proxy hop in isolation: peer A's wireguard-go device encrypts
// packets, the proxy's device decrypts them, its router forwards them
// (Proxy.handle, the data path of a running proxy) and the device encrypts
// them to peer B, whose device decrypts them. The three devices talk over
// membind, in memory. The same packets also go A → B directly, so that
// the hop's cost is proxied − direct.

var (
	hopSelf    = netip.MustParseAddr("100.64.0.1") // the proxy under test
	hopOther   = netip.MustParseAddr("100.64.0.2") // the other proxy: JAP of mode iap, IAP of mode jap
	hopClient  = netip.MustParseAddrPort("100.64.2.1:40000")
	hopAnycast = netip.MustParseAddrPort("100.65.0.1:5201")
	hopTarget  = netip.MustParseAddrPort("100.64.1.1:5201")
	hopGroup   = router.Group{Addr: hopAnycast.Addr(), Port: hopAnycast.Port(), Proto: 6}
)

// hopMode is what the proxy is to the flow.
type hopMode struct {
	name string
	// local: IAP and JAP at once (client → NAT → target); iap: the
	// client's IAP, encapsulating to JAP hopOther; jap: the JAP of
	// packets that IAP hopOther encapsulated.
	local, iap, jap bool
}

var hopModes = []hopMode{{name: "local", local: true}, {name: "iap", iap: true}, {name: "jap", jap: true}}

// hopPacket is what A sends: 1420 bytes, the tunnel MTU, on the wire
// between A and the proxy. seq is written into the payload.
func (m hopMode) packet(seq uint64) []byte {
	const mtu = 1420
	if m.jap {
		inner := tcpPacket(hopClient, hopAnycast, mtu-router.EncapOverhead, seq)
		return ipip(hopOther, hopSelf, inner)
	}
	size := mtu
	if m.iap {
		size -= router.EncapOverhead // encapsulated, it fills the MTU
	}
	return tcpPacket(hopClient, hopAnycast, size, seq)
}

// want is what B must receive for A's packet pkt.
func (m hopMode) want(pkt []byte) []byte {
	switch {
	case m.iap:
		return ipip(hopSelf, hopOther, pkt)
	case m.jap:
		return natTCP(pkt[router.EncapOverhead:], hopTarget)
	}
	return natTCP(pkt, hopTarget)
}

// aAddr is A's overlay address, bAddr B's.
func (m hopMode) aAddr() netip.Addr {
	if m.jap {
		return hopOther
	}
	return hopClient.Addr()
}

func (m hopMode) bAddr() netip.Addr {
	if m.iap {
		return hopOther
	}
	return hopTarget.Addr()
}

func host(a netip.Addr) []netip.Prefix { return []netip.Prefix{netip.PrefixFrom(a, 32)} }

var everything = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}

// hopPath is A → (proxy →) B over one membind network.
type hopPath struct {
	src  *pumpTUN
	sink *sinkTUN
}

func newKey(tb testing.TB) config.Key {
	k, err := config.GeneratePrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// device starts a wireguard-go device. Its goroutines carry the pprof
// label dev=name (they inherit it from NewDevice), so that a CPU profile
// tells the proxy's work from A's and B's: pprof -tagfocus dev=proxy.
func device(tb testing.TB, name string, t tun.Device, b conn.Bind, k config.Key, peers []tunnel.Peer) *tunnel.Device {
	tb.Helper()
	var d *tunnel.Device
	pprof.Do(context.Background(), pprof.Labels("dev", name), func(context.Context) {
		var err error
		if d, err = tunnel.NewDevice(t, b, k, 0, peers, tb.Logf); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(d.Close)
	})
	return d
}

// newHop starts A, the proxy and B. The proxy is a Proxy reduced to its
// data path: router, clock, control queue and MemTUN, as StartProxy joins
// them.
func newHop(tb testing.TB, m hopMode) *hopPath {
	tb.Helper()
	n := membind.NewNetwork()
	epA, epP, epB := netip.MustParseAddrPort("198.18.0.1:51820"), netip.MustParseAddrPort("198.18.0.2:51820"), netip.MustParseAddrPort("198.18.0.3:51820")
	kA, kP, kB := newKey(tb), newKey(tb), newKey(tb)

	r, err := router.New(router.Config{Self: []netip.Addr{hopSelf}, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}, ControlPort: 4789})
	if err != nil {
		tb.Fatal(err)
	}
	r.SetProxies([]netip.Addr{hopSelf, hopOther})
	p := &Proxy{Name: "hop", Router: r, clock: wallClock{time.Now()}, ctl: newCtlQueue()}
	if m.iap {
		r.ResolvedPolicy(hopGroup, router.Policy{}, []router.JAP{{Addr: hopOther, Targets: 1}}, time.Hour, p.clock.Now())
	} else {
		r.AddTargetWeight(hopGroup, hopTarget, 1)
	}
	var bind conn.Bind
	var gate *tunnel.Gate
	p.tun, bind, gate = newDataPath("hop", 1420, p.clock.Now, p.handle, n.Bind(epP))
	gate.Watch(device(tb, "proxy", p.tun, bind, kP, []tunnel.Peer{
		{PublicKey: kA.PublicKey(), AllowedIPs: host(m.aAddr())},
		{PublicKey: kB.PublicKey(), Endpoint: epB, AllowedIPs: host(m.bAddr())},
	}).Device)

	h := newPath(m)
	device(tb, "a", h.src, n.Bind(epA), kA, []tunnel.Peer{{PublicKey: kP.PublicKey(), Endpoint: epP, AllowedIPs: everything}})
	device(tb, "b", h.sink, n.Bind(epB), kB, []tunnel.Peer{{PublicKey: kP.PublicKey(), Endpoint: epP, AllowedIPs: everything}})
	return h
}

// newDirect starts A and B joined directly, with the same packets.
func newDirect(tb testing.TB, m hopMode) *hopPath {
	tb.Helper()
	n := membind.NewNetwork()
	epA, epB := netip.MustParseAddrPort("198.18.1.1:51820"), netip.MustParseAddrPort("198.18.1.3:51820")
	kA, kB := newKey(tb), newKey(tb)
	h := newPath(m)
	device(tb, "direct-a", h.src, n.Bind(epA), kA, []tunnel.Peer{{PublicKey: kB.PublicKey(), Endpoint: epB, AllowedIPs: everything}})
	device(tb, "direct-b", h.sink, n.Bind(epB), kB, []tunnel.Peer{{PublicKey: kA.PublicKey(), AllowedIPs: host(m.aAddr())}})
	return h
}

// window is how many packets A has in flight at most, as a TCP sender's
// window bounds it. Without it A would read every pumped packet at once
// and wireguard-go would allocate a 64 KiB buffer for each.
const window = 512

func newPath(m hopMode) *hopPath {
	h := &hopPath{src: newPumpTUN(m), sink: newSinkTUN()}
	h.sink.acked = h.src.ack
	return h
}

// send has A send n packets and waits until B got them all.
func (h *hopPath) send(tb testing.TB, n int) {
	tb.Helper()
	done := h.sink.expect(uint64(n))
	h.src.pump(n)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		tb.Fatalf("B got %d of %d packets in 30 s", h.sink.got.Load()-h.sink.base, n)
	}
}

// cost is what a phase of a benchmark took: wall and CPU time (all
// threads of the process) and heap allocations.
type cost struct {
	wall, cpu time.Duration
	allocs    uint64
}

func measure(fn func()) cost {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	a0, c0, t0 := ms.Mallocs, cpuTime(), time.Now()
	fn()
	wall, cpu := time.Since(t0), cpuTime()-c0
	runtime.ReadMemStats(&ms)
	return cost{wall: wall, cpu: cpu, allocs: ms.Mallocs - a0}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sealOpen is the crypto floor of a hop: one ChaCha20-Poly1305 seal and
// one open of a 1420-byte packet, the cipher and sizes wireguard-go uses.
func sealOpen(n int) {
	aead, _ := chacha20poly1305.New(make([]byte, 32))
	pkt := make([]byte, 1420)
	sealed := make([]byte, 0, 1420+aead.Overhead())
	opened := make([]byte, 0, 1420)
	var nonce [chacha20poly1305.NonceSize]byte
	for i := range n {
		binary.LittleEndian.PutUint64(nonce[4:], uint64(i))
		sealed = aead.Seal(sealed[:0], nonce[:], pkt, nil)
		var err error
		if opened, err = aead.Open(opened[:0], nonce[:], sealed, nil); err != nil {
			panic(err)
		}
	}
}

// BenchmarkSealOpen is the crypto floor alone, for comparison by name.
func BenchmarkSealOpen(b *testing.B) {
	b.SetBytes(1420)
	b.ReportAllocs()
	sealOpen(b.N)
}

// BenchmarkProxyHop is the cost of one proxy hop per 1420-byte packet of
// an established TCP flow, in three modes: the proxy as IAP and JAP at
// once (local), as IAP only, as JAP only. ns/op and allocs/op are the
// whole proxied path (A's encryption, the hop, B's decryption, two membind
// crossings). In the same run the same number of packets goes A → B
// directly and through seal+open alone, and it reports:
//
//	hop-cpu-ns    CPU per packet of proxied − direct: the hop itself
//	              (decrypt, route, encrypt, one membind crossing, and the
//	              wireguard-go and Go scheduler work around them)
//	floor-ns      CPU per seal+open of 1420 bytes on one goroutine
//	hop/floor     their ratio: the figure of record
//	direct/floor  plain wireguard-go's CPU per packet A → B (one seal, one
//	              open, one membind crossing) over the floor: what
//	              wireguard-go itself spends beyond the cipher
//	hop/direct    the hop over that: 1.0 means the hop costs what
//	              wireguard-go costs to carry a packet at all, so
//	              hop/floor can go no lower than direct/floor without
//	              changing wireguard-go
//	hop-allocs    allocations per packet, proxied − direct
//
// CPU is the process's (getrusage), so it counts every goroutine on every
// core, idle spinning included. With -cpu 1 the Go scheduler does not spin
// and the wall time per packet is the sum of the stages.
func BenchmarkProxyHop(b *testing.B) {
	for _, m := range hopModes {
		b.Run(m.name, func(b *testing.B) {
			hop, direct := newHop(b, m), newDirect(b, m)
			// Handshakes, flows, and wireguard-go's pools grown.
			hop.send(b, 4096)
			direct.send(b, 4096)
			b.SetBytes(1420)
			b.ReportAllocs()
			b.ResetTimer()
			pc := measure(func() { hop.send(b, b.N) })
			b.StopTimer()
			dc := measure(func() { direct.send(b, b.N) })
			fc := measure(func() { sealOpen(b.N) })
			n := float64(b.N)
			hopCPU := float64(pc.cpu-dc.cpu) / n
			floor := float64(fc.cpu) / n
			b.ReportMetric(float64(dc.cpu)/n, "direct-cpu-ns")
			b.ReportMetric(float64(pc.cpu)/n, "proxied-cpu-ns")
			b.ReportMetric(hopCPU, "hop-cpu-ns")
			b.ReportMetric(floor, "floor-ns")
			b.ReportMetric(hopCPU/floor, "hop/floor")
			b.ReportMetric(float64(dc.cpu)/n/floor, "direct/floor")
			b.ReportMetric(hopCPU/(float64(dc.cpu)/n), "hop/direct")
			b.ReportMetric((float64(pc.allocs)-float64(dc.allocs))/n, "hop-allocs")
		})
	}
}

// TestProxyHopBytes sends numbered packets through each mode's hop and
// checks every one arrives at B exactly as the router must have made it.
func TestProxyHopBytes(t *testing.T) {
	for _, m := range hopModes {
		t.Run(m.name, func(t *testing.T) {
			h := newHop(t, m)
			h.sink.record.Store(true)
			h.src.stamp = true
			const n = 300 // more than one batch
			h.send(t, n)
			got := h.sink.take()
			if len(got) != n {
				t.Fatalf("B recorded %d packets, want %d", len(got), n)
			}
			// Every packet exactly once, as the router must have made it
			// (in any order: neither UDP nor WireGuard promises one).
			want := map[string]bool{}
			for i := range n {
				want[string(m.want(m.packet(uint64(i))))] = true
			}
			for _, g := range got {
				if !want[string(g)] {
					t.Fatalf("a packet at B that was not sent, was sent before, or is not as the router makes it: %x", g[:min(len(g), 64)])
				}
				delete(want, string(g))
			}
		})
	}
}

// pumpTUN is A's TUN: each Read hands out as many numbered copies of the
// mode's packet as have been pumped and not yet read.
type pumpTUN struct {
	m      hopMode
	events chan tun.Event
	mu     sync.Mutex
	cond   *sync.Cond
	budget int
	seq    uint64 // packets read
	acked  uint64 // packets B got
	closed bool
	stamp  bool // number the packets (costs a checksum each)
	tmpl   []byte
	window int // packets in flight at most
}

func newPumpTUN(m hopMode) *pumpTUN {
	t := &pumpTUN{m: m, events: make(chan tun.Event, 1), tmpl: m.packet(0), window: window}
	t.cond = sync.NewCond(&t.mu)
	t.events <- tun.EventUp
	return t
}

func (t *pumpTUN) pump(n int) {
	t.mu.Lock()
	t.budget += n
	t.mu.Unlock()
	t.cond.Broadcast()
}

// ack counts n packets arrived at B, which opens the window.
func (t *pumpTUN) ack(n int) {
	t.mu.Lock()
	t.acked += uint64(n)
	t.mu.Unlock()
	t.cond.Signal()
}

func (t *pumpTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for (t.budget == 0 || t.seq-t.acked >= uint64(t.window)) && !t.closed {
		t.cond.Wait()
	}
	if t.closed {
		return 0, os.ErrClosed
	}
	k := min(len(bufs), t.budget, t.window-int(t.seq-t.acked))
	for i := range k {
		p := bufs[i][offset:]
		sizes[i] = copy(p, t.tmpl)
		if t.stamp {
			t.m.stamp(p[:sizes[i]], t.seq)
		}
		t.seq++
	}
	t.budget -= k
	return k, nil
}

func (t *pumpTUN) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (t *pumpTUN) File() *os.File                               { return nil }
func (t *pumpTUN) MTU() (int, error)                            { return 1420, nil }
func (t *pumpTUN) Name() (string, error)                        { return "pump", nil }
func (t *pumpTUN) Events() <-chan tun.Event                     { return t.events }
func (t *pumpTUN) BatchSize() int                               { return conn.IdealBatchSize }
func (t *pumpTUN) Close() error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.events)
	}
	t.mu.Unlock()
	t.cond.Broadcast()
	return nil
}

// sinkTUN is B's TUN: it counts what B's device writes, and records it
// when asked.
type sinkTUN struct {
	events chan tun.Event
	closed chan struct{}
	once   sync.Once
	got    atomic.Uint64
	base   uint64 // got when the current expect began
	want   atomic.Uint64
	done   chan struct{}
	record atomic.Bool
	acked  func(n int)
	mu     sync.Mutex
	kept   [][]byte
}

func newSinkTUN() *sinkTUN {
	t := &sinkTUN{events: make(chan tun.Event, 1), closed: make(chan struct{}), done: make(chan struct{}, 1)}
	t.events <- tun.EventUp
	return t
}

// expect returns a channel that receives once n more packets arrived.
func (t *sinkTUN) expect(n uint64) <-chan struct{} {
	t.base = t.got.Load()
	t.want.Store(t.base + n)
	return t.done
}

func (t *sinkTUN) Write(bufs [][]byte, offset int) (int, error) {
	if t.record.Load() {
		t.mu.Lock()
		for _, b := range bufs {
			t.kept = append(t.kept, bytes.Clone(b[offset:]))
		}
		t.mu.Unlock()
	}
	t.acked(len(bufs))
	if n := t.got.Add(uint64(len(bufs))); n >= t.want.Load() && n-uint64(len(bufs)) < t.want.Load() {
		t.done <- struct{}{}
	}
	return len(bufs), nil
}

func (t *sinkTUN) take() [][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kept
	t.kept = nil
	return k
}

func (t *sinkTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	<-t.closed
	return 0, os.ErrClosed
}
func (t *sinkTUN) File() *os.File           { return nil }
func (t *sinkTUN) MTU() (int, error)        { return 1420, nil }
func (t *sinkTUN) Name() (string, error)    { return "sink", nil }
func (t *sinkTUN) Events() <-chan tun.Event { return t.events }
func (t *sinkTUN) BatchSize() int           { return conn.IdealBatchSize }
func (t *sinkTUN) Close() error {
	t.once.Do(func() { close(t.closed); close(t.events) })
	return nil
}

// tcpPacket is an IPv4 TCP ACK segment of size bytes from src to dst, seq
// in its payload, checksums right.
func tcpPacket(src, dst netip.AddrPort, size int, seq uint64) []byte {
	p := make([]byte, size)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(size))
	p[8] = 64
	p[9] = 6
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	t := p[20:]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], 1)
	binary.BigEndian.PutUint32(t[8:], 1)
	t[12] = 5 << 4
	t[13] = 0x10 // ACK
	binary.BigEndian.PutUint16(t[14:], 65535)
	for i := 40; i < size; i++ {
		p[i] = byte(i)
	}
	binary.BigEndian.PutUint64(p[40:], seq)
	fixTCP(p)
	return p
}

// stamp writes seq into a packet made by packet, fixing the checksum.
func (m hopMode) stamp(p []byte, seq uint64) {
	if m.jap {
		p = p[router.EncapOverhead:]
	}
	binary.BigEndian.PutUint64(p[40:], seq)
	fixTCP(p)
}

func fixTCP(p []byte) {
	binary.BigEndian.PutUint16(p[10:], 0)
	binary.BigEndian.PutUint16(p[10:], ^fold(sum(0, p[:20])))
	t := p[20:]
	binary.BigEndian.PutUint16(t[16:], 0)
	acc := sum(0, p[12:20]) + 6 + uint64(len(t))
	binary.BigEndian.PutUint16(t[16:], ^fold(sum(acc, t)))
}

// natTCP is p with its destination rewritten to to, as a JAP does.
func natTCP(p []byte, to netip.AddrPort) []byte {
	q := bytes.Clone(p)
	d := to.Addr().As4()
	copy(q[16:], d[:])
	binary.BigEndian.PutUint16(q[22:], to.Port())
	fixTCP(q)
	return q
}

// ipip is inner in an outer IPv4 header from src to dst, as an IAP
// encapsulates it.
func ipip(src, dst netip.Addr, inner []byte) []byte {
	p := make([]byte, router.EncapOverhead+len(inner))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 4
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ^fold(sum(0, p[:20])))
	copy(p[20:], inner)
	return p
}

func sum(acc uint64, b []byte) uint64 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint64(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		acc += uint64(b[len(b)-1]) << 8
	}
	return acc
}

func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}
