package router

import (
	"encoding/binary"
	"math"
	"net/netip"
	"slices"
	"time"
)

// The IAP's knowledge of groups: a cache of each group's JAPs as a RAP
// reported them, and the packets of groups being resolved.

// resolveTimeout is how long packets wait for a group to be resolved.
const resolveTimeout = int64(3 * time.Second)

// cacheEntry is a group's JAP list as the IAP uses it.
type cacheEntry struct {
	japs    []uint32  // IPv4 overlay addresses of the JAPs that have targets, sorted
	pref    []japInfo // the same JAPs in the caller's order of preference
	pol     Policy    // the group's policy
	known   bool      // the RAP knew the group (its list was not empty)
	expires int64
	// A negative entry counts against the cap of the client whose packet
	// asked for it (src) until it goes: a client that asks for groups
	// that do not exist resolves at most Config.MaxResolvesPerSource of
	// them per NegativeTTL, however fast the RAPs answer.
	src     netip.Addr
	charged bool
}

// live reports whether some JAP has targets.
func (e *cacheEntry) live() bool { return len(e.japs) > 0 }

// pending holds a group's packets while it is resolved.
type pending struct {
	pkts    [][]byte   // copies, each with Headroom free before the packet
	bytes   int        // what pkts hold, headroom included
	src     netip.Addr // the client whose packet started the resolve
	started int64      // when the resolve was asked for
}

// cached returns g's unexpired cache entry, or nil.
func (r *Router) cached(g Group, now int64) *cacheEntry {
	r.gmu.RLock()
	e := r.cache[g]
	r.gmu.RUnlock()
	if e == nil || now >= e.expires {
		return nil
	}
	return e
}

// enqueue holds a copy of buf[p.off:p.end] until g is resolved, and
// records that (or a drop) in res. When the group was resolved after the
// caller's cache miss it returns the entry to route with instead.
//
// A new group is resolved only while fewer than maxRes groups are, and
// the packet's source is charged for fewer than maxResSrc (its groups
// being resolved, and those that turned out not to exist until their
// negative entries expire); every packet must fit in maxQBytes. A client
// that floods fresh groups thus holds at most its share, and asks the
// control plane for no more.
func (r *Router) enqueue(res *Result, g Group, buf []byte, p *parsed, now int64) *cacheEntry {
	size := Headroom + p.end - p.off
	src := addrOf(p.src, p.fam)
	r.gmu.Lock()
	if e := r.cache[g]; e != nil {
		if now < e.expires {
			r.gmu.Unlock()
			return e
		}
		r.uncacheLocked(g, e) // its charge goes now, not at Expire
	}
	q := r.queues[g]
	var timedOut int
	if q != nil && now-q.started > resolveTimeout {
		// The answer never came (Expire has not run yet): ask again, as
		// a new group.
		timedOut = len(q.pkts)
		r.unqueueLocked(g, q)
		q = nil
	}
	reason := DropNone
	switch {
	case q == nil && (len(r.queues) >= r.maxRes || r.bySrc[src] >= r.maxResSrc):
		reason = DropResolveLimit
	case q != nil && len(q.pkts) >= r.queueLimit:
		reason = DropQueueFull
	case r.qbytes+size > r.maxQBytes:
		reason = DropQueueBytes
	}
	if reason != DropNone {
		r.gmu.Unlock()
		r.st.drops[DropResolveTimeout].Add(uint64(timedOut))
		r.drop(res, reason).Group = g
		return nil
	}
	resolve := q == nil
	if resolve {
		q = &pending{src: src, started: now}
		r.queues[g] = q
		r.bySrc[src]++
	}
	pkt := make([]byte, size)
	copy(pkt[Headroom:], buf[p.off:p.end])
	q.pkts = append(q.pkts, pkt)
	q.bytes += size
	r.qbytes += size
	r.gmu.Unlock()
	r.st.drops[DropResolveTimeout].Add(uint64(timedOut))
	r.st.queued.Add(1)
	*res = Result{Action: Queued, Start: p.off, End: p.end, Group: g, Resolve: resolve}
	return nil
}

// unqueueLocked removes g's queue q and what it counts against the caps.
// The caller holds gmu.
func (r *Router) unqueueLocked(g Group, q *pending) {
	delete(r.queues, g)
	r.qbytes -= q.bytes
	r.unchargeLocked(q.src)
}

// uncacheLocked removes g's cache entry e, and its charge if it has one.
// The caller holds gmu.
func (r *Router) uncacheLocked(g Group, e *cacheEntry) {
	delete(r.cache, g)
	if e.charged {
		r.unchargeLocked(e.src)
	}
}

// unchargeLocked takes one off src's resolves. The caller holds gmu.
func (r *Router) unchargeLocked(src netip.Addr) {
	if n := r.bySrc[src] - 1; n > 0 {
		r.bySrc[src] = n
	} else {
		delete(r.bySrc, src)
	}
}

