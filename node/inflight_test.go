//go:build unix

package node

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	wg "golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/tunnel"
	"github.com/pias-net/pias/tunnel/membind"
)

// Memory under load: many senders through one proxy, as 8 parallel iperf3
// streams load it. wireguard-go holds a 64 KiB buffer for each packet in
// flight inside it, so what a proxy holds is counted at its boundary:
// transport datagrams its bind received that it has not yet written to its
// MemTUN, plus packets read from the MemTUN not yet sent.

// fanIn is a proxy (IAP and JAP at once) with n senders, each its own
// WireGuard peer with its own client address, and one receiver B.
type fanIn struct {
	pumps []*pumpTUN
	sink  *fanSink
	probe *boundary
	net   *membind.Network
	epP   netip.AddrPort
	keyP  [32]byte // the proxy's public key
	gate  *tunnel.Gate
	binds []*captureBind // the senders'
}

// captureBind is a sender's bind that keeps a copy of the data messages
// it sends while record is set: what an attacker replays.
type captureBind struct {
	*membind.Bind
	record atomic.Bool
	mu     sync.Mutex
	kept   [][]byte
}

func (c *captureBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if c.record.Load() {
		c.mu.Lock()
		for _, p := range bufs {
			if isTransport(p) && len(p) > wg.MessageKeepaliveSize {
				c.kept = append(c.kept, bytes.Clone(p))
			}
		}
		c.mu.Unlock()
	}
	return c.Bind.Send(bufs, ep)
}

func fanClient(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 2, byte(1 + i)}), 40000)
}

// newFanIn starts the proxy, B and n senders, each with window packets in
// flight at most (a TCP sender's window).
func newFanIn(tb testing.TB, n, window int, gated bool) *fanIn {
	tb.Helper()
	f := &fanIn{net: membind.NewNetwork(), epP: netip.MustParseAddrPort("198.18.0.2:51820"), probe: &boundary{}}
	epB := netip.MustParseAddrPort("198.18.0.3:51820")
	kP, kB := newKey(tb), newKey(tb)
	f.keyP = kP.PublicKey()

	r, err := router.New(router.Config{Self: []netip.Addr{hopSelf}, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}, ControlPort: 4789})
	if err != nil {
		tb.Fatal(err)
	}
	r.SetProxies([]netip.Addr{hopSelf, hopOther})
	p := &Proxy{Name: "fan", Router: r, clock: wallClock{time.Now()}, ctl: newCtlQueue()}
	r.AddTargetWeight(hopGroup, hopTarget, 1)
	var bind conn.Bind
	inner := &probeBind{Bind: f.net.Bind(f.epP), b: f.probe}
	if gated {
		p.tun, bind, f.gate = newDataPath("fan", 1420, p.clock.Now, p.handle, inner)
	} else { // as before the gate
		p.tun, bind = tunnel.NewMemTUN("fan", 1420, p.clock.Now, p.handle), tunnel.NewSideBind(inner, "PIAS")
	}

	f.sink = &fanSink{sinkTUN: newSinkTUN(), done1: make(chan struct{}, 1)}
	f.sink.watch.Store(-1)
	f.sink.acked = func(int) {}
	keys := make([][32]byte, n)
	peers := []tunnel.Peer{{PublicKey: kB.PublicKey(), Endpoint: epB, AllowedIPs: host(hopTarget.Addr())}}
	for i := range n {
		k := newKey(tb)
		keys[i] = k.PublicKey()
		peers = append(peers, tunnel.Peer{PublicKey: keys[i], AllowedIPs: host(fanClient(i).Addr())})
		pump := newPumpTUN(hopModes[0])
		pump.tmpl = tcpPacket(fanClient(i), hopAnycast, 1420, 0)
		pump.window = window
		f.pumps = append(f.pumps, pump)
		f.sink.pumps = append(f.sink.pumps, pump)
		cb := &captureBind{Bind: f.net.Bind(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}), 51820))}
		f.binds = append(f.binds, cb)
		defer device(tb, fmt.Sprintf("a%d", i), pump, cb, k, []tunnel.Peer{{PublicKey: kP.PublicKey(), Endpoint: f.epP, AllowedIPs: everything}})
	}
	d := device(tb, "proxy", &probeTUN{Device: p.tun, b: f.probe}, bind, kP, peers)
	if f.gate != nil {
		f.gate.Watch(d.Device)
	}
	device(tb, "b", f.sink, f.net.Bind(epB), kB, []tunnel.Peer{{PublicKey: kP.PublicKey(), Endpoint: f.epP, AllowedIPs: everything}})
	return f
}

