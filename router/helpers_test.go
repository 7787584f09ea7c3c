package router

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// Test addresses: three proxies, a client, targets, anycast groups.
var (
	p1   = netip.MustParseAddr("100.64.0.1")
	p2   = netip.MustParseAddr("100.64.0.2")
	p3   = netip.MustParseAddr("100.64.0.3")
	p1v6 = netip.MustParseAddr("fd64::1")
	p2v6 = netip.MustParseAddr("fd64::2")

	client   = netip.MustParseAddrPort("100.64.1.10:40000")
	client6  = netip.MustParseAddrPort("[fd64::1:10]:40000")
	tgt      = netip.MustParseAddrPort("100.64.2.20:8080")
	tgt2     = netip.MustParseAddrPort("100.64.2.21:8080")
	tgt6     = netip.MustParseAddrPort("[fd64::2:20]:8080")
	anyTCP   = netip.MustParseAddrPort("100.65.0.1:80")
	anyTCP6  = netip.MustParseAddrPort("[fd65::1]:80")
	anyIP    = anyTCP.Addr()
	anyIP6   = anyTCP6.Addr()
	gTCP     = Group{Addr: anyIP, Port: 80, Proto: ProtoTCP}
	gUDP     = Group{Addr: anyIP, Port: 53, Proto: ProtoUDP}
	gTCP6    = Group{Addr: anyIP6, Port: 80, Proto: ProtoTCP}
	gUDP6    = Group{Addr: anyIP6, Port: 53, Proto: ProtoUDP}
	anycasts = []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16"), netip.MustParsePrefix("fd65::/64")}
	proxyIPs = []netip.Addr{p1, p2, p3, p1v6, p2v6}
)

const ctrlPort = 51821

func newRouter(t testing.TB, self []netip.Addr, mod ...func(*Config)) *Router {
	t.Helper()
	cfg := Config{Self: self, Anycast: anycasts, ControlPort: ctrlPort}
	for _, m := range mod {
		m(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.SetProxies(proxyIPs)
	return r
}

// pkt describes a test packet; build makes it with correct checksums using
// the slow reference checksum below, independent of checksum.go.
type pkt struct {
	src, dst netip.AddrPort
	proto    uint8
	flags    uint8  // TCP flags
	mss      uint16 // TCP MSS option, 0 for none
	nopMSS   bool   // put a NOP before the MSS option, so it sits at an odd offset
	icmpType uint8
	payload  []byte
	udpZero  bool // UDP over IPv4 without checksum
}

func refSum(b []byte) uint32 {
	var s uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
	}
	return s
}

func refChecksum(parts ...[]byte) uint16 {
	var s uint32
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	s = refSum(all)
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func pseudo(src, dst netip.Addr, proto uint8, n int) []byte {
	var b []byte
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		b = append(append(b, s[:]...), d[:]...)
		b = append(b, 0, proto, byte(n>>8), byte(n))
	} else {
		s, d := src.As16(), dst.As16()
		b = append(append(b, s[:]...), d[:]...)
		b = append(b, 0, 0, byte(n>>8), byte(n), 0, 0, 0, proto)
	}
	return b
}

func (p pkt) build() []byte {
	var l4 []byte
	proto := p.proto
	switch p.proto {
	case ProtoTCP:
		opts := []byte{}
		if p.mss != 0 {
			if p.nopMSS {
				opts = append(opts, 1)
			}
			opts = append(opts, 2, 4, byte(p.mss>>8), byte(p.mss))
			for len(opts)%4 != 0 {
				opts = append(opts, 0)
			}
		}
		hl := 20 + len(opts)
		l4 = make([]byte, hl+len(p.payload))
		binary.BigEndian.PutUint16(l4, p.src.Port())
		binary.BigEndian.PutUint16(l4[2:], p.dst.Port())
		binary.BigEndian.PutUint32(l4[4:], 1000)
		binary.BigEndian.PutUint32(l4[8:], 2000)
		l4[12] = byte(hl/4) << 4
		l4[13] = p.flags
		binary.BigEndian.PutUint16(l4[14:], 65535)
		copy(l4[20:], opts)
		copy(l4[hl:], p.payload)
	case ProtoUDP:
		l4 = make([]byte, 8+len(p.payload))
		binary.BigEndian.PutUint16(l4, p.src.Port())
		binary.BigEndian.PutUint16(l4[2:], p.dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], p.payload)
	case ProtoICMP, ProtoICMPv6:
		l4 = make([]byte, 8+len(p.payload))
		l4[0] = p.icmpType
		binary.BigEndian.PutUint16(l4[4:], 0x1234)
		binary.BigEndian.PutUint16(l4[6:], 7)
		copy(l4[8:], p.payload)
		if p.src.Addr().Is6() {
			proto = ProtoICMPv6
		} else {
			proto = ProtoICMP
		}
	}
	src, dst := p.src.Addr(), p.dst.Addr()
	switch proto {
	case ProtoTCP:
		binary.BigEndian.PutUint16(l4[16:], refChecksum(pseudo(src, dst, proto, len(l4)), l4))
	case ProtoUDP:
		if !p.udpZero {
			cs := refChecksum(pseudo(src, dst, proto, len(l4)), l4)
			if cs == 0 {
				cs = 0xffff
			}
			binary.BigEndian.PutUint16(l4[6:], cs)
		}
	case ProtoICMP:
		binary.BigEndian.PutUint16(l4[2:], refChecksum(l4))
	case ProtoICMPv6:
		binary.BigEndian.PutUint16(l4[2:], refChecksum(pseudo(src, dst, proto, len(l4)), l4))
	}
	return ipWrap(src, dst, proto, l4)
}