// ResolvedPolicy installs g's JAP list in the cache for ttl (an empty list
// means "no such group" and is kept for Config.NegativeTTL), then routes the
// packets that waited for it. It returns those to forward, each a slice
// holding exactly the packet (the copies of replicated datagrams included);
// the others are dropped and counted. New flows of g pick JAPs by pol: japs
// are in order of preference for SelectProximity, nearest first; the other
// selections do not depend on their order.
func (r *Router) ResolvedPolicy(g Group, pol Policy, japs []JAP, ttl time.Duration, now int64) [][]byte {
	g.Addr = g.Addr.Unmap()
	e := &cacheEntry{known: len(japs) > 0, pol: pol.normal()}
	for _, j := range japs {
		a := j.Addr.Unmap()
		if j.Targets <= 0 || !a.Is4() {
			continue
		}
		b := a.As4()
		addr := binary.BigEndian.Uint32(b[:])
		if slices.ContainsFunc(e.pref, func(x japInfo) bool { return x.addr == addr }) {
			continue // the first mention is the nearest
		}
		w := j.Weight
		if w <= 0 {
			w = j.Targets
		}
		e.pref = append(e.pref, japInfo{addr: addr, targets: clampU32(j.Targets), weight: clampU32(w), same: j.SameCluster})
		e.japs = append(e.japs, addr)
	}
	slices.Sort(e.japs) // for lookups; pref keeps the order
	if !e.known {
		ttl = r.negTTL
	}
	e.expires = now + int64(ttl)

	r.gmu.Lock()
	if old := r.cache[g]; old != nil {
		r.uncacheLocked(g, old)
	}
	r.cache[g] = e
	q := r.queues[g]
	if q != nil {
		delete(r.queues, g)
		r.qbytes -= q.bytes
		if e.known {
			r.unchargeLocked(q.src)
		} else {
			e.src, e.charged = q.src, true // the charge moves to the entry
		}
	}
	r.gmu.Unlock()
	if q == nil {
		return nil
	}
	var out [][]byte
	for _, pkt := range q.pkts {
		var p parsed
		if reason := p.parse(pkt, Headroom, len(pkt)); reason != DropNone {
			r.drop(&Result{}, reason) // cannot happen: it parsed when queued
			continue
		}
		var res Result
		if p.proto == ProtoICMP || p.proto == ProtoICMPv6 {
			r.echoAnycast(&res, pkt, &p, now, e)
		} else {
			r.ingress(&res, pkt, &p, now, e)
		}
		if res.Action == Forward {
			out = append(out, pkt[res.Start:res.End:res.End])
			for i := range res.Copies {
				c := make([]byte, res.End-res.Start)
				if start, end, ok := r.Copy(&res, i, c); ok {
					out = append(out, c[start:end:end])
				}
			}
		}
	}
	return out
}

func clampU32(n int) uint32 { return uint32(min(max(n, 0), math.MaxUint32)) }

// Invalidate forgets g's cached JAP list; the next new flow resolves it
// again. Flows keep their JAP.
func (r *Router) Invalidate(g Group) {
	g.Addr = g.Addr.Unmap()
	r.gmu.Lock()
	if e := r.cache[g]; e != nil {
		r.uncacheLocked(g, e)
	}
	r.gmu.Unlock()
}

// Expire removes idle flows, expired cache entries, and the queues of
// resolves that took too long (their packets are dropped, and the next
// packet of the group asks again).
func (r *Router) Expire(now int64) {
	r.expireFlows(now)
	var timedOut int
	r.gmu.Lock()
	for g, e := range r.cache {
		if now >= e.expires {
			r.uncacheLocked(g, e)
		}
	}
	for g, q := range r.queues {
		if now-q.started > resolveTimeout {
			timedOut += len(q.pkts)
			r.unqueueLocked(g, q)
		}
	}
	r.gmu.Unlock()
	r.st.drops[DropResolveTimeout].Add(uint64(timedOut))
}

// ResolveFailed drops the packets waiting for g (counted as
// resolve-timeout): the control plane gave up asking its RAPs. It installs
// no negative entry, since silence is not "no such group", so the next
// packet of g asks again. It reports how many packets it dropped.
func (r *Router) ResolveFailed(g Group) int {
	g.Addr = g.Addr.Unmap()
	r.gmu.Lock()
	q := r.queues[g]
	if q != nil {
		r.unqueueLocked(g, q)
	}
	r.gmu.Unlock()
	if q == nil {
		return 0
	}
	r.st.drops[DropResolveTimeout].Add(uint64(len(q.pkts)))
	return len(q.pkts)
}

// ForgetJAP forgets every cached JAP list that names jap (a proxy that
// died or restarted), so that the next new flow of those groups resolves
// again. It returns how many groups it forgot. Flows keep their JAP;
// SetProxies drops those whose JAP is no longer a proxy.
func (r *Router) ForgetJAP(jap netip.Addr) int {
	jap = jap.Unmap()
	if !jap.Is4() {
		return 0
	}
	b := jap.As4()
	a := binary.BigEndian.Uint32(b[:])
	n := 0
	r.gmu.Lock()
	for g, e := range r.cache {
		if _, found := slices.BinarySearch(e.japs, a); found {
			r.uncacheLocked(g, e)
			n++
		}
	}
	r.gmu.Unlock()
	return n
}

// ForgetJAPFor is what an IAP does when a JAP says it has no target for g
// any more: drop the cached JAP list of g if it names jap, and the flows of
// g that go to jap, so that the next packet of each resolves again and goes
// where targets are. It reports how many flows it dropped.
func (r *Router) ForgetJAPFor(g Group, jap netip.Addr) int {
	jap, g.Addr = jap.Unmap(), g.Addr.Unmap()
	if !jap.Is4() {
		return 0
	}
	b := jap.As4()
	a := binary.BigEndian.Uint32(b[:])
	r.gmu.Lock()
	if e := r.cache[g]; e != nil {
		if _, found := slices.BinarySearch(e.japs, a); found {
			r.uncacheLocked(g, e)
		}
	}
	r.gmu.Unlock()
	ga, fam := key16(g.Addr), famOf(g.Addr)
	return r.iap.deleteWhere(func(f *flow) bool {
		k := &f.key
		return k.dst == ga && k.dport == g.Port && k.proto == g.Proto && k.fam == fam && f.peer.Load() == a
	})
}
