package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
)

type keypair struct{ priv, pub [32]byte }

func newKeypair(t testing.TB) keypair {
	t.Helper()
	var k keypair
	if _, err := rand.Read(k.priv[:]); err != nil {
		t.Fatal(err)
	}
	k.priv[0] &= 248
	k.priv[31] = k.priv[31]&127 | 64
	pub, err := curve25519.X25519(k.priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	copy(k.pub[:], pub)
	return k
}

func startDevice(t testing.TB, h *Host, k keypair, peers []Peer) *Device {
	t.Helper()
	d, err := NewDevice(h.TUN, conn.NewStdNetBind(), k.priv, 0, peers, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func loopback(t testing.TB, d *Device) netip.AddrPort {
	t.Helper()
	p, err := d.ListenPort()
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p)
}

func netstackHost(t testing.TB, addr string) *Host {
	t.Helper()
	h, err := NewNetstack([]netip.Addr{netip.MustParseAddr(addr)}, 1420)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// relayPair builds client netstack ─WG─ MemTUN relay ─WG─ server netstack,
// where the relay hands every packet straight back to WireGuard.
func relayPair(t testing.TB) (client, server *Host, relay *MemTUN) {
	t.Helper()
	kc, kr, ks := newKeypair(t), newKeypair(t), newKeypair(t)
	client = netstackHost(t, "100.64.2.1")
	server = netstackHost(t, "100.64.1.1")
	relay = NewMemTUN("relay", 1420, nil, func(buf []byte, start, end int, _ int64) (int, int, bool) {
		return start, end, true
	})
	rd := startDevice(t, &Host{TUN: relay}, kr, nil)
	rep := loopback(t, rd)
	startDevice(t, client, kc, []Peer{{PublicKey: kr.pub, Endpoint: rep,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}, Keepalive: 0}})
	startDevice(t, server, ks, []Peer{{PublicKey: kr.pub, Endpoint: rep,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}, Keepalive: time.Second}})
	if err := rd.SetPeers([]Peer{
		{PublicKey: kc.pub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.2.1/32")}},
		{PublicKey: ks.pub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.1.1/32")}},
	}); err != nil {
		t.Fatal(err)
	}
	return client, server, relay
}

func TestMemTUNRelaysTCP(t *testing.T) {
	client, server, _ := relayPair(t)
	ln, err := server.Net.ListenTCPAddrPort(netip.MustParseAddrPort("100.64.1.1:8080"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := client.Net.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("100.64.1.1:8080"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 256<<10)
	rand.Read(msg)
	go c.Write(msg)
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echoed bytes differ")
	}
}

func TestMemTUNInjectAndClose(t *testing.T) {
	var seen int
	m := NewMemTUN("x", 1420, nil, func(buf []byte, start, end int, _ int64) (int, int, bool) {
		seen++
		return start + 1, end, buf[start] == 1
	})
	if _, err := m.Write([][]byte{{0, 0, 1, 9, 9}, {0, 0, 2}, {0, 0}}, 2); err != nil {
		t.Fatal(err)
	}
	if seen != 2 {
		t.Fatalf("handler saw %d packets, want 2 (empty ones are skipped)", seen)
	}
	if err := m.Inject([]byte{7, 7}); err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, 100), make([]byte, 100), make([]byte, 100)}
	sizes := make([]int, 3)
	n, err := m.Read(bufs, sizes, 10)
	if err != nil || n != 2 {
		t.Fatalf("Read = %d, %v; want 2 packets", n, err)
	}
	if !bytes.Equal(bufs[0][10:10+sizes[0]], []byte{9, 9}) || !bytes.Equal(bufs[1][10:10+sizes[1]], []byte{7, 7}) {
		t.Fatalf("read %x %x", bufs[0][10:10+sizes[0]], bufs[1][10:10+sizes[1]])
	}
	if big := make([]byte, slotSize); m.Inject(big) == nil {
		t.Fatal("oversize packet accepted")
	}
	done := make(chan error)
	go func() { _, err := m.Read(bufs, sizes, 0); done <- err }()
	m.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Read after Close returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake a blocked Read")
	}
}

// TestMemTUNSlotSizes: packets of the MTU take the MemTUN's small slots,
// bigger ones (a peer with a larger MTU) a big slot; both arrive intact,
// and the handler may still prepend Headroom bytes to either.
func TestMemTUNSlotSizes(t *testing.T) {
	m := NewMemTUN("x", 1420, nil, func(buf []byte, start, end int, _ int64) (int, int, bool) {
		start -= Headroom
		for i := range Headroom {
			buf[start+i] = 0xee
		}
		return start, end, true
	})
	defer m.Close()
	for _, n := range []int{1, 1420, 1421, 9216} {
		pkt := make([]byte, n)
		for i := range pkt {
			pkt[i] = byte(i*7 + n)
		}
		if _, err := m.Write([][]byte{pkt}, 0); err != nil {
			t.Fatal(err)
		}
		bufs, sizes := [][]byte{make([]byte, 16+Headroom+9216)}, make([]int, 1)
		if k, err := m.Read(bufs, sizes, 16); err != nil || k != 1 {
			t.Fatalf("%d bytes: Read = %d, %v", n, k, err)
		}
		got := bufs[0][16 : 16+sizes[0]]
		if want := append(bytes.Repeat([]byte{0xee}, Headroom), pkt...); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: read %d bytes, not the packet with its header", n, len(got))
		}
	}
	if s := m.getSlot(1420); len(s.buf) != Headroom+1420 {
		t.Errorf("a 1420-byte packet's slot: %d bytes, want %d", len(s.buf), Headroom+1420)
	}
}