// ipWrap puts an IP header with a correct checksum before payload.
func ipWrap(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	if src.Is4() {
		h := make([]byte, 20, 20+len(payload))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
		binary.BigEndian.PutUint16(h[4:], 0xbeef)
		h[6] = 0x40 // DF
		h[8] = 17
		h[9] = proto
		s, d := src.As4(), dst.As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		binary.BigEndian.PutUint16(h[10:], refChecksum(h))
		return append(h, payload...)
	}
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = proto
	h[7] = 17
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, payload...)
}

// encap wraps inner the way an IAP (or JAP) does.
func encap(src, dst netip.Addr, inner []byte) []byte {
	proto := uint8(ProtoIPIP)
	if inner[0]>>4 == 6 {
		proto = ProtoIPv6
	}
	return ipWrap(src, dst, proto, inner)
}

// decoded is what a test checks of a packet.
type decoded struct {
	src, dst netip.AddrPort
	proto    uint8
	ttl      uint8
	flags    uint8
	mss      uint16
	icmpType uint8
	payload  []byte
	inner    []byte // for proto 4 and 41
}

// decode parses b and checks every checksum in it by full recomputation.
func decode(t testing.TB, b []byte) decoded {
	t.Helper()
	d, err := decodeErr(b)
	if err != nil {
		t.Fatalf("%v\n% x", err, b)
	}
	return d
}

