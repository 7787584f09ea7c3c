package router

import (
	"encoding/binary"
	"net/netip"
)

// IAP→JAP encapsulation: IP in IPv4 (protocol 4 for IPv4 packets, 41 for
// IPv6 ones), outer source this proxy's IPv4 overlay address. WireGuard
// routes by destination; the outer header makes the JAP the destination.
// The outer identification field is 0, except in the copies of a
// replicated datagram: there it is 0x52 in the high byte and, in the low
// byte, how many targets the JAP delivers the copy to (see replicaMark).

// ProxySet is a set of proxies' overlay addresses that its owner keeps
// and never changes (SetProxySet). Has4 takes an IPv4 address as a
// big-endian number, Has16 an IPv6 one.
type ProxySet interface {
	Has4(a uint32) bool
	Has16(a [16]byte) bool
}

// proxySet is the overlay addresses of all proxies, replaced as a whole.
type proxySet struct {
	set ProxySet // nil: none
}

func (s *proxySet) has(a *[16]byte, fam uint8) bool {
	if s.set == nil {
		return false
	}
	if fam == 4 {
		return s.set.Has4(v4(a))
	}
	return s.set.Has16(*a)
}

func (s *proxySet) has4(a uint32) bool { return s.set != nil && s.set.Has4(a) }

// addrSet is a ProxySet given as a list of addresses (SetProxies).
type addrSet struct {
	v4 map[uint32]struct{}
	v6 map[[16]byte]struct{}
}

func (s *addrSet) Has4(a uint32) bool {
	_, ok := s.v4[a]
	return ok
}

func (s *addrSet) Has16(a [16]byte) bool {
	_, ok := s.v6[a]
	return ok
}

// SetProxies replaces the set of proxies (this one included) whose
// encapsulated packets are accepted and which may serve as JAPs. IAP flows
// whose JAP is no longer a proxy are dropped, so their next packet picks a
// live one.
func (r *Router) SetProxies(addrs []netip.Addr) {
	s := &addrSet{v4: make(map[uint32]struct{}), v6: make(map[[16]byte]struct{})}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			b := a.As4()
			s.v4[binary.BigEndian.Uint32(b[:])] = struct{}{}
		} else if a.Is6() {
			s.v6[a.As16()] = struct{}{}
		}
	}
	// Flows need a look only if an IPv4 proxy is gone (JAPs are IPv4);
	// from a set kept elsewhere, that is not worth finding out.
	shrunk := false
	switch old := r.proxies.Load().set.(type) {
	case *addrSet:
		for a := range old.v4 {
			if !s.Has4(a) {
				shrunk = true
				break
			}
		}
	case nil:
	default:
		shrunk = true
	}
	r.SetProxySet(s, shrunk)
}

// SetProxySet is SetProxies with a set that the caller keeps and never
// changes: an overlay of 10,000 proxies, each holding a map of all
// of them, spent a gigabyte on it, and rebuilt it at every death. shrunk
// says whether the set it replaces has an address that s has not.
func (r *Router) SetProxySet(s ProxySet, shrunk bool) {
	ps := &proxySet{set: s}
	r.proxies.Store(ps)
	if shrunk {
		r.dropGoneJAPs(ps)
	}
}

// dropGoneJAPs drops the IAP flows whose JAP is not in s.
func (r *Router) dropGoneJAPs(s *proxySet) {
	r.iap.deleteWhere(func(f *flow) bool {
		jap := f.peer.Load()
		return jap != r.self4 && !s.has4(jap)
	})
}

// encapsulate prepends the outer header to the packet buf[start:end] in the
// headroom and returns the result to forward.
// role is the step it is counted under.
func (r *Router) encapsulate(res *Result, buf []byte, start, end int, fam uint8, dst uint32, stripe uint32, role Role) *Result {
	o := start - EncapOverhead
	total := end - o
	if o < 0 || total > 0xffff {
		return r.drop(res, DropMalformed)
	}
	h := buf[o:start]
	proto := uint8(ProtoIPIP)
	base := r.encSum4
	if fam == 6 {
		proto, base = ProtoIPv6, r.encSum6
	}
	h[0] = 0x45 // version 4, 20-byte header
	h[1] = 0
	binary.BigEndian.PutUint16(h[2:], uint16(total))
	binary.BigEndian.PutUint32(h[4:], 0) // no fragmentation: WireGuard carries it whole
	h[8] = 64
	h[9] = proto
	binary.BigEndian.PutUint32(h[ipv4Src:], r.self4)
	binary.BigEndian.PutUint32(h[ipv4Dst:], dst)
	// The constant words' sum is precomputed; add length and destination.
	cs := ^fold(base + uint64(total) + uint64(dst>>16) + uint64(dst&0xffff))
	binary.BigEndian.PutUint16(h[ipv4Checksum:], cs)
	r.st.forward(stripe, role, total)
	res.Action, res.Start, res.End = Forward, o, end
	return res
}

// encapSum is the unfolded sum of the outer header's words that do not
// change from packet to packet (the checksum field counts as zero).
func encapSum(self4 uint32, proto uint8) uint64 {
	return 0x4500 + uint64(64)<<8 + uint64(proto) + uint64(self4>>16) + uint64(self4&0xffff)
}