// BenchmarkMemTUN is the cost of one batch of 128 packets through the
// in-memory device: WireGuard's Write, the handler, WireGuard's Read.
func BenchmarkMemTUN(b *testing.B) {
	m := NewMemTUN("bench", 1420, nil, func(buf []byte, start, end int, _ int64) (int, int, bool) { return start, end, true })
	defer m.Close()
	const batch = 128
	in := make([][]byte, batch)
	out := make([][]byte, batch)
	for i := range in {
		in[i] = make([]byte, 16+1400)
		out[i] = make([]byte, 16+65535)
	}
	sizes := make([]int, batch)
	b.SetBytes(batch * 1400)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Write(in, 16); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < batch; {
			n, err := m.Read(out, sizes, 16)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}

// TestParsePeers reads what wireguard-go's UAPI "get" says of its peers:
// counters, the last handshake, and where it sends to each (IPv4 or IPv6;
// none before the peer is known).
func TestParsePeers(t *testing.T) {
	get := "private_key=00\nlisten_port=51820\n" +
		"public_key=0101010101010101010101010101010101010101010101010101010101010101\nendpoint=198.18.0.2:51820\n" +
		"last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=148\nrx_bytes=92\n" +
		"public_key=0202020202020202020202020202020202020202020202020202020202020202\nendpoint=[2001:db8::1]:4242\n" +
		"last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n" +
		"public_key=0303030303030303030303030303030303030303030303030303030303030303\nlast_handshake_time_sec=0\n"
	ps := parsePeers(get)
	if len(ps) != 3 {
		t.Fatalf("%d peers, want 3", len(ps))
	}
	want := []PeerStats{
		{PublicKey: [32]byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
			RxBytes: 92, TxBytes: 148, LastHandshake: time.Unix(1700000000, 5), Endpoint: netip.MustParseAddrPort("198.18.0.2:51820")},
		{PublicKey: [32]byte{2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2},
			Endpoint: netip.MustParseAddrPort("[2001:db8::1]:4242")},
		{PublicKey: [32]byte{3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}},
	}
	for i := range want {
		g, w := ps[i], want[i]
		if g.PublicKey != w.PublicKey || g.RxBytes != w.RxBytes || g.TxBytes != w.TxBytes || !g.LastHandshake.Equal(w.LastHandshake) || g.Endpoint != w.Endpoint {
			t.Errorf("peer %d: %+v, want %+v", i, g, w)
		}
	}
}
