package overlay

import (
	"cmp"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
)

// roster is the immutable list of proxies that health monitors, self
// included, each by a number that stays its own: a member learned later is
// appended (to a copy). Per-proxy state is kept in slices indexed by these
// numbers, so that proxies configured with the same members share one
// roster (MemberList) and a full mesh of N proxies holds N compact records
// per proxy, not N maps of N copies of every Member.
type roster struct {
	ms     []Member // by number
	byName map[string]int32
	byAddr map[netip.Addr]int32 // Member.Addr as it was given
	// rank is each member's place by name; order the members by name.
	rank, order []int32
	// cluster is each member's cluster, a number into clusterNames
	// (sorted); clusters lists each cluster's members by name, and rings
	// them by ringKey (tier 1 of health.go).
	cluster      []int32
	clusterNames []string
	clusterKeys  []string // "cluster:" and its name, as tier 2 weighs it
	clusters     [][]int32
	rings        [][]int32
	// ring is every member by ringKey, and ringAt each one's place on
	// it: a dead member is probed by the first live ones after it
	// (health.guardedLocked).
	ring, ringAt []int32
	// v4 and v6 are the overlay addresses (Addr, unmapped) as the router
	// looks them up; the last member with an address has it.
	v4 map[uint32]int32
	v6 map[[16]byte]int32
}

// at is byAddr[a], found by v4 when it has a's member: every message's
// sender is looked up, and at 10,000 members the generic key's hash and
// compare cost several times v4's.
func (r *roster) at(a netip.Addr) (int32, bool) {
	if a.Is4() {
		if i, ok := r.v4[addr4(a)]; ok && r.ms[i].Addr == a {
			return i, true
		}
	}
	i, ok := r.byAddr[a]
	return i, ok
}

// newRoster numbers ms in order, skipping repeated names.
func newRoster(ms []Member) *roster {
	r := &roster{byName: make(map[string]int32, len(ms)), byAddr: make(map[netip.Addr]int32, len(ms))}
	for _, m := range ms {
		if _, ok := r.byName[m.Name]; ok {
			continue
		}
		r.ms = append(r.ms, m)
		r.byName[m.Name] = int32(len(r.ms) - 1)
	}
	r.index()
	return r
}

// with is r and m, numbered len(r.ms).
func (r *roster) with(m Member) *roster {
	n := &roster{ms: append(slices.Clip(r.ms), m), byName: make(map[string]int32, len(r.ms)+1), byAddr: make(map[netip.Addr]int32, len(r.ms)+1)}
	for i, m := range n.ms {
		n.byName[m.Name] = int32(i)
	}
	n.index()
	return n
}

// index fills everything but ms and byName.
func (r *roster) index() {
	n := len(r.ms)
	r.order = make([]int32, n)
	for i := range r.order {
		r.order[i] = int32(i)
	}
	slices.SortFunc(r.order, func(a, b int32) int { return strings.Compare(r.ms[a].Name, r.ms[b].Name) })
	r.rank = make([]int32, n)
	for k, i := range r.order {
		r.rank[i] = int32(k)
	}
	r.v4, r.v6 = map[uint32]int32{}, map[[16]byte]int32{}
	for i, m := range r.ms {
		r.byAddr[m.Addr] = int32(i)
		switch a := m.Addr.Unmap(); {
		case a.Is4():
			r.v4[addr4(a)] = int32(i)
		case a.Is6():
			r.v6[a.As16()] = int32(i)
		}
	}
	names := map[string]bool{}
	for _, m := range r.ms {
		names[m.Cluster] = true
	}
	r.clusterNames = make([]string, 0, len(names))
	for c := range names {
		r.clusterNames = append(r.clusterNames, c)
	}
	slices.Sort(r.clusterNames)
	r.clusterKeys = make([]string, len(r.clusterNames))
	for i, c := range r.clusterNames {
		r.clusterKeys[i] = "cluster:" + c
	}
	num := make(map[string]int32, len(r.clusterNames))
	for i, c := range r.clusterNames {
		num[c] = int32(i)
	}
	r.cluster = make([]int32, n)
	r.clusters = make([][]int32, len(r.clusterNames))
	for _, i := range r.order {
		c := num[r.ms[i].Cluster]
		r.cluster[i] = c
		r.clusters[c] = append(r.clusters[c], i)
	}
	r.ring = slices.Clone(r.order)
	slices.SortFunc(r.ring, func(a, b int32) int {
		return cmp.Or(cmp.Compare(ringKey(r.ms[a].Name), ringKey(r.ms[b].Name)), strings.Compare(r.ms[a].Name, r.ms[b].Name))
	})
	r.ringAt = make([]int32, n)
	for k, i := range r.ring {
		r.ringAt[i] = int32(k)
	}
	r.rings = make([][]int32, len(r.clusters))
	for c, ms := range r.clusters {
		ring := slices.Clone(ms)
		slices.SortFunc(ring, func(a, b int32) int {
			return cmp.Or(cmp.Compare(ringKey(r.ms[a].Name), ringKey(r.ms[b].Name)), strings.Compare(r.ms[a].Name, r.ms[b].Name))
		})
		r.rings[c] = ring
	}
}

