package router

import (
	"encoding/binary"
	"net/netip"
)

// ICMP echo. Proxies answer pings to their own overlay addresses, and an
// IAP answers pings to an anycast IP that has a live group, so `ping` works
// on anycast addresses (and targets can check their JAP is there). Other
// ICMP is not carried.

const (
	icmpEchoReply     = 0
	icmpEchoRequest   = 8
	icmpv6EchoRequest = 128
	icmpv6EchoReply   = 129
)

func isEchoRequest(p *parsed) bool {
	if p.fam == 4 {
		return p.icmpType == icmpEchoRequest
	}
	return p.icmpType == icmpv6EchoRequest
}

// echoAnycast answers an echo request to an anycast IP when the IP has a
// live group: a local target on it, or a JAP with targets in the cache of
// its echo pseudo-group. On a cache miss the request waits for the echo
// group to be resolved like any group's packet. override, when not nil, is
// the echo group's entry (ResolvedPolicy routes with it).
func (r *Router) echoAnycast(res *Result, buf []byte, p *parsed, now int64, override *cacheEntry) *Result {
	if !isEchoRequest(p) {
		return r.drop(res, DropICMPUnsupported)
	}
	a := addrOf(p.dst, p.fam)
	r.gmu.RLock()
	local := r.byAddr[a] > 0
	r.gmu.RUnlock()
	if !local {
		g := EchoGroup(a)
		e := override
		if e == nil {
			e = r.lookup(g, now)
		}
		if e == nil {
			if e = r.enqueue(res, g, buf, p, now); e == nil {
				return res
			}
		}
		if !e.live() {
			r.drop(res, DropNoGroup).Group = g
			return res
		}
	}
	return r.echoReply(res, buf, p)
}

// echoReply turns the echo request p into its reply in place: addresses
// swapped, a fresh TTL, the reply type, checksums fixed.
func (r *Router) echoReply(res *Result, buf []byte, p *parsed) *Result {
	b := buf[p.off:p.end]
	l := buf[p.l4:p.end]
	oldWord := binary.BigEndian.Uint16(l)
	if p.fam == 4 {
		var a [4]byte
		copy(a[:], b[ipv4Src:])
		copy(b[ipv4Src:], b[ipv4Dst:ipv4Dst+4])
		copy(b[ipv4Dst:], a[:])
		b[8] = 64
		ihl := int(b[0]&0x0f) * 4
		binary.BigEndian.PutUint16(b[ipv4Checksum:], 0)
		binary.BigEndian.PutUint16(b[ipv4Checksum:], checksum(0, b[:ihl]))
		l[0] = icmpEchoReply
	} else {
		var a [16]byte
		copy(a[:], b[ipv6Src:])
		copy(b[ipv6Src:], b[ipv6Dst:ipv6Dst+16])
		copy(b[ipv6Dst:], a[:])
		b[7] = 64
		l[0] = icmpv6EchoReply // the pseudo-header's sum is unchanged by the swap
	}
	adjustAt(l, icmpChecksum, delta16(oldWord, binary.BigEndian.Uint16(l)))
	r.st.forward(0, RoleEcho, p.end-p.off)
	res.Action, res.Start, res.End = Forward, p.off, p.end
	return res
}

// echoSelf answers pings to this proxy's own addresses.
func (r *Router) echoSelf(res *Result, buf []byte, p *parsed) *Result {
	if !isEchoRequest(p) {
		return r.drop(res, DropICMPUnsupported)
	}
	return r.echoReply(res, buf, p)
}

// netipAddrPort is the packet's source or destination as netip values
// (control messages only: cold path).
func netipAddrPort(a [16]byte, fam uint8, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(addrOf(a, fam), port)
}
