package router

import (
	"math/rand/v2"
	"sync/atomic"
)

// flowMap is a hash table of flows whose lookups take no lock. With a Go
// map every lookup needs at least a read lock, and RWMutex.RLock is an
// atomic add on a line that every core's peers share; established flows
// only read the table, so here they just load slot pointers. Writers
// (insert, delete, rebuild) are serialized by the owning shard's mutex.
//
// Open addressing with linear probing, on the key hash the router computes
// anyway for sharding. A deleted slot holds a tombstone so that probes go on
// past it, unless the next slot is empty, when no probe can need it. A
// rebuild copies the live flows into a fresh array that replaces the old
// one atomically (a reader still on the old array sees a valid, if stale,
// table). At most 3/4 of the slots are used, so every probe ends.
type flowMap struct {
	arr  atomic.Pointer[slots]
	rev  bool // keyed by rkey (a JAP's reply index) instead of key
	n    int  // live flows (writers only)
	used int  // live flows and tombstones (writers only)
}

type slots struct {
	s    []atomic.Pointer[flow]
	mask uint64
}

// tombstone marks a deleted slot; no key equals its zero key (fam is 0).
var tombstone = &flow{}

const minSlots = 8

func newSlots(n int) *slots {
	return &slots{s: make([]atomic.Pointer[flow], n), mask: uint64(n - 1)}
}

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
	for i := h; ; i++ {
		f := a.s[i&a.mask].Load()
		if f == nil {
			return nil
		}
		if m.hashOf(f) == h && *m.keyOf(f) == *k {
			return f
		}
	}
}

// put adds f, whose key must not be present. Lock held.
func (m *flowMap) put(f *flow) {
	a := m.arr.Load()
	if (m.used+1)*4 > len(a.s)*3 {
		a = m.rebuild(m.n + 1)
	}
	for i := m.hashOf(f); ; i++ {
		slot := &a.s[i&a.mask]
		x := slot.Load()
		if x == nil || x == tombstone {
			if x == nil {
				m.used++
			}
			slot.Store(f)
			m.n++
			return
		}
	}
}

// delete removes f (the very flow, not just its key). Lock held.
func (m *flowMap) delete(f *flow) bool {
	a := m.arr.Load()
	for i := m.hashOf(f); ; i++ {
		slot := &a.s[i&a.mask]
		x := slot.Load()
		if x == nil {
			return false
		}
		if x == f {
			if a.s[(i+1)&a.mask].Load() == nil {
				slot.Store(nil)
				m.used--
			} else {
				slot.Store(tombstone)
			}
			m.n--
			return true
		}
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
		f := old.s[i].Load()
		if f == nil || f == tombstone {
			continue
		}
		for j := m.hashOf(f); ; j++ {
			if slot := &a.s[j&a.mask]; slot.Load() == nil {
				slot.Store(f)
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
		if f := a.s[i].Load(); f != nil && f != tombstone {
			fn(f)
		}
	}
}

// sample returns up to n flows from a random place. Lock held.
func (m *flowMap) sample(out []*flow) []*flow {
	a := m.arr.Load()
	start := rand.Uint64()
	for i := uint64(0); i <= a.mask && len(out) < cap(out); i++ {
		if f := a.s[(start+i)&a.mask].Load(); f != nil && f != tombstone {
			out = append(out, f)
		}
	}
	return out
}
