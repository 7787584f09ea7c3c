//go:build unix

package node

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
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
}

func fanClient(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 2, byte(1 + i)}), 40000)
}

// newFanIn starts the proxy, B and n senders, each with window packets in
// flight at most (a TCP sender's window).
func newFanIn(tb testing.TB, n, window int) *fanIn {
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
	p.tun, bind, f.gate = newDataPath("fan", 1420, p.clock.Now, p.handle, &probeBind{Bind: f.net.Bind(f.epP), b: f.probe})

	f.sink = &fanSink{sinkTUN: newSinkTUN()}
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
		defer device(tb, fmt.Sprintf("a%d", i), pump, f.net.Bind(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)}), 51820)), k,
			[]tunnel.Peer{{PublicKey: kP.PublicKey(), Endpoint: f.epP, AllowedIPs: everything}})
	}
	device(tb, "proxy", &probeTUN{Device: p.tun, b: f.probe}, bind, kP, peers)
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
	pumps []*pumpTUN
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

// heapPeak samples the heap's live objects every millisecond until stop
// is called, which returns the largest sample.
func heapPeak() (stop func() uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
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
// 512 packets in flight at most (a TCP window). It reports packets/s
// through the proxy, the most packets inside the proxy's wireguard-go at
// once (each holds a 64 KiB buffer there: inflight-MiB) and the process's
// peak heap (the senders' and B's devices included).
func BenchmarkProxyFanIn(b *testing.B) {
	const senders = 8
	f := newFanIn(b, senders, window)
	f.send(b, 1024) // handshakes, flows, pools grown
	f.probe.peak.Store(0)
	stop := heapPeak()
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
		b.Logf("peak %d packets in the proxy, heap %d MiB; gate in: %d waits %d resets, out: %d waits %d resets", pk, heap>>20,
			f.gate.In.Waits.Load(), f.gate.In.Resets.Load(), f.gate.Out.Waits.Load(), f.gate.Out.Resets.Load())
	}
}