// send has every sender send n packets at once and waits until B got them
// all.
func (f *fanIn) send(tb testing.TB, n int) {
	tb.Helper()
	done := f.sink.expect(uint64(n * len(f.pumps)))
	for _, p := range f.pumps {
		p.pump(n)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		tb.Fatalf("B got %d of %d packets in 60 s", f.sink.got.Load()-f.sink.base, n*len(f.pumps))
	}
}

// fanSink is B's TUN: it opens each sender's window by the packets of that
// sender (its client address) it got.
type fanSink struct {
	*sinkTUN
	pumps  []*pumpTUN
	per    [16]atomic.Uint64 // packets got, by sender
	watch  atomic.Int64      // the sender whose packets watchN counts
	watchN atomic.Uint64
	done1  chan struct{}
}

// expectFrom returns a channel that receives once sender i's packets at B
// reach n more.
func (t *fanSink) expectFrom(i int, n uint64) <-chan struct{} {
	t.watch.Store(int64(i))
	t.watchN.Store(t.per[i].Load() + n)
	return t.done1
}

func (t *fanSink) Write(bufs [][]byte, offset int) (int, error) {
	var per [256]int
	for _, b := range bufs {
		p := b[offset:]
		if len(p) >= 20 {
			per[p[15]]++
		}
	}
	for i, pump := range t.pumps {
		if k := per[fanClient(i).Addr().As4()[3]]; k > 0 {
			pump.ack(k)
			got := t.per[i].Add(uint64(k))
			if int64(i) == t.watch.Load() && got >= t.watchN.Load() && got-uint64(k) < t.watchN.Load() {
				t.done1 <- struct{}{}
			}
		}
	}
	return t.sinkTUN.Write(bufs, offset)
}

// boundary counts the packets inside a proxy's wireguard-go device, and
// the most there were at once.
type boundary struct {
	rx, written, read, tx atomic.Int64
	peak                  atomic.Int64
}

func (b *boundary) update() {
	n := b.rx.Load() - b.written.Load() + b.read.Load() - b.tx.Load()
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

// isTransport is whether a datagram is a WireGuard data message.
func isTransport(p []byte) bool {
	return len(p) >= wg.MessageTransportSize && binary.LittleEndian.Uint32(p) == wg.MessageTransportType
}

// probeBind counts the transport datagrams the proxy's bind receives and
// sends.
type probeBind struct {
	conn.Bind
	b *boundary
}

func (pb *probeBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, p, err := pb.Bind.Open(port)
	for i, fn := range fns {
		fns[i] = func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, err := fn(bufs, sizes, eps)
			k := 0
			for j := range n {
				if isTransport(bufs[j][:sizes[j]]) {
					k++
				}
			}
			pb.b.rx.Add(int64(k))
			pb.b.update()
			return n, err
		}
	}
	return fns, p, err
}

func (pb *probeBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	k := 0
	for _, p := range bufs {
		if isTransport(p) && len(p) > wg.MessageKeepaliveSize {
			k++
		}
	}
	pb.b.tx.Add(int64(k))
	return pb.Bind.Send(bufs, ep)
}

// probeTUN counts the packets the proxy's device writes to and reads from
// its MemTUN.
type probeTUN struct {
	tun.Device
	b *boundary
}

func (pt *probeTUN) Write(bufs [][]byte, offset int) (int, error) {
	pt.b.written.Add(int64(len(bufs)))
	return pt.Device.Write(bufs, offset)
}

func (pt *probeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := pt.Device.Read(bufs, sizes, offset)
	pt.b.read.Add(int64(n))
	pt.b.update()
	return n, err
}

// heapPeak samples a heap metric every millisecond until stop is called,
// which returns the largest sample: heapObjects (live and not yet swept)
// or heapLive (as of the last GC: what is held, without the GC's slack).
func heapPeak(metric string) (stop func() uint64) {
	s := []metrics.Sample{{Name: metric}}
	var peak uint64
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-t.C:
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return func() uint64 {
		once.Do(func() { close(quit); <-done })
		return peak
	}
}

