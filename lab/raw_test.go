package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/tunnel"
)

// rawEdge is a client whose host interface is a channel TUN: the test
// writes IP packets into its WireGuard device and reads what comes back.
type rawEdge struct {
	*node.Edge
	ch *tuntest.ChannelTUN
	in chan []byte // packets the edge's WireGuard delivered
}

// startRawEdge replaces the running client name of h by a raw edge with the
// same config (keys, addresses, port, proxies).
func startRawEdge(t *testing.T, h *Harness, name string) *rawEdge {
	t.Helper()
	old := h.Edges[name]
	if old == nil || old.Config.Role != config.RoleClient {
		t.Fatalf("%s is not a running client", name)
	}
	cfg := old.Config
	// wireguard-go's responder drops a peer's handshake initiation that comes
	// within 20 ms (HandshakeInitationRate) of the previous one it took from
	// the same key as a flood, and the initiator then waits its 5 s retry. So
	// the old device's handshake has to be done, and 20 ms old, first.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var hs time.Time
	err := WaitFor(ctx, func() error {
		var err error
		hs, err = lastHandshake(old.Device, cfg.Proxies[0].PublicKey)
		return err
	})
	if err != nil {
		t.Fatalf("%s never completed its handshake with %s: %v", name, cfg.Proxies[0].Name, err)
	}
	time.Sleep(time.Until(hs.Add(50 * time.Millisecond)))
	old.Close()
	ch := tuntest.NewChannelTUN()
	e, err := node.StartEdge(cfg, node.Options{Host: &tunnel.Host{TUN: ch.TUN()}, Logf: t.Logf, Attach: labAttach})
	if err != nil {
		t.Fatal(err)
	}
	h.Edges[name] = e // the harness closes it (again: Close is idempotent)
	t.Cleanup(e.Close)
	r := &rawEdge{Edge: e, ch: ch, in: make(chan []byte, 256)}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case p := <-ch.Inbound:
				select {
				case r.in <- p:
				default: // nobody is reading: drop
				}
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return r
}