func decodeErr(b []byte) (decoded, error) {
	var d decoded
	var src, dst netip.Addr
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&15) * 4
		if n := int(binary.BigEndian.Uint16(b[2:])); n != len(b) {
			return d, fmt.Errorf("IPv4 total length %d, packet %d", n, len(b))
		}
		if cs := refChecksum(b[:ihl]); cs != 0 {
			return d, fmt.Errorf("bad IPv4 header checksum")
		}
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		d.proto, d.ttl = b[9], b[8]
		l4 = b[ihl:]
	case 6:
		if n := 40 + int(binary.BigEndian.Uint16(b[4:])); n != len(b) {
			return d, fmt.Errorf("IPv6 length %d, packet %d", n, len(b))
		}
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		d.proto, d.ttl = b[6], b[7]
		l4 = b[40:]
	default:
		return d, fmt.Errorf("bad version")
	}
	var sport, dport uint16
	switch d.proto {
	case ProtoTCP:
		if refChecksum(pseudo(src, dst, d.proto, len(l4)), l4) != 0 {
			return d, fmt.Errorf("bad TCP checksum")
		}
		sport, dport = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		d.flags = l4[13]
		hl := int(l4[12]>>4) * 4
		for i := 20; i < hl; {
			if l4[i] == 0 {
				break
			}
			if l4[i] == 1 {
				i++
				continue
			}
			if l4[i] == 2 {
				d.mss = binary.BigEndian.Uint16(l4[i+2:])
			}
			i += int(l4[i+1])
		}
		d.payload = l4[hl:]
	case ProtoUDP:
		if binary.BigEndian.Uint16(l4[6:]) == 0 && src.Is4() {
			// no checksum
		} else if refChecksum(pseudo(src, dst, d.proto, len(l4)), l4) != 0 {
			return d, fmt.Errorf("bad UDP checksum")
		}
		sport, dport = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		d.payload = l4[8:]
	case ProtoICMP:
		if refChecksum(l4) != 0 {
			return d, fmt.Errorf("bad ICMP checksum")
		}
		d.icmpType = l4[0]
		d.payload = l4[8:]
	case ProtoICMPv6:
		if refChecksum(pseudo(src, dst, d.proto, len(l4)), l4) != 0 {
			return d, fmt.Errorf("bad ICMPv6 checksum")
		}
		d.icmpType = l4[0]
		d.payload = l4[8:]
	case ProtoIPIP, ProtoIPv6:
		d.inner = l4
	}
	d.src, d.dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	return d, nil
}

// route runs one packet through r with headroom and returns the result and
// a copy of the output (the packet for Forward, the payload for Control).
func route(r *Router, b []byte, now int64) (Result, []byte) {
	buf := make([]byte, Headroom+len(b)+7) // some slack after, as real buffers have
	copy(buf[Headroom:], b)
	res := r.Route(buf, Headroom, Headroom+len(b), now)
	if res.Action == Forward || res.Action == Control {
		return res, append([]byte(nil), buf[res.Start:res.End]...)
	}
	return res, nil
}

// mustForward routes b and fails unless it is forwarded.
func mustForward(t testing.TB, r *Router, b []byte, now int64) []byte {
	t.Helper()
	res, out := route(r, b, now)
	if res.Action != Forward {
		t.Fatalf("want Forward, got %+v", res)
	}
	return out
}

// mustDrop routes b and fails unless it is dropped for reason.
func mustDrop(t testing.TB, r *Router, b []byte, now int64, reason DropReason) {
	t.Helper()
	before := r.Stats().Drops[reason]
	res, _ := route(r, b, now)
	if res.Action != Drop || res.Reason != reason {
		t.Fatalf("want drop %v, got action %d reason %v", reason, res.Action, res.Reason)
	}
	if got := r.Stats().Drops[reason]; got != before+1 {
		t.Fatalf("drop %v counted %d times, want 1", reason, got-before)
	}
}

func sec(s float64) int64 { return int64(s * float64(time.Second)) }

func tcp(src, dst netip.AddrPort, flags uint8) []byte {
	return pkt{src: src, dst: dst, proto: ProtoTCP, flags: flags, payload: []byte("hello")}.build()
}

func udp(src, dst netip.AddrPort, payload string) []byte {
	return pkt{src: src, dst: dst, proto: ProtoUDP, payload: []byte(payload)}.build()
}

func echo(src, dst netip.Addr, typ uint8) []byte {
	return pkt{src: netip.AddrPortFrom(src, 0), dst: netip.AddrPortFrom(dst, 0), proto: ProtoICMP, icmpType: typ, payload: []byte("ping")}.build()
}

// resolved is ResolvedPolicy with the zero Policy.
func (r *Router) resolved(g Group, japs []JAP, ttl time.Duration, now int64) [][]byte {
	return r.ResolvedPolicy(g, Policy{}, japs, ttl, now)
}

// addTarget is AddTargetWeight with weight 1.
func (r *Router) addTarget(g Group, t netip.AddrPort) bool {
	return r.AddTargetWeight(g, t, 1)
}