// BenchmarkProxyFanIn is 8 senders through one proxy at once, each with
// 512 packets in flight at most (a TCP window), without the gate (as
// before it) and with it. It reports packets/s
// through the proxy, the most packets inside the proxy's wireguard-go at
// once (each holds a 64 KiB buffer there: inflight-MiB) and the process's
// peak heap (the senders' and B's devices included).
func BenchmarkProxyFanIn(b *testing.B) {
	b.Run("ungated", func(b *testing.B) { benchFanIn(b, false) })
	b.Run("gated", func(b *testing.B) { benchFanIn(b, true) })
}

// liveHeap is the live heap after two GCs (sync.Pools let go of what they
// held in the second).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: heapLive}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

const (
	heapObjects = "/memory/classes/heap/objects:bytes"
	heapLive    = "/gc/heap/live:bytes"
)

func benchFanIn(b *testing.B, gated bool) {
	const senders = 8
	f := newFanIn(b, senders, window, gated)
	f.send(b, 1024) // handshakes, flows, pools grown
	f.probe.peak.Store(0)
	stop := heapPeak(heapObjects)
	b.SetBytes(1420)
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	f.send(b, max(b.N/senders, 1))
	wall := time.Since(t0)
	b.StopTimer()
	heap := stop()
	pk := f.probe.peak.Load()
	b.ReportMetric(float64(max(b.N/senders, 1)*senders)/wall.Seconds(), "pkts/s")
	b.ReportMetric(float64(pk), "inflight-peak")
	b.ReportMetric(float64(pk)*wg.MaxMessageSize/(1<<20), "inflight-MiB")
	b.ReportMetric(float64(heap)/(1<<20), "heap-peak-MiB")
	if os.Getenv("PIAS_FANIN_VERBOSE") != "" && f.gate != nil {
		g := f.gate
		b.Logf("peak %d packets in the proxy, heap %d MiB; gate in: %d waits %d recycled %d resets, out: %d waits %d recycled %d resets; %d probes made %d buffers",
			pk, heap>>20, g.In.Waits.Load(), g.In.Recycled.Load(), g.In.Resets.Load(),
			g.Out.Waits.Load(), g.Out.Recycled.Load(), g.Out.Resets.Load(), g.Probes.Load(), g.Fresh.Load())
	}
}

// sendFrom has sender i send n packets and waits until B got them.
func (f *fanIn) sendFrom(tb testing.TB, i, n int, within time.Duration) {
	tb.Helper()
	got0 := f.sink.per[i].Load()
	done := f.sink.expectFrom(i, uint64(n))
	f.pumps[i].pump(n)
	select {
	case <-done:
	case <-time.After(within):
		if f.gate != nil {
			tb.Logf("gate in: held %d, %d waits, %d recycled, %d resets; out: held %d, %d waits, %d recycled, %d resets",
				f.gate.In.Held(), f.gate.In.Waits.Load(), f.gate.In.Recycled.Load(), f.gate.In.Resets.Load(),
				f.gate.Out.Held(), f.gate.Out.Waits.Load(), f.gate.Out.Recycled.Load(), f.gate.Out.Resets.Load())
		}
		tb.Fatalf("B got %d of sender %d's %d packets in %v", f.sink.per[i].Load()-got0, i, n, within)
	}
}

// checkFrom sends n numbered packets from sender i and checks that B got
// each exactly once, as the proxy's router must have made it, within
// the deadline.
func (f *fanIn) checkFrom(t *testing.T, i, n int, within time.Duration) time.Duration {
	t.Helper()
	pump := f.pumps[i]
	pump.mu.Lock()
	pump.stamp = true
	s0 := pump.seq
	pump.mu.Unlock()
	f.sink.take()
	f.sink.record.Store(true)
	t0 := time.Now()
	f.sendFrom(t, i, n, within)
	took := time.Since(t0)
	f.sink.record.Store(false)
	want := map[string]bool{}
	for k := range uint64(n) {
		want[string(natTCP(tcpPacket(fanClient(i), hopAnycast, 1420, s0+k), hopTarget))] = true
	}
	from := fanClient(i).Addr().As4()
	for _, g := range f.sink.take() {
		if len(g) >= 20 && !bytes.Equal(g[12:16], from[:]) {
			continue // another sender's
		}
		if !want[string(g)] {
			t.Fatalf("a packet at B that was not sent, was sent before, or is not as the router makes it: %x", g[:min(len(g), 64)])
		}
		delete(want, string(g))
	}
	if len(want) > 0 {
		t.Fatalf("%d of sender %d's packets missing at B", len(want), i)
	}
	return took
}

