package router

import (
	"math"
	"net/netip"
	"slices"
	"sync/atomic"
)

// target is a local target of a group in key form.
type target struct {
	addr   [16]byte
	port   uint16
	weight uint32 // in [1, MaxWeight]
	key    uint64 // addrHash(addr), for rendezvous hashing
	ap     netip.AddrPort
	// flows are the target's live JAP flows (flows.n for SelectLoad).
	// Each flow is in the list while it is in the table; the target list's
	// copies share it, until the target's port changes.
	flows *flowList
}

// MaxWeight is the largest weight of one target: the limit the router
// enforces, and the one overlay's messages and config's weight key check.
// It keeps load comparisons and weight sums well in range.
const MaxWeight = 1000

// targetSet is a group's local targets. The list is copied on change, so a
// reader may keep using a list it got under the lock; rr survives changes.
type targetSet struct {
	list []target
	rr   atomic.Uint32 // where SelectLoad's ties start
	// iapFlows are the group's IAP flows that this proxy serves as its own
	// JAP; replaced (under Router.gmu) when they are dropped.
	iapFlows *flowList
	// draining are targets out of selection (DrainTarget): no new flow
	// goes to them, their flows live on. Apart from list, so that the
	// data path's selection does not look at them at all.
	draining []target
}

// AddTargetWeight records a local target of g: its overlay address, the
// port its service listens on, and its weight (at least 1, at most
// MaxWeight), its share of new flows (under SelectRandom, of none)
// relative to the group's other local targets. It returns false when the
// target was already present (its port and weight are then updated; its
// flows to the old port are dropped, the others stay) or when its address
// family differs from the group's.
func (r *Router) AddTargetWeight(g Group, t netip.AddrPort, weight int) bool {
	g.Addr = g.Addr.Unmap()
	t = netip.AddrPortFrom(t.Addr().Unmap(), t.Port())
	if famOf(t.Addr()) != famOf(g.Addr) {
		return false
	}
	nt := target{addr: key16(t.Addr()), port: t.Port(), weight: uint32(min(max(weight, 1), MaxWeight)), ap: t}
	nt.key = addrHash(&nt.addr)
	r.gmu.Lock()
	ts := r.targets[g]
	if ts == nil {
		ts = &targetSet{iapFlows: new(flowList)}
		r.targets[g] = ts
	}
	ts.undrainLocked(r, g.Addr, nt.addr) // a join ends a drain
	i := slices.IndexFunc(ts.list, func(x target) bool { return x.addr == nt.addr })
	if i < 0 {
		nt.flows = new(flowList)
		ts.list = append(slices.Clip(ts.list), nt)
		r.byAddr[g.Addr]++
		r.gmu.Unlock()
		return true
	}
	old := ts.list[i]
	if old.port == nt.port && old.weight == nt.weight {
		r.gmu.Unlock()
		return false
	}
	nt.flows = old.flows
	var iapFlows *flowList
	if old.port != nt.port {
		nt.flows = new(flowList)
		iapFlows = ts.takeIAPFlows()
	}
	l := slices.Clone(ts.list)
	l[i] = nt
	ts.list = l
	r.gmu.Unlock()
	if old.port != nt.port {
		r.dropTargetFlows(old.flows, iapFlows)
	}
	return false
}

// RemoveTarget forgets a local target of g and drops the flows to it. It
// returns false when it was not a target of g.
func (r *Router) RemoveTarget(g Group, addr netip.Addr) bool {
	g.Addr = g.Addr.Unmap()
	a := key16(addr)
	r.gmu.Lock()
	ts := r.targets[g]
	if ts == nil {
		r.gmu.Unlock()
		return false
	}
	var old target
	if i := slices.IndexFunc(ts.draining, func(x target) bool { return x.addr == a }); i >= 0 {
		old = ts.draining[i]
		ts.draining = slices.Delete(slices.Clone(ts.draining), i, i+1)
	} else if i = slices.IndexFunc(ts.list, func(x target) bool { return x.addr == a }); i >= 0 {
		old = ts.list[i]
		ts.list = slices.Delete(slices.Clone(ts.list), i, i+1)
		r.uncountLocked(g.Addr)
	} else {
		r.gmu.Unlock()
		return false
	}
	iapFlows := ts.takeIAPFlows()
	if len(ts.list) == 0 && len(ts.draining) == 0 {
		delete(r.targets, g)
	}
	r.gmu.Unlock()
	r.dropTargetFlows(old.flows, iapFlows)
	return true
}

// uncountLocked takes a selectable target of the anycast IP a out of
// byAddr (echo answers for IPs with a selectable local target). r.gmu held.
func (r *Router) uncountLocked(a netip.Addr) {
	if r.byAddr[a]--; r.byAddr[a] <= 0 {
		delete(r.byAddr, a)
	}
}

// DrainTarget takes a local target of g out of selection: no new flow of
// any policy goes to it (with no other target here, a new flow is dropped
// with DropNoTarget, so that its IAP resolves again), while its flows go
// on both ways until they end or RemoveTarget drops them. Loads reports
// it Draining, with its live flows. A join (AddTargetWeight) or
// UndrainTarget puts it back. It returns false when addr is not a
// selectable target of g (not one, or draining already).
func (r *Router) DrainTarget(g Group, addr netip.Addr) bool {
	g.Addr = g.Addr.Unmap()
	a := key16(addr)
	r.gmu.Lock()
	defer r.gmu.Unlock()
	ts := r.targets[g]
	if ts == nil {
		return false
	}
	i := slices.IndexFunc(ts.list, func(x target) bool { return x.addr == a })
	if i < 0 {
		return false
	}
	// Both lists are copied: a packet may hold the old ones.
	ts.draining = append(slices.Clip(ts.draining), ts.list[i])
	ts.list = slices.Delete(slices.Clone(ts.list), i, i+1)
	r.uncountLocked(g.Addr)
	return true
}