// bitset is a set of small numbers.
type bitset []uint64

// cowBits is a bit set whose snapshots share its words until it changes
// them: health's down set, which every change of the live proxies copied
// whole for the new view (1.25 KB at 10,000 members, at every message
// that brought a death: 7 % of the simulation's own thread in a partition
// of 10,000 proxies). A nil chunk is all zeros.
type cowBits struct {
	chunks []*cowChunk
	epoch  uint64 // chunks of an older epoch are shared with a snapshot
}

type cowChunk struct {
	epoch uint64
	w     [cowWords]uint64
}

const cowWords = 8 // a cache line of bits

func (b cowBits) has(i int32) bool { return b.word(int(i>>6))&(1<<(uint(i)&63)) != 0 }

// word is the k-th 64 bits.
func (b cowBits) word(k int) uint64 {
	if c := k / cowWords; c < len(b.chunks) && b.chunks[c] != nil {
		return b.chunks[c].w[k%cowWords]
	}
	return 0
}

// set puts i in b or takes it out, copying its chunk first if a snapshot
// shares it.
func (b *cowBits) set(i int32, on bool) {
	k := int(i >> 6)
	c := k / cowWords
	if c >= len(b.chunks) {
		if !on {
			return
		}
		b.chunks = append(b.chunks, make([]*cowChunk, c+1-len(b.chunks))...)
	}
	ch := b.chunks[c]
	switch {
	case ch == nil && !on:
		return
	case ch == nil:
		ch = &cowChunk{epoch: b.epoch}
		b.chunks[c] = ch
	case ch.epoch != b.epoch:
		cp := *ch
		cp.epoch = b.epoch
		ch = &cp
		b.chunks[c] = ch
	}
	if on {
		ch.w[k%cowWords] |= 1 << (uint(i) & 63)
	} else {
		ch.w[k%cowWords] &^= 1 << (uint(i) & 63)
	}
}

// snapshot is b as it is now, never changed: b copies a chunk before it
// next changes it.
func (b *cowBits) snapshot() cowBits {
	b.epoch++
	return cowBits{chunks: slices.Clone(b.chunks)}
}

func (b cowBits) count() int {
	n := 0
	for _, ch := range b.chunks {
		if ch != nil {
			for _, w := range ch.w {
				n += bits.OnesCount64(w)
			}
		}
	}
	return n
}

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

// word is the k-th 64 bits (0 past the end).
func (b bitset) word(k int) uint64 {
	if k < len(b) {
		return b[k]
	}
	return 0
}

func (b bitset) has(i int32) bool {
	w := int(i >> 6)
	return w < len(b) && b[w]&(1<<(uint(i)&63)) != 0
}

// set puts i in b (growing it) or takes it out.
func (b *bitset) set(i int32, on bool) {
	w := int(i >> 6)
	if w >= len(*b) {
		if !on {
			return
		}
		*b = append(*b, make(bitset, w+1-len(*b))...)
	}
	if on {
		(*b)[w] |= 1 << (uint(i) & 63)
	} else {
		(*b)[w] &^= 1 << (uint(i) & 63)
	}
}

// next is the least member of b at or above i, or -1.
func (b bitset) next(i int32) int32 {
	w := int(i >> 6)
	if w >= len(b) || i < 0 {
		return -1
	}
	x := b[w] >> (uint(i) & 63)
	if x != 0 {
		return i + int32(bits.TrailingZeros64(x))
	}
	for w++; w < len(b); w++ {
		if b[w] != 0 {
			return int32(w*64 + bits.TrailingZeros64(b[w]))
		}
	}
	return -1
}

// nextNotIn is the least member of b, not of c, at or above i, or -1.
func (b bitset) nextNotIn(c bitset, i int32) int32 {
	w := int(i >> 6)
	if w >= len(b) || i < 0 {
		return -1
	}
	word := func(w int) uint64 {
		if w < len(c) {
			return b[w] &^ c[w]
		}
		return b[w]
	}
	x := word(w) >> (uint(i) & 63)
	if x != 0 {
		return i + int32(bits.TrailingZeros64(x))
	}
	for w++; w < len(b); w++ {
		if x := word(w); x != 0 {
			return int32(w*64 + bits.TrailingZeros64(x))
		}
	}
	return -1
}

// count is how many members b has.
func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}