// A proxy's gate bounds what it holds (in + out caps, plus a batch per
// receive read and the reader's batch) whatever comes in.
const gateBound = tunnel.DefaultIn + tunnel.DefaultOut + 2*conn.IdealBatchSize

// TestProxyReplayFlood: a peer replays its own captured data messages at a
// proxy as fast as it can. Each is counted in at the gate and then dropped
// inside wireguard-go (its replay filter), unseen by pias: the count leaks
// all the time, and only the repair rule keeps the proxy moving. Another
// peer's packets still arrive, byte for byte, within a deadline, and the
// proxy holds no more than the gate's bound (and the process's heap stays
// small).
func TestProxyReplayFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("floods for seconds")
	}
	base := liveHeap() // earlier tests' devices, not yet all gone
	f := newFanIn(t, 2, 64, os.Getenv("PIAS_UNGATED") == "")
	f.send(t, 64) // sessions, flows
	x := f.binds[1]
	x.record.Store(true)
	f.sendFrom(t, 1, 4096, 30*time.Second)
	x.record.Store(false)
	kept := x.kept
	if len(kept) < 4096 {
		t.Fatalf("captured %d data messages, want 4096", len(kept))
	}

	stop := make(chan struct{})
	var flooded atomic.Uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j := 0; ; j = (j + conn.IdealBatchSize) % len(kept) {
			select {
			case <-stop:
				return
			default:
			}
			batch := kept[j:min(j+conn.IdealBatchSize, len(kept))]
			x.Bind.Send(batch, &membind.Endpoint{AddrPort: f.epP})
			flooded.Add(uint64(len(batch)))
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for flooded.Load() < 4*uint64(len(kept)) { // the flood is under way
		runtime.Gosched()
	}
	f.probe.peak.Store(0)
	var resets uint64
	if f.gate == nil { // to measure what it was before the gate
		took := f.checkFrom(t, 0, 2000, 30*time.Second)
		t.Skipf("ungated: 2000 packets in %v, proxy held at most %d", took, f.probe.peak.Load())
	}
	resets = f.gate.In.Resets.Load() + f.gate.In.Recycled.Load()
	heap := heapPeak(heapLive)
	took := f.checkFrom(t, 0, 2000, 30*time.Second)
	h := heap() - min(base, heap())
	repairs := f.gate.In.Resets.Load() + f.gate.In.Recycled.Load() - resets
	t.Logf("2000 packets through a replay flood in %v; %d replays sent; %d let go (%d recycled, %d by the backstop); live heap peak %d MiB above the start",
		took, flooded.Load(), repairs, f.gate.In.Recycled.Load(), f.gate.In.Resets.Load(), h>>20)
	if repairs == 0 {
		t.Errorf("no repair during a flood of packets the device drops")
	}
	// (The boundary probe counts the replays wireguard-go drops as held: only the heap tells here.)
	// Four devices' fixed batches (2 × 128 buffers of 64 KiB each) are
	// 64 MiB; the proxy adds at most gateBound × 64 KiB (22 MiB at the default caps).
	if h > 160<<20 {
		t.Errorf("live heap peaked at %d MiB, want at most 160", h>>20)
	}
}

// TestProxyPeerFlood: a peer sends through a proxy as fast as it can,
// with a window of 4096 packets; another peer's packets still arrive,
// byte for byte, within a deadline, and the proxy holds no more than the
// gate's bound.
func TestProxyPeerFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("floods for seconds")
	}
	f := newFanIn(t, 2, 64, true)
	f.send(t, 64)
	f.pumps[1].mu.Lock()
	f.pumps[1].window = 4096
	f.pumps[1].mu.Unlock()
	f.pumps[1].pump(1 << 40) // no end; its packets arrive uncounted
	f.probe.peak.Store(0)
	took := f.checkFrom(t, 0, 2000, 30*time.Second)
	t.Logf("2000 packets beside a flood in %v; proxy held at most %d packets", took, f.probe.peak.Load())
	if pk := f.probe.peak.Load(); pk > gateBound {
		t.Errorf("the proxy held %d packets, more than the gate's bound %d", pk, gateBound)
	}
}
