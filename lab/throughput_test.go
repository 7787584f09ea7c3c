package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/tunnel"
)

// sink accepts connections on ln; for each it counts the bytes until the
// sender half-closes, then answers with the count (8 bytes) and closes.
func sink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			binary.Write(c, binary.BigEndian, uint64(n))
		}()
	}
}

// stream sends n bytes over c and waits until the far end confirms it got
// them all, so the time measured is delivery, not buffering.
func stream(c net.Conn, n int64, chunk []byte) error {
	defer c.Close()
	for sent := int64(0); sent < n; sent += int64(len(chunk)) {
		if _, err := c.Write(chunk); err != nil {
			return err
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	var got uint64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return err
	}
	if int64(got) != n {
		return fmt.Errorf("far end got %d bytes, sent %d", got, n)
	}
	return nil
}

// directPair is the baseline: two netstacks joined by one wireguard-go tunnel.
func directPair(b *testing.B) (dial func(context.Context) (net.Conn, error)) {
	b.Helper()
	ka, _ := config.GeneratePrivateKey()
	kb, _ := config.GeneratePrivateKey()
	aAddr, bAddr := netip.MustParseAddr("100.64.9.1"), netip.MustParseAddr("100.64.9.2")
	ha, err := tunnel.NewNetstack([]netip.Addr{aAddr}, config.DefaultMTU)
	if err != nil {
		b.Fatal(err)
	}
	hb, err := tunnel.NewNetstack([]netip.Addr{bAddr}, config.DefaultMTU)
	if err != nil {
		b.Fatal(err)
	}
	db, err := tunnel.NewDevice(hb.TUN, nil, kb, 0, []tunnel.Peer{{PublicKey: ka.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(aAddr, 32)}}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(db.Close)
	port, err := db.ListenPort()
	if err != nil {
		b.Fatal(err)
	}
	da, err := tunnel.NewDevice(ha.TUN, nil, ka, 0, []tunnel.Peer{{PublicKey: kb.PublicKey(),
		Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), AllowedIPs: []netip.Prefix{netip.PrefixFrom(bAddr, 32)}}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(da.Close)
	ln, err := hb.Net.ListenTCPAddrPort(netip.AddrPortFrom(bAddr, 9000))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go sink(ln)
	return func(ctx context.Context) (net.Conn, error) {
		return ha.Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(bAddr, 9000))
	}
}

// anycastPath is pias: client → IAP → JAP → target, each hop wireguard-go.
func anycastPath(b *testing.B) (dial func(context.Context) (net.Conn, error)) {
	b.Helper()
	// Two proxies: the target is attached to p1, the client to p2, so the
	// stream crosses IAP p2 → JAP p1 with encapsulation and NAT. A CA lab,
	// as lab gen makes by default (PIAS_BENCH_STATIC=1: a static one).
	shape := Options{Proxies: 2, Clusters: 1, Targets: 1, Clients: 1, Groups: 1, CA: os.Getenv("PIAS_BENCH_STATIC") == ""}
	h := ipaNotJAP(b, shape)
	t1 := h.Edges["t1"]
	g := GroupN(0)
	ln, err := t1.Host.Net.ListenTCPAddrPort(netip.AddrPortFrom(t1.Config.Addr4(), LocalPort(g)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go sink(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	return func(ctx context.Context) (net.Conn, error) {
		return h.Edges["cl1"].Host.Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(g.Addr, g.Port))
	}
}

// ipaNotJAP starts a lab whose cl1 and t1 are attached to different
// proxies. (In a CA lab an edge whose home is slow to admit it, on a busy
// host, attaches to another that did: a few tries.)
func ipaNotJAP(b *testing.B, shape Options) *Harness {
	b.Helper()
	for range 5 {
		h, err := Start(shape, HarnessOptions{Dir: b.TempDir(), Attach: labAttach})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err = WaitFor(ctx, func() error {
			for _, e := range []string{"cl1", "t1"} {
				if h.Home(e) == nil {
					return fmt.Errorf("%s is not attached", e)
				}
			}
			return nil
		})
		cancel()
		if err != nil {
			h.Close()
			b.Fatal(err)
		}
		if h.Home("cl1") != h.Home("t1") {
			b.Cleanup(h.Close)
			return h
		}
		h.Close()
	}
	b.Fatal("client and target share a proxy in every try; the benchmark wants IAP ≠ JAP")
	return nil
}

// BenchmarkThroughput measures one TCP stream through pias (client → IAP →
// JAP → target, on netstacks) next to one direct wireguard-go tunnel between
// two netstacks, interleaved in the same run so machine noise hits both, and
// reports both rates and their ratio. One op is 4 MiB over each path.
func BenchmarkThroughput(b *testing.B) {
	const perOp = 4 << 20
	direct, anycast := directPair(b), anycastPath(b)
	chunk := make([]byte, 32<<10)
	var tDirect, tAnycast time.Duration
	run := func(dial func(context.Context) (net.Conn, error)) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		start := time.Now()
		c, err := dial(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := stream(c, perOp, chunk); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	run(direct) // warm both paths: handshakes, resolution, caches
	run(anycast)
	b.SetBytes(2 * perOp)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tDirect += run(direct)
		tAnycast += run(anycast)
	}
	b.StopTimer()
	mb := float64(b.N) * perOp / 1e6
	b.ReportMetric(mb/tDirect.Seconds(), "direct-MB/s")
	b.ReportMetric(mb/tAnycast.Seconds(), "anycast-MB/s")
	b.ReportMetric(tDirect.Seconds()/tAnycast.Seconds(), "anycast/direct")
}
