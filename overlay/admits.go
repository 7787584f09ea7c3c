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

// admitTable is what each member admits, as far as this proxy has heard,
// by member number (health's roster): a few bytes per member, as every
// proxy of a large overlay has one for every other.
type admitTable struct {
	// inc: the member's incarnation when it sent keys, if known.
	inc   []uint32
	known bitset
	// keys: those of the members that admit some edge.
	keys map[int32]map[[32]byte]bool
	// pend: the parts of a newer list, until all have come.
	pend map[int32]*admitParts
	// asked: who was asked when, oldest first, while that matters (for
	// admitsRetry): a proxy asks every other at its start, and a map of
	// them all was most of a large overlay's heap then.
	asked []askBatch
}

// askBatch is the members asked at one time.
type askBatch struct {
	at  int64
	who bitset
}

// askedAt is when i was last asked, if lately.
func (t *admitTable) askedAt(i int32) (int64, bool) {
	for k := len(t.asked) - 1; k >= 0; k-- {
		if t.asked[k].who.has(i) {
			return t.asked[k].at, true
		}
	}
	return 0, false
}

// ask notes that i is asked now.
func (t *admitTable) ask(i int32, now int64) {
	if n := len(t.asked); n == 0 || t.asked[n-1].at != now {
		t.asked = append(t.asked, askBatch{at: now})
	}
	t.asked[len(t.asked)-1].who.set(i, true)
}

// forgetAsks drops the asks made admitsRetry or longer before now: they
// are as good as none.
func (t *admitTable) forgetAsks(now int64) {
	k := 0
	for k < len(t.asked) && now-t.asked[k].at >= int64(admitsRetry) {
		k++
	}
	if k > 0 {
		t.asked = slices.Delete(t.asked, 0, k)
	}
}

type admitParts struct {
	inc   uint32
	parts uint8
	got   map[uint8][][32]byte
}

// has reports whether i's keys are here, and of which incarnation.
func (t *admitTable) has(i int32) (uint32, bool) {
	if !t.known.has(i) {
		return 0, false
	}
	return t.inc[i], true
}

// admits reports whether member i admits the edge with key k.
func (t *admitTable) admits(i int32, k [32]byte) bool { return t.keys[i][k] }

// set takes i's keys, of incarnation inc.
func (t *admitTable) set(i int32, inc uint32, keys map[[32]byte]bool) {
	if int(i) >= len(t.inc) {
		t.inc = append(t.inc, make([]uint32, int(i)+1-len(t.inc))...)
	}
	t.inc[i] = inc
	t.known.set(i, true)
	if len(keys) == 0 {
		delete(t.keys, i)
		return
	}
	if t.keys == nil {
		t.keys = map[int32]map[[32]byte]bool{}
	}
	t.keys[i] = keys
}

// forget drops all that is known of i.
func (t *admitTable) forget(i int32) {
	t.known.set(i, false)
	delete(t.keys, i)
	delete(t.pend, i)
	for _, b := range t.asked {
		b.who.set(i, false)
	}
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
//
// A proxy that admits no edge asks nobody: it reads the keys only to
// answer its own edges (admitting, admitsEdgeOf). Every proxy of an
// overlay asking every other at start was two of every three messages of
// its first second (2×10⁸ at 10,000 proxies). A Reload that gives it edges
// makes it ask at its next Tick.
func (p *Proxy) admitsTick(now int64) {
	if len(p.edges) == 0 {
		return
	}
	gen := p.health.liveGen()
	p.mem.mu.Lock()
	if p.mem.admitsDone && p.mem.admitsGen == gen {
		p.mem.mu.Unlock()
		return
	}
	p.mem.mu.Unlock()
	var ask []netip.Addr
	others, gen := p.health.liveOthers()
	p.mem.mu.Lock()
	t := &p.mem.admits
	t.forgetAsks(now)
	done := true
	for _, m := range others {
		if inc, ok := t.has(m.idx); ok && inc >= m.inc {
			continue
		}
		done = false
		if at, ok := t.askedAt(m.idx); ok && now-at < int64(admitsRetry) {
			continue
		}
		t.ask(m.idx, now)
		ask = append(ask, m.Addr)
	}
	p.mem.admitsDone, p.mem.admitsGen = done, gen
	p.mem.mu.Unlock()
	self, inc := p.cfg.Self.Name, p.health.incarnation()
	for _, a := range ask {
		p.sendTo(a, 0, &AdmitsReq{From: self, Incarnation: inc})
	}
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
	i := p.health.index(m.From)
	p.mem.mu.Lock()
	defer p.mem.mu.Unlock()
	t := &p.mem.admits
	if inc, ok := t.has(i); ok && m.Incarnation <= inc {
		return // a repeat
	}
	pd := t.pend[i]
	if pd == nil || pd.inc != m.Incarnation || pd.parts != m.Parts {
		pd = &admitParts{inc: m.Incarnation, parts: m.Parts, got: map[uint8][][32]byte{}}
		if t.pend == nil {
			t.pend = map[int32]*admitParts{}
		}
		t.pend[i] = pd
	}
	pd.got[m.Part] = m.Keys
	if len(pd.got) < int(pd.parts) {
		return
	}
	keys := map[[32]byte]bool{}
	for _, ks := range pd.got {
		for _, k := range ks {
			keys[k] = true
		}
	}
	t.set(i, pd.inc, keys)
	delete(t.pend, i)
}

// forgetAdmits drops what a member admits (it restarted, perhaps with
// another file): the next admitsTick asks again.
func (p *Proxy) forgetAdmits(ms []Member) {
	idx := make([]int32, len(ms))
	for k, m := range ms {
		idx[k] = p.health.index(m.Name)
	}
	p.mem.mu.Lock()
	defer p.mem.mu.Unlock()
	for _, i := range idx {
		if i >= 0 {
			p.mem.admits.forget(i)
		}
	}
	p.mem.admitsDone = false
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
	others, _ := p.health.liveOthers()
	var peers []Member
	p.mem.mu.Lock()
	for _, o := range others {
		// In CA mode every proxy admits an edge whose certificate is good.
		if p.certs != nil || p.mem.admits.admits(o.idx, key) {
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
	i := p.health.index(name)
	p.mem.mu.Lock()
	defer p.mem.mu.Unlock()
	return i >= 0 && p.mem.admits.admits(i, e.PublicKey)
}
