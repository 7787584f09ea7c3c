package router

import (
	"sync"
	"sync/atomic"
)

// flowList indexes flows by what they serve, so that a target's JOIN with
// a new port, or its LEAVE, drops its flows without scanning (and locking)
// every shard: a target's JAP flows, or the IAP flows of a group that this
// proxy serves as its own JAP. A flow's list is fixed when the flow is
// made; the flow joins the list when it enters its table and leaves it when
// it leaves the table, both under its shard's lock. A list that is dropped
// is replaced first, and closed: a packet routed with the old target list
// in hand cannot add to it afterwards.
//
// Lock order: a shard's lock, then a list's.
type flowList struct {
	n      atomic.Int64 // flows in the list; SelectLoad reads it without the lock
	mu     sync.Mutex
	head   *flow // circular through iprev and inext; nil when empty
	closed bool  // being dropped: takes no more flows
}

// add puts f in the list, unless the list is closed.
func (l *flowList) add(f *flow) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.n.Add(1)
	if l.head == nil {
		f.iprev, f.inext = f, f
		l.head = f
	} else {
		tail := l.head.iprev
		f.iprev, f.inext = tail, l.head
		tail.inext, l.head.iprev = f, f
	}
	return true
}

// remove takes f out of the list, if it is in it.
func (l *flowList) remove(f *flow) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f.inext == nil {
		return
	}
	if f.inext == f {
		l.head = nil
	} else {
		f.iprev.inext, f.inext.iprev = f.inext, f.iprev
		if l.head == f {
			l.head = f.inext
		}
	}
	f.iprev, f.inext = nil, nil
	l.n.Add(-1)
}

func (l *flowList) first() *flow {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// dropList removes the flows of l from t, one shard lock at a time, and
// returns how many.
func (t *table) dropList(l *flowList) int {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	n := 0
	for f := l.first(); f != nil; f = l.first() {
		s := t.shard(f.h)
		s.mu.Lock()
		if t.removeLocked(s, f) {
			n++
		} else {
			l.remove(f) // not in the table (cannot happen): unlink it anyway, so that this ends
		}
		s.mu.Unlock()
	}
	return n
}
