package router

import "encoding/binary"

// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
// Sums are kept unfolded in a uint64 and folded to 16 bits at the end: the
// ones'-complement sum of 16-bit words is the same whether words are added
// one at a time or 32 bits at a time, because 2^16 ≡ 1 (mod 2^16−1).

// sum adds b to acc as big-endian 16-bit words (an odd last byte is padded
// with zero, as RFC 1071 says).
func sum(acc uint64, b []byte) uint64 {
	for len(b) >= 8 {
		acc += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	if len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold reduces an unfolded sum to 16 bits with end-around carry. A non-zero
// sum never folds to 0, matching what a full computation gives.
func fold(acc uint64) uint16 {
	acc = (acc & 0xffffffff) + acc>>32
	acc = (acc & 0xffff) + acc>>16
	acc = (acc & 0xffff) + acc>>16
	acc = (acc & 0xffff) + acc>>16
	return uint16(acc)
}

// checksum is the Internet checksum of b seeded with the unfolded sum acc
// (a pseudo-header, say).
func checksum(acc uint64, b []byte) uint16 { return ^fold(sum(acc, b)) }

// pseudoSum is the unfolded sum of the TCP/UDP/ICMPv6 pseudo-header. IPv4
// and IPv6 pseudo-headers sum alike: addresses, protocol, L4 length.
func pseudoSum(src, dst []byte, proto uint8, l4len int) uint64 {
	return sum(sum(uint64(proto)+uint64(l4len), src), dst)
}

// delta is the ones'-complement difference new−old (RFC 1624 ~m + m') of
// two equally long byte strings, folded. Adding it to a checksummed sum
// moves the sum from old to new.
func delta(old, new []byte) uint16 {
	var acc uint64
	for i := 0; i+1 < len(old); i += 2 {
		acc += uint64(^binary.BigEndian.Uint16(old[i:])) + uint64(binary.BigEndian.Uint16(new[i:]))
	}
	return fold(acc)
}

// delta16 is delta for one 16-bit word.
func delta16(old, new uint16) uint16 { return fold(uint64(^old) + uint64(new)) }

// adjust applies a delta to a checksum field value: HC' = ~(~HC + d)
// (RFC 1624, eqn. 3), which never produces the −0 that eqn. 2 could.
func adjust(cs, d uint16) uint16 {
	x := uint32(^cs) + uint32(d)
	x = (x & 0xffff) + x>>16
	x = (x & 0xffff) + x>>16
	return ^uint16(x)
}

// adjustAt applies a delta to the checksum field at b[off:off+2].
func adjustAt(b []byte, off int, d uint16) {
	binary.BigEndian.PutUint16(b[off:], adjust(binary.BigEndian.Uint16(b[off:]), d))
}

// adjustL4 applies a delta to a TCP or UDP checksum. A UDP-over-IPv4
// checksum of 0 means "none" and stays 0; a computed UDP checksum of 0 is
// sent as 0xffff (RFC 768).
func adjustL4(b []byte, off int, udp, v4 bool, d uint16) {
	cs := binary.BigEndian.Uint16(b[off:])
	if udp && cs == 0 && v4 {
		return
	}
	cs = adjust(cs, d)
	if udp && cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(b[off:], cs)
}
