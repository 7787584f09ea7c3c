package router

import (
	"encoding/binary"
	"net/netip"
)

// Header layouts the router reads and writes. Offsets are from the start of
// each header.
const (
	ipv4MinLen = 20
	ipv6Len    = 40
	tcpMinLen  = 20
	udpLen     = 8
	icmpMinLen = 8 // type, code, checksum, and the echo identifier and sequence

	ipv4ID       = 4
	ipv4Checksum = 10
	ipv4Src      = 12
	ipv4Dst      = 16
	ipv6Src      = 8
	ipv6Dst      = 24
	tcpChecksum  = 16
	udpChecksum  = 6
	icmpChecksum = 2

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10

	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6ESP      = 50
	ipv6AH       = 51
	ipv6NoNext   = 59
	ipv6DestOpts = 60
)

// v4Mapped is the prefix that makes a 16-byte address out of an IPv4 one,
// the way netip.Addr.As16 does.
var v4Mapped = [12]byte{10: 0xff, 11: 0xff}

// parsed is one decode pass over an IP packet: offsets into the caller's
// buffer and the few fields the router decides on. It lives on the stack and
// is filled again for each packet (and for the inner packet of an
// encapsulated one), so parsing never allocates or copies payloads.
type parsed struct {
	// The packet's flow key as it travels: addresses (IPv4 v4-mapped, so
	// both families share one key type), TCP/UDP ports (0 for other
	// protocols), transport protocol, family (4 or 6). Embedded, so that
	// lookups use it as it is.
	flowKey
	off, l4, end int    // start of the IP header, of the L4 header, end of the packet
	src4, dst4   uint32 // IPv4 addresses as numbers (IPv4 only)
	tcpFlags     uint8
	icmpType     uint8
}

// parse decodes buf[start:end]. It checks every length it relies on, so the
// rest of the router can index the buffer without bounds worries.
func (p *parsed) parse(buf []byte, start, end int) DropReason {
	if start < 0 || end > len(buf) || start >= end {
		return DropMalformed
	}
	b := buf[start:end]
	p.off = start
	switch b[0] >> 4 {
	case 4:
		if len(b) < ipv4MinLen {
			return DropMalformed
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if ihl < ipv4MinLen || total < ihl || total > len(b) {
			return DropMalformed
		}
		if binary.BigEndian.Uint16(b[6:])&0x3fff != 0 { // MF set or a fragment offset
			return DropFragment
		}
		p.fam = 4
		p.proto = b[9]
		p.src4 = binary.BigEndian.Uint32(b[ipv4Src:])
		p.dst4 = binary.BigEndian.Uint32(b[ipv4Dst:])
		putV4(&p.src, b[ipv4Src:])
		putV4(&p.dst, b[ipv4Dst:])
		p.l4 = start + ihl
		p.end = start + total
	case 6:
		if len(b) < ipv6Len {
			return DropMalformed
		}
		total := ipv6Len + int(binary.BigEndian.Uint16(b[4:]))
		if total > len(b) {
			return DropMalformed
		}
		p.fam = 6
		p.proto = b[6]
		copy(p.src[:], b[ipv6Src:ipv6Src+16])
		copy(p.dst[:], b[ipv6Dst:ipv6Dst+16])
		p.l4 = start + ipv6Len
		p.end = start + total
		switch p.proto {
		case ipv6Fragment:
			return DropFragment
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts, ipv6AH, ipv6ESP, ipv6NoNext:
			return DropUnsupported
		}
		// A v4-mapped IPv6 address would share a flow key with the IPv4
		// address; such packets have no business in the overlay.
		if [12]byte(p.src[:12]) == v4Mapped || [12]byte(p.dst[:12]) == v4Mapped {
			return DropUnsupported
		}
	default:
		return DropMalformed
	}
	return p.parseL4(buf)
}

func (p *parsed) parseL4(buf []byte) DropReason {
	l := buf[p.l4:p.end]
	p.sport, p.dport, p.tcpFlags, p.icmpType = 0, 0, 0, 0
	switch p.proto {
	case ProtoTCP:
		if len(l) < tcpMinLen {
			return DropMalformed
		}
		if doff := int(l[12]>>4) * 4; doff < tcpMinLen || doff > len(l) {
			return DropMalformed
		}
		p.sport = binary.BigEndian.Uint16(l)
		p.dport = binary.BigEndian.Uint16(l[2:])
		p.tcpFlags = l[13]
	case ProtoUDP:
		if len(l) < udpLen {
			return DropMalformed
		}
		if ulen := int(binary.BigEndian.Uint16(l[4:])); ulen < udpLen || ulen > len(l) {
			return DropMalformed
		}
		p.sport = binary.BigEndian.Uint16(l)
		p.dport = binary.BigEndian.Uint16(l[2:])
	case ProtoICMP, ProtoICMPv6:
		if (p.proto == ProtoICMP) != (p.fam == 4) {
			return DropUnsupported
		}
		if len(l) < icmpMinLen {
			return DropMalformed
		}
		p.icmpType = l[0]
	case ProtoIPIP, ProtoIPv6:
		if p.fam != 4 { // the overlay encapsulates in IPv4 only
			return DropUnsupported
		}
	default:
		return DropUnsupported
	}
	return DropNone
}

// putV4 writes the IPv4 address at a[:4] v4-mapped into k with two 8-byte
// stores, as the hash reads it back: a composite literal, or a big-endian
// put the compiler splits into bytes, would make those reads wait for the
// stores to retire (store forwarding fails), which cost more than the NAT.
func putV4(k *[16]byte, a []byte) {
	binary.LittleEndian.PutUint64(k[:8], 0)
	binary.LittleEndian.PutUint64(k[8:], 0xffff0000|uint64(binary.LittleEndian.Uint32(a))<<32)
}

// srcOff and dstOff locate the addresses in the buffer.
func (p *parsed) srcOff() int {
	if p.fam == 4 {
		return p.off + ipv4Src
	}
	return p.off + ipv6Src
}

func (p *parsed) dstOff() int {
	if p.fam == 4 {
		return p.off + ipv4Dst
	}
	return p.off + ipv6Dst
}

// l4ChecksumOff is where the TCP or UDP checksum is.
func (p *parsed) l4ChecksumOff() int {
	if p.proto == ProtoTCP {
		return p.l4 + tcpChecksum
	}
	return p.l4 + udpChecksum
}

// addrOf turns a key address back into a netip.Addr (cold paths only).
func addrOf(a [16]byte, fam uint8) netip.Addr {
	if fam == 4 {
		return netip.AddrFrom4([4]byte(a[12:]))
	}
	return netip.AddrFrom16(a)
}

// addrBytes returns the bytes of an address as a packet carries it.
func addrBytes(a *[16]byte, fam uint8) []byte {
	if fam == 4 {
		return a[12:]
	}
	return a[:]
}

// v4 returns the IPv4 address in a v4-mapped key address as a uint32.
func v4(a *[16]byte) uint32 { return binary.BigEndian.Uint32(a[12:]) }

// key16 is the key form of an address: v4-mapped for IPv4.
func key16(a netip.Addr) [16]byte { return a.Unmap().As16() }

func famOf(a netip.Addr) uint8 {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}
