package router

import (
	"math/rand/v2"
	"sync/atomic"
)

// flowMap is a hash table of flows whose lookups take no lock. With a Go
// map every lookup needs at least a read lock, and RWMutex.RLock is an
// atomic add on a line that every core's peers share; established flows
// only read the table, so here they just load slot words. Writers (insert,
// delete, rebuild) are serialized by the owning shard's mutex.
//
// Open addressing with linear probing, on the key hash the router computes
// anyway for sharding. Each slot keeps a tag (the key's hash) beside the
// flow pointer, so a probe compares tags in one cache line and dereferences
// only a flow whose tag matches. A deleted slot holds a tombstone tag so
// that probes go on past it, unless the next slot is empty, when no probe
// can need it. A rebuild copies the live flows into a fresh array that
// replaces the old one atomically (a reader still on the old array sees a
// valid, if stale, table). At most 3/4 of the slots are used, so every
// probe ends.
//
// A reader may see a slot between its tag and pointer stores; it checks the
// flow's key whenever the tag matches, so it can at worst miss a flow that
// is being inserted at that moment, as if it had looked a moment earlier.
type flowMap struct {
	arr  atomic.Pointer[slots]
	rev  bool // keyed by rkey (a JAP's reply index) instead of key
	n    int  // live flows (writers only)
	used int  // live flows and tombstones (writers only)
}

type slot struct {
	tag atomic.Uint64 // tagEmpty, tagDeleted, or tagOf(the key's hash)
	f   atomic.Pointer[flow]
}

type slots struct {
	s    []slot
	mask uint64
}

const (
	tagEmpty   = 0
	tagDeleted = 1
	minSlots   = 8
)

// tagOf makes a hash a tag: bit 1 set, so it is neither empty nor deleted.
func tagOf(h uint64) uint64 { return h | 2 }

// home is where a flow of hash h starts its probe: the hash's high half.
// Its low bits choose the shard (table.shard), so every flow of a shard
// shares them; starting there would crowd them onto a few slots.
func home(h uint64) uint64 { return h >> 32 }

func newSlots(n int) *slots { return &slots{s: make([]slot, n), mask: uint64(n - 1)} }

func (m *flowMap) init(rev bool) {
	m.rev = rev
	m.arr.Store(newSlots(minSlots))
}

func (m *flowMap) keyOf(f *flow) *flowKey {
	if m.rev {
		return &f.rkey
	}
	return &f.key
}

func (m *flowMap) hashOf(f *flow) uint64 {
	if m.rev {
		return f.rh
	}
	return f.h
}

// get returns the flow with key k, whose hash is h, or nil. It is safe
// without the lock, concurrently with writers.
func (m *flowMap) get(k *flowKey, h uint64) *flow {
	a := m.arr.Load()
	tag := tagOf(h)
	for i := home(h); ; i++ {
		s := &a.s[i&a.mask]
		switch t := s.tag.Load(); t {
		case tagEmpty:
			return nil
		case tag:
			if f := s.f.Load(); f != nil && *m.keyOf(f) == *k {
				return f
			}
		}
	}
}

// getAll appends to out, up to its capacity, the flows with key k (hash
// h): a JAP's replicated datagrams have a flow per target under the one
// client key. It is safe without the lock, as get is.
func (m *flowMap) getAll(k *flowKey, h uint64, out []*flow) []*flow {
	a := m.arr.Load()
	tag := tagOf(h)
	for i := home(h); len(out) < cap(out); i++ {
		s := &a.s[i&a.mask]
		switch t := s.tag.Load(); t {
		case tagEmpty:
			return out
		case tag:
			if f := s.f.Load(); f != nil && *m.keyOf(f) == *k {
				out = append(out, f)
			}
		}
	}
	return out
}

// put adds f, whose key must not be present unless f is a replica (see
// getAll). Lock held.
func (m *flowMap) put(f *flow) {
	a := m.arr.Load()
	if (m.used+1)*4 > len(a.s)*3 {
		a = m.rebuild(m.n + 1)
	}
	h := m.hashOf(f)
	for i := home(h); ; i++ {
		s := &a.s[i&a.mask]
		if t := s.tag.Load(); t == tagEmpty || t == tagDeleted {
			if t == tagEmpty {
				m.used++
			}
			s.f.Store(f) // pointer first: a reader that sees the tag finds the flow
			s.tag.Store(tagOf(h))
			m.n++
			return
		}
	}
}

// delete removes f (the very flow, not just its key). Lock held.
func (m *flowMap) delete(f *flow) bool {
	a := m.arr.Load()
	for i := home(m.hashOf(f)); ; i++ {
		s := &a.s[i&a.mask]
		if s.tag.Load() == tagEmpty {
			return false
		}
		if s.f.Load() != f {
			continue
		}
		if a.s[(i+1)&a.mask].tag.Load() == tagEmpty {
			s.tag.Store(tagEmpty)
			m.used--
		} else {
			s.tag.Store(tagDeleted)
		}
		s.f.Store(nil)
		m.n--
		return true
	}
}

// rebuild moves the live flows to an array sized for want flows at half
// load, without tombstones, and publishes it. Lock held.
func (m *flowMap) rebuild(want int) *slots {
	size := minSlots
	for size < 2*want {
		size *= 2
	}
	old, a := m.arr.Load(), newSlots(size)
	for i := range old.s {
		f := old.s[i].f.Load()
		if f == nil {
			continue
		}
		h := m.hashOf(f)
		for j := home(h); ; j++ {
			if s := &a.s[j&a.mask]; s.tag.Load() == tagEmpty {
				s.f.Store(f)
				s.tag.Store(tagOf(h))
				break
			}
		}
	}
	m.used = m.n
	m.arr.Store(a)
	return a
}

// each calls fn for every flow; fn may delete the flow it is given. Lock
// held.
func (m *flowMap) each(fn func(*flow)) {
	a := m.arr.Load()
	for i := range a.s {
		if f := a.s[i].f.Load(); f != nil {
			fn(f)
		}
	}
}

// sample appends up to cap(out) flows found from a random place. Lock held.
func (m *flowMap) sample(out []*flow) []*flow {
	a := m.arr.Load()
	start := rand.Uint64()
	for i := uint64(0); i <= a.mask && len(out) < cap(out); i++ {
		if f := a.s[(start+i)&a.mask].f.Load(); f != nil {
			out = append(out, f)
		}
	}
	return out
}