// lastHandshake is when d last completed a handshake with the peer whose
// public key is pub; an error when it has not.
func lastHandshake(d *tunnel.Device, pub [32]byte) (time.Time, error) {
	s, err := d.IpcGet()
	if err != nil {
		return time.Time{}, err
	}
	var sec, nsec int64
	mine := false
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch {
		case k == "public_key":
			mine = v == hex.EncodeToString(pub[:])
		case mine && k == "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case mine && k == "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if sec == 0 && nsec == 0 {
		return time.Time{}, fmt.Errorf("no handshake yet")
	}
	return time.Unix(sec, nsec), nil
}

// inject hands one IP packet to the edge's WireGuard, as if the host sent it.
func (r *rawEdge) inject(t *testing.T, pkt []byte) {
	t.Helper()
	select {
	case r.ch.Outbound <- pkt:
	case <-time.After(5 * time.Second):
		t.Fatal("raw edge does not read its TUN")
	}
}

// exchange sends a UDP datagram from the raw edge's address (of g's family)
// and port sport to g, again every second, until the answer comes back, and
// checks the answer: from g's address and port to the edge's, valid
// checksums, payload "NAME: msg" from a target of g. It returns NAME.
func (r *rawEdge) exchange(t *testing.T, ctx context.Context, h *Harness, g router.Group, sport uint16, msg string) string {
	t.Helper()
	src := netip.AddrPortFrom(addrOfFamily(t, h, r.Name, g.Addr), sport)
	return r.exchangePacket(t, ctx, h, g, src, udpPacket(t, src, netip.AddrPortFrom(g.Addr, g.Port), msg), msg)
}

// exchangePacket is exchange with a request packet built by the caller: a
// UDP datagram from src to g carrying msg.
func (r *rawEdge) exchangePacket(t *testing.T, ctx context.Context, h *Harness, g router.Group, src netip.AddrPort, req []byte, msg string) string {
	t.Helper()
	dst := netip.AddrPortFrom(g.Addr, g.Port)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	r.inject(t, append([]byte(nil), req...))
	for {
		select {
		case pkt := <-r.in:
			from, to, payload, err := parseUDP(pkt)
			if err != nil {
				t.Logf("raw edge got a packet it does not expect (%v): %x", err, pkt)
				continue
			}
			if to != src {
				continue // an answer to an earlier exchange
			}
			if from != dst {
				t.Fatalf("answer to %s → %s came from %s", src, dst, from)
			}
			return answeredBy(t, string(payload), msg, targetsOf(h, g))
		case <-tick.C:
			r.inject(t, append([]byte(nil), req...))
		case <-ctx.Done():
			t.Fatalf("raw %s → %s: no answer: %v", src, dst, ctx.Err())
		}
	}
}

// sum16 is the one's complement sum of b added to initial, folded.
func sum16(b []byte, initial uint32) uint32 {
	s := initial
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s
}

// parseUDP checks an IPv4 or IPv6 UDP packet, checksums included, and
// returns its addresses and payload.
func parseUDP(pkt []byte) (src, dst netip.AddrPort, payload []byte, err error) {
	if len(pkt) < 1 {
		return src, dst, nil, fmt.Errorf("empty packet")
	}
	var l4 []byte
	var pseudo uint32
	var sa, da netip.Addr
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return src, dst, nil, fmt.Errorf("short IPv4 packet")
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		if ihl < 20 || total < ihl+8 || total > len(pkt) || pkt[9] != router.ProtoUDP {
			return src, dst, nil, fmt.Errorf("not an IPv4 UDP packet")
		}
		if sum16(pkt[:ihl], 0) != 0xffff {
			return src, dst, nil, fmt.Errorf("bad IPv4 header checksum")
		}
		sa, da = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		l4 = pkt[ihl:total]
		pseudo = sum16(pkt[12:20], uint32(router.ProtoUDP)+uint32(len(l4)))
	case 6:
		if len(pkt) < 48 || pkt[6] != router.ProtoUDP {
			return src, dst, nil, fmt.Errorf("not an IPv6 UDP packet")
		}
		plen := int(binary.BigEndian.Uint16(pkt[4:]))
		if 40+plen > len(pkt) || plen < 8 {
			return src, dst, nil, fmt.Errorf("bad IPv6 payload length")
		}
		sa, da = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		l4 = pkt[40 : 40+plen]
		pseudo = sum16(pkt[8:40], uint32(router.ProtoUDP)+uint32(len(l4)))
	default:
		return src, dst, nil, fmt.Errorf("not IP")
	}
	ulen := int(binary.BigEndian.Uint16(l4[4:]))
	if ulen != len(l4) {
		return src, dst, nil, fmt.Errorf("UDP length %d in %d bytes", ulen, len(l4))
	}
	if (sa.Is6() || binary.BigEndian.Uint16(l4[6:]) != 0) && sum16(l4, pseudo) != 0xffff {
		return src, dst, nil, fmt.Errorf("bad UDP checksum")
	}
	src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(l4))
	dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(l4[2:]))
	return src, dst, l4[8:], nil
}

// ipv4Packet builds an IPv4 packet (20-byte header, valid header checksum)
// around payload; the L4 checksum is left as payload has it.
func ipv4Packet(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	copy(b[12:16], src.AsSlice())
	copy(b[16:20], dst.AsSlice())
	fixIPv4Checksum(b)
	copy(b[20:], payload)
	return b
}

func fixIPv4Checksum(b []byte) {
	ihl := min(int(b[0]&0x0f)*4, len(b))
	if ihl < 12 {
		ihl = 20
	}
	binary.BigEndian.PutUint16(b[10:], 0)
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum16(b[:min(ihl, len(b))], 0)))
}