// UndrainTarget puts a draining target of g back into selection, with its
// flows. It returns false when addr is not a draining target of g.
func (r *Router) UndrainTarget(g Group, addr netip.Addr) bool {
	g.Addr = g.Addr.Unmap()
	r.gmu.Lock()
	defer r.gmu.Unlock()
	ts := r.targets[g]
	return ts != nil && ts.undrainLocked(r, g.Addr, key16(addr))
}

// undrainLocked moves the draining target a of a group on the anycast IP
// ga back to the list. r.gmu held.
func (ts *targetSet) undrainLocked(r *Router, ga netip.Addr, a [16]byte) bool {
	i := slices.IndexFunc(ts.draining, func(x target) bool { return x.addr == a })
	if i < 0 {
		return false
	}
	t := ts.draining[i]
	ts.draining = slices.Delete(slices.Clone(ts.draining), i, i+1)
	ts.list = append(slices.Clip(ts.list), t)
	r.byAddr[ga]++
	return true
}

// takeIAPFlows replaces the set's IAP flows with an empty list and returns
// the old one. r.gmu held.
func (ts *targetSet) takeIAPFlows() *flowList {
	l := ts.iapFlows
	ts.iapFlows = new(flowList)
	return l
}

// dropTargetFlows removes a target's JAP flows, and the IAP flows of its
// group that this proxy serves itself, so that their next packet picks a
// target (and a JAP) again. Both come from their indexes: the cost is the
// flows dropped, not the tables' size.
func (r *Router) dropTargetFlows(jap, iap *flowList) {
	r.jap.dropList(jap)
	r.iap.dropList(iap)
}

// Targets lists the local targets of g that take new flows (not those
// draining).
func (r *Router) Targets(g Group) []netip.AddrPort {
	g.Addr = g.Addr.Unmap()
	r.gmu.RLock()
	defer r.gmu.RUnlock()
	ts := r.targets[g]
	if ts == nil {
		return nil
	}
	out := make([]netip.AddrPort, len(ts.list))
	for i, t := range ts.list {
		out[i] = t.ap
	}
	return out
}

// TargetLoad is a local target with its weight and live flows, for status.
type TargetLoad struct {
	Target netip.AddrPort `json:"target"`
	Weight int            `json:"weight"`
	Flows  int            `json:"flows"` // live JAP flows to it
	// Draining: out of selection (DrainTarget); its flows go on.
	Draining bool `json:"draining,omitempty"`
}

// Weight is the sum of the weights of g's local targets that take new
// flows (not those draining): what this proxy
// reports as its JAP.Weight for g (the overlay keeps no copy of weights).
func (r *Router) Weight(g Group) int {
	g.Addr = g.Addr.Unmap()
	r.gmu.RLock()
	defer r.gmu.RUnlock()
	w := 0
	if ts := r.targets[g]; ts != nil {
		for i := range ts.list {
			w += int(ts.list[i].weight)
		}
	}
	return w
}

// Loads lists g's local targets with their weights and live flows, those
// that take new flows first, then those draining.
func (r *Router) Loads(g Group) []TargetLoad {
	g.Addr = g.Addr.Unmap()
	r.gmu.RLock()
	defer r.gmu.RUnlock()
	ts := r.targets[g]
	if ts == nil {
		return nil
	}
	out := make([]TargetLoad, 0, len(ts.list)+len(ts.draining))
	for _, t := range ts.list {
		out = append(out, TargetLoad{Target: t.ap, Weight: int(t.weight), Flows: int(t.flows.n.Load())})
	}
	for _, t := range ts.draining {
		out = append(out, TargetLoad{Target: t.ap, Weight: int(t.weight), Flows: int(t.flows.n.Load()), Draining: true})
	}
	return out
}

// localSet is a group's local targets as a new flow from a sender sees
// them.
type localSet struct {
	ts     *targetSet // for SelectLoad's ties; nil when there are no targets
	list   []target
	n      int    // targets other than the sender
	weight uint32 // their summed weight
	ok     bool   // n > 0
	pol    Policy // the group's policy (SetPolicy)
	// iapFlows indexes the IAP flows for which this proxy is the JAP.
	iapFlows *flowList
}

// localTargets returns g's local targets, as sender sees them.
func (r *Router) localTargets(g Group, sender *[16]byte) localSet {
	var l localSet
	r.gmu.RLock()
	if l.ts = r.targets[g]; l.ts != nil {
		l.list, l.iapFlows = l.ts.list, l.ts.iapFlows
	}
	if len(r.policies) > 0 {
		l.pol = r.policies[g]
	}
	r.gmu.RUnlock()
	var w uint64
	for i := range l.list {
		if l.list[i].addr != *sender {
			l.n++
			w += uint64(l.list[i].weight)
		}
	}
	l.weight = uint32(min(w, math.MaxUint32))
	l.ok = l.n > 0
	return l
}
