package router

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// BuildUDP writes a complete IPv4 or IPv6 UDP packet from src to dst
// carrying payload at buf[0:], with TTL (hop limit) 64 and correct
// checksums, and returns its length. The overlay uses it for the control
// messages it sends.
func BuildUDP(buf []byte, src, dst netip.AddrPort, payload []byte) (int, error) {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if !sa.IsValid() || !da.IsValid() {
		return 0, errors.New("router: BuildUDP needs valid addresses")
	}
	if sa.Is4() != da.Is4() {
		return 0, errors.New("router: BuildUDP: source and destination are of different IP families")
	}
	hl := ipv6Len
	if sa.Is4() {
		hl = ipv4MinLen
	}
	ulen := udpLen + len(payload)
	n := hl + ulen
	if ulen > 0xffff || (sa.Is4() && n > 0xffff) {
		return 0, errors.New("router: BuildUDP: payload too large")
	}
	if len(buf) < n {
		return 0, errors.New("router: BuildUDP: buffer too small")
	}
	b := buf[:n]
	var s, d []byte
	if sa.Is4() {
		s4, d4 := sa.As4(), da.As4()
		s, d = s4[:], d4[:]
		b[0], b[1] = 0x45, 0
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		binary.BigEndian.PutUint32(b[4:], 0)
		b[8], b[9] = 64, ProtoUDP
		binary.BigEndian.PutUint16(b[ipv4Checksum:], 0)
		copy(b[ipv4Src:], s)
		copy(b[ipv4Dst:], d)
		binary.BigEndian.PutUint16(b[ipv4Checksum:], checksum(0, b[:ipv4MinLen]))
	} else {
		s16, d16 := sa.As16(), da.As16()
		s, d = s16[:], d16[:]
		binary.BigEndian.PutUint32(b, 6<<28)
		binary.BigEndian.PutUint16(b[4:], uint16(ulen))
		b[6], b[7] = ProtoUDP, 64
		copy(b[ipv6Src:], s)
		copy(b[ipv6Dst:], d)
	}
	u := b[hl:]
	binary.BigEndian.PutUint16(u, src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(ulen))
	binary.BigEndian.PutUint16(u[udpChecksum:], 0)
	copy(u[udpLen:], payload)
	cs := checksum(pseudoSum(s, d, ProtoUDP, ulen), u)
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(u[udpChecksum:], cs)
	return n, nil
}