// udpPacket is a valid IPv4 or IPv6 UDP packet.
func udpPacket(t *testing.T, src, dst netip.AddrPort, payload string) []byte {
	t.Helper()
	buf := make([]byte, 60+8+len(payload))
	n, err := router.BuildUDP(buf, src, dst, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// Malformed and unwelcome packets from an edge are dropped and counted by
// the edge's proxy (or, where WireGuard's own checks catch them first, never
// reach it), nothing panics, and the overlay keeps working.
func TestMalformedPacketsAreDropped(t *testing.T) {
	t.Parallel()
	// cl3 is attached to p1. Group 1 (100.65.0.1:53/udp and its IPv6 twin)
	// is served by t2 at p2, so cl3's datagrams to it go from IAP p1 to JAP
	// p2 encapsulated; group 3 (100.65.0.2:53/udp) by t4 at p1 itself.
	shape := Options{Proxies: 3, Clusters: 2, Targets: 4, Clients: 3, Groups: 4, IPv6: true}
	h := startLab(t, shape)
	ctx := testCtx(t)
	raw := startRawEdge(t, h, "cl3")
	home := homeOf(h, "cl3")
	if home.Name != "p1" {
		t.Fatalf("cl3 is attached to %s, want p1", home.Name)
	}
	g4, g6 := GroupN(1), GroupN6(1) // 100.65.0.1:53/udp and [fd65::1]:53/udp
	c4, c6 := addr4Of(t, h, "cl3"), addrOfFamily(t, h, "cl3", g6.Addr)
	any4 := netip.AddrPortFrom(g4.Addr, g4.Port)
	any6 := netip.AddrPortFrom(g6.Addr, g6.Port)
	p1, p2 := home.Config.Addr4(), h.Proxies["p2"].Config.Addr4()

	// A valid exchange first: the raw edge's WireGuard session is up.
	who := raw.exchange(t, ctx, h, g4, 40000, "raw hello")
	t.Logf("raw cl3 → %s answered by %s", g4, who)
	who = raw.exchange(t, ctx, h, g6, 40000, "raw hello v6")
	t.Logf("raw cl3 → %s answered by %s", g6, who)
	who = raw.exchange(t, ctx, h, GroupN(3), 40000, "raw hello local")
	t.Logf("raw cl3 → %s answered by %s", GroupN(3), who)

	before := home.Router.Stats()
	valid := func() []byte { return udpPacket(t, netip.AddrPortFrom(c4, 40001), any4, "12345678") } // 36 bytes
	type bad struct {
		name string
		pkt  []byte
		want router.DropReason // DropNone: WireGuard drops it before the router
	}
	var cases []bad
	add := func(name string, want router.DropReason, pkt []byte) { cases = append(cases, bad{name, pkt, want}) }

	add("truncated IPv4 header (12 bytes)", router.DropNone, valid()[:12]) // the edge's WireGuard: shorter than an IPv4 header
	p := ipv4Packet(c4, g4.Addr, router.ProtoUDP, nil)
	p[0] = 0x46 // a 24-byte header in a 20-byte packet
	fixIPv4Checksum(p)
	add("IPv4 header longer than the packet", router.DropMalformed, p)
	p = valid()
	p[0] = 0x44 // IHL 4: 16 bytes
	fixIPv4Checksum(p)
	add("IHL below 5", router.DropMalformed, p)
	p = valid()
	p[0] = 0x4f // IHL 15: 60 bytes, in a 36-byte packet
	fixIPv4Checksum(p)
	add("IHL beyond the total length", router.DropMalformed, p)
	p = valid()
	binary.BigEndian.PutUint16(p[2:], 1000)
	fixIPv4Checksum(p)
	add("total length beyond the buffer", router.DropNone, p) // the proxy's WireGuard: length > packet
	p = valid()
	binary.BigEndian.PutUint16(p[24:], 100) // UDP length 100 in 16 bytes
	add("UDP length beyond the packet", router.DropMalformed, p)
	add("garbage after an IPv4 header", router.DropMalformed, ipv4Packet(c4, g4.Addr, router.ProtoUDP, []byte{0xde, 0xad, 0xbe, 0xef, 0x99}))
	tcp2 := make([]byte, 2)
	binary.BigEndian.PutUint16(tcp2, 40002)
	add("TCP with a 2-byte header", router.DropMalformed, ipv4Packet(c4, GroupN(0).Addr, router.ProtoTCP, tcp2))
	garbage := bytes.Repeat([]byte{0xf7, 0x13, 0x5a, 0xc2}, 16)
	add("garbage bytes", router.DropNone, garbage) // the edge's WireGuard: no IP version

	p = valid()
	binary.BigEndian.PutUint16(p[6:], 0x2000) // MF: the first fragment
	fixIPv4Checksum(p)
	add("IPv4 first fragment", router.DropFragment, p)
	p = valid()
	binary.BigEndian.PutUint16(p[6:], 0x0003) // offset 24 bytes, last fragment
	fixIPv4Checksum(p)
	add("IPv4 later fragment", router.DropFragment, p)
	u6 := udpPacket(t, netip.AddrPortFrom(c6, 40001), any6, "12345678")
	f6 := make([]byte, 0, len(u6)+8)
	f6 = append(f6, u6[:40]...)
	f6[6] = 44                                               // next header: fragment
	binary.BigEndian.PutUint16(f6[4:], uint16(len(u6)-40+8)) // payload length
	f6 = append(f6, router.ProtoUDP, 0, 0x00, 0x01, 0, 0, 0x12, 0x34)
	f6 = append(f6, u6[40:]...)
	add("IPv6 fragment header", router.DropFragment, f6)

	// What another proxy would send: IPIP with the reply of a group's flow inside.
	inner := udpPacket(t, any4, netip.AddrPortFrom(addr4Of(t, h, "cl1"), 40003), "spoofed reply")
	add("IPIP with a proxy's source address", router.DropNone, ipv4Packet(p2, p1, router.ProtoIPIP, inner)) // p1's WireGuard: not cl3's address
	add("IPIP from an edge to its proxy", router.DropNotFromProxy, ipv4Packet(c4, p1, router.ProtoIPIP, inner))
	add("IPIP to an anycast address", router.DropUnsupported, ipv4Packet(c4, g4.Addr, router.ProtoIPIP, inner))

	want := map[router.DropReason]uint64{}
	for _, c := range cases {
		raw.inject(t, c.pkt)
		if c.want != router.DropNone {
			want[c.want]++
			t.Logf("%-36s %3d bytes: the router drops it as %s", c.name, len(c.pkt), c.want)
		} else {
			t.Logf("%-36s %3d bytes: WireGuard drops it first", c.name, len(c.pkt))
		}
	}
	// A valid exchange after them: WireGuard keeps a peer's packets in
	// order, so the proxy has routed all of the above once it is answered.
	who = raw.exchange(t, ctx, h, g4, 40010, "raw hello again")
	t.Logf("after %d bad packets, raw cl3 → %s answered by %s", len(cases), g4, who)
	watched := []router.DropReason{router.DropMalformed, router.DropFragment, router.DropNotFromProxy, router.DropUnsupported}
	err := WaitFor(ctx, func() error {
		d := dropsDelta(home, before)
		for _, r := range watched {
			if d[r] < want[r] {
				return fmt.Errorf("%s drops: %v, want %v", home.Name, d, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	d := dropsDelta(home, before)
	for _, r := range watched {
		if d[r] != want[r] {
			t.Errorf("%s counted %d %s drops, want %d (all drops: %v)", home.Name, d[r], r, want[r], d)
		}
	}
	t.Logf("%s drops after the bad packets: %v", home.Name, d)

	// Unusual but valid packets go through: IPv4 options (the NAT and the
	// encapsulation must find the UDP header after them), and a UDP datagram
	// without a checksum (0 must stay 0 through the NAT).
	opts := udpPacket(t, netip.AddrPortFrom(c4, 40020), any4, "with options")
	withOpts := make([]byte, 0, len(opts)+4)
	withOpts = append(withOpts, opts[:20]...)
	withOpts = append(withOpts, 0x01, 0x01, 0x01, 0x00) // NOP, NOP, NOP, end of options
	withOpts = append(withOpts, opts[20:]...)
	withOpts[0] = 0x46
	binary.BigEndian.PutUint16(withOpts[2:], uint16(len(withOpts)))
	fixIPv4Checksum(withOpts)
	who = raw.exchangePacket(t, ctx, h, g4, netip.AddrPortFrom(c4, 40020), withOpts, "with options")
	t.Logf("IPv4 with options: answered by %s", who)
	noSum := udpPacket(t, netip.AddrPortFrom(c4, 40021), any4, "no checksum")
	binary.BigEndian.PutUint16(noSum[26:], 0)
	who = raw.exchangePacket(t, ctx, h, g4, netip.AddrPortFrom(c4, 40021), noSum, "no checksum")
	t.Logf("UDP without checksum: answered by %s", who)

	// Every proxy still works: the raw edge, and both other clients to every group.
	raw.exchange(t, ctx, h, g6, 40011, "raw hello v6 again")
	checkAllWork(t, ctx, h, []string{"cl1", "cl2"})
	for _, c := range []string{"cl1", "cl2"} {
		if _, err := h.Ping(ctx, c, homeOf(h, c).Config.Addr4()); err != nil {
			t.Errorf("%s ping its proxy %s: %v", c, homeOf(h, c).Name, err)
		}
	}
	if err := h.registered(); err != nil {
		t.Error(err)
	}
}
