package overlay

// Edges learn proxies at run time. A proxy admits the edges its own file
// lists; proxies tell each other the WireGuard keys of those edges
// (TypeAdmits, fetched once per member incarnation), so that each can answer
// an edge's TypeProxiesReq with the live proxies that would admit it. The
// edge then attaches to those too (see node.Edge): a proxy added to the
// overlay later serves edges whose files predate it.

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// admitsRetry is how long a proxy waits for a member's admitted keys before
// it asks again.
const admitsRetry = time.Second

// maxProxiesPayload keeps a TypeProxies inside one tunnel packet (1420-byte
// MTU less IP and UDP headers, with room to spare).
const maxProxiesPayload = 1200

// admitSet is what one member admits, as far as this proxy has heard.
type admitSet struct {
	inc  uint32 // the member's incarnation when it sent keys
	keys map[[32]byte]bool
	// The parts of a newer list, until all have come.
	pendInc   uint32
	pendParts uint8
	pend      map[uint8][][32]byte
	askedAt   int64
}

// ownAdmits lists, sorted and without repeats, the keys of the edges cfg
// admits.
func ownAdmits(edges map[netip.Addr]*EdgePolicy) [][32]byte {
	var keys [][32]byte
	for _, e := range edges {
		keys = append(keys, e.PublicKey)
	}
	slices.SortFunc(keys, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(keys)
}

// admitsTick asks every live member whose admitted keys this proxy lacks
// (or has only from an older incarnation) to send them. Once every member
// of a live list has answered, it skips that list: walking 10,000 members
// every Tick for nothing was a large overlay's main idle cost.
func (p *Proxy) admitsTick(now int64) {
	var ask []netip.Addr
	others := p.health.liveOthers()
	p.mem.mu.Lock()
	if p.mem.admitsDone != nil && sameSlice(p.mem.admitsDone, others) {
		p.mem.mu.Unlock()
		return
	}
	done := true
	for _, m := range others {
		s := p.mem.admits[m.Name]
		if s == nil {
			s = &admitSet{}
			p.mem.admits[m.Name] = s
		}
		if s.keys != nil && s.inc >= m.inc {
			continue
		}
		done = false
		if s.askedAt != 0 && now-s.askedAt < int64(admitsRetry) {
			continue
		}
		s.askedAt = now
		ask = append(ask, m.Addr)
	}
	if done {
		// liveOthers gives a new slice whenever a member comes, goes or
		// restarts; holding this one keeps its address from being reused.
		p.mem.admitsDone = others
	}
	p.mem.mu.Unlock()
	self, inc := p.cfg.Self.Name, p.health.incarnation()
	for _, a := range ask {
		p.sendTo(a, 0, &AdmitsReq{From: self, Incarnation: inc})
	}
}

// sameSlice reports whether a and b are the same slice (not just equal).
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// handleAdmitsReq sends this proxy's admitted keys to the member at src.
func (p *Proxy) handleAdmitsReq(src netip.Addr) {
	keys := p.mem.ownAdmits
	parts := max(1, (len(keys)+MaxKeys-1)/MaxKeys)
	if parts > 255 {
		parts = 255 // 8160 edges: the rest are not told (nobody runs that many)
	}
	inc := p.health.incarnation()
	for i := range parts {
		part := keys[min(i*MaxKeys, len(keys)):min((i+1)*MaxKeys, len(keys))]
		p.sendTo(src, 0, &Admits{From: p.cfg.Self.Name, Incarnation: inc, Part: uint8(i), Parts: uint8(parts), Keys: part})
	}
}

// handleAdmits takes one part of the keys the member m.From admits; only
// that member itself may tell them.
func (p *Proxy) handleAdmits(src netip.Addr, m *Admits) {
	if p.mem.addrOf(m.From) != src {
		return
	}
	if _, inc, ok := p.health.state(m.From); !ok || m.Incarnation < inc {
		return // a late answer from before a restart: ask again
	}
	p.mem.mu.Lock()
	defer p.mem.mu.Unlock()
	s := p.mem.admits[m.From]
	if s == nil {
		s = &admitSet{}
		p.mem.admits[m.From] = s
	}
	if s.keys != nil && m.Incarnation <= s.inc {
		return // a repeat
	}
	if s.pend == nil || s.pendInc != m.Incarnation || s.pendParts != m.Parts {
		s.pend, s.pendInc, s.pendParts = map[uint8][][32]byte{}, m.Incarnation, m.Parts
	}
	s.pend[m.Part] = m.Keys
	if len(s.pend) < int(s.pendParts) {
		return
	}
	s.keys = map[[32]byte]bool{}
	for _, ks := range s.pend {
		for _, k := range ks {
			s.keys[k] = true
		}
	}
	s.inc, s.pend = s.pendInc, nil
}

// forgetAdmits drops what a member admits (it restarted, perhaps with
// another file): the next admitsTick asks again.
func (p *Proxy) forgetAdmits(ms []Member) {
	p.mem.mu.Lock()
	defer p.mem.mu.Unlock()
	for _, m := range ms {
		delete(p.mem.admits, m.Name)
	}
	p.mem.admitsDone = nil
}

// Admitting names the live proxies that would admit the edge with this
// WireGuard key, in the order handleProxiesReq tells them (this proxy
// first, whether or not it admits the edge).
func (p *Proxy) Admitting(key [32]byte) []string {
	var out []string
	for _, m := range p.admitting(key) {
		out = append(out, m.Name)
	}
	return out
}

// admitting lists this proxy, then the live proxies that admit the edge
// with this key: those of this proxy's cluster, then the others, by name
// within each. The order does not follow RTTs so that the list (and its
// digest) stays put while nothing changes.
func (p *Proxy) admitting(key [32]byte) []Member {
	self := p.self()
	others := p.health.liveOthers()
	var peers []Member
	p.mem.mu.Lock()
	for _, o := range others {
		// In CA mode every proxy admits an edge whose certificate is good.
		if s := p.mem.admits[o.Name]; p.certs != nil || s != nil && s.keys[key] {
			peers = append(peers, *o.Member)
		}
	}
	p.mem.mu.Unlock()
	slices.SortFunc(peers, func(a, b Member) int {
		return cmp.Or(cmp.Compare(b2i(a.Cluster != self.Cluster), b2i(b.Cluster != self.Cluster)), strings.Compare(a.Name, b.Name))
	})
	return append([]Member{self}, peers...)
}

// handleProxiesReq answers an edge of this proxy with the proxies that
// would admit it (admitting), at most MaxPeers and one packet.
func (p *Proxy) handleProxiesReq(src, dst netip.AddrPort, seq uint32, m *ProxiesReq) {
	e := p.edges[src.Addr()]
	if e == nil {
		return
	}
	all := p.admitting(e.PublicKey)
	list := Proxies{Peers: slices.Clip(all[:1])}
	for _, o := range all[1:] {
		if len(list.Peers) == MaxPeers {
			break
		}
		list.Peers = append(list.Peers, o)
		if b, err := AppendMsg(nil, 0, &list); err != nil || len(b) > maxProxiesPayload {
			list.Peers = list.Peers[:len(list.Peers)-1]
			break
		}
	}
	b, err := AppendMsg(nil, 0, &list)
	if err != nil {
		return
	}
	digest := max(fold32(fnvAdd(uint64(fnvOffset), b)), 1) // 0 is "none yet"
	reply := &Proxies{Digest: digest}
	if m.Digest != digest {
		reply.Peers = list.Peers
	}
	p.send(dst, src, seq, reply)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// admitsEdgeOf reports whether the member called name admits the edge at
// addr (one of this proxy's edges), as far as this proxy has heard.
func (p *Proxy) admitsEdgeOf(name string, addr netip.Addr) bool {
	if name == p.cfg.Self.Name {
		return true
	}
	e := p.edges[addr]
	if e == nil {
		return false
	}
	if p.certs != nil {
		// Any proxy admits an edge of a good certificate; one that
		// claims this edge's address with this edge's key has.
		return p.claimsSame(name, addr)
	}
	p.mem.mu.Lock()
	defer p.mem.mu.Unlock()
	s := p.mem.admits[name]
	return s != nil && s.keys[e.PublicKey]
}
