package router

import (
	"net/netip"
	"slices"
	"sync/atomic"
)

// target is a local target of a group in key form.
type target struct {
	addr [16]byte
	port uint16
	ap   netip.AddrPort
}

// targetSet is a group's local targets. The list is copied on change, so a
// reader may keep using a list it got under the lock; rr survives changes.
type targetSet struct {
	list []target
	rr   atomic.Uint32 // round-robin position
}

// AddTarget records a local target of g: its overlay address and the port
// its service listens on. It returns false when the target was already
// present (its port is then updated, and its flows to the old port are
// dropped) or when its address family differs from the group's.
func (r *Router) AddTarget(g Group, t netip.AddrPort) bool {
	g.Addr = g.Addr.Unmap()
	t = netip.AddrPortFrom(t.Addr().Unmap(), t.Port())
	if famOf(t.Addr()) != famOf(g.Addr) {
		return false
	}
	nt := target{addr: key16(t.Addr()), port: t.Port(), ap: t}
	r.gmu.Lock()
	ts := r.targets[g]
	if ts == nil {
		ts = &targetSet{}
		r.targets[g] = ts
	}
	i := slices.IndexFunc(ts.list, func(x target) bool { return x.addr == nt.addr })
	if i < 0 {
		ts.list = append(slices.Clip(ts.list), nt)
		r.byAddr[g.Addr]++
		r.gmu.Unlock()
		return true
	}
	old := ts.list[i]
	if old.port != nt.port {
		l := slices.Clone(ts.list)
		l[i] = nt
		ts.list = l
	}
	r.gmu.Unlock()
	if old.port != nt.port {
		r.dropTargetFlows(g, old.addr)
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
	i := -1
	if ts != nil {
		i = slices.IndexFunc(ts.list, func(x target) bool { return x.addr == a })
	}
	if i < 0 {
		r.gmu.Unlock()
		return false
	}
	ts.list = slices.Delete(slices.Clone(ts.list), i, i+1)
	if len(ts.list) == 0 {
		delete(r.targets, g)
	}
	if r.byAddr[g.Addr]--; r.byAddr[g.Addr] <= 0 {
		delete(r.byAddr, g.Addr)
	}
	r.gmu.Unlock()
	r.dropTargetFlows(g, a)
	return true
}

// dropTargetFlows removes the JAP flows of g to the target at addr, and the
// IAP flows of g that this proxy serves itself, so that their next packet
// picks a target again.
func (r *Router) dropTargetFlows(g Group, addr [16]byte) {
	ga, fam := key16(g.Addr), famOf(g.Addr)
	inGroup := func(k *flowKey) bool {
		return k.dst == ga && k.dport == g.Port && k.proto == g.Proto && k.fam == fam
	}
	r.jap.deleteWhere(func(f *flow) bool { return inGroup(&f.key) && f.rkey.src == addr })
	r.iap.deleteWhere(func(f *flow) bool { return inGroup(&f.key) && f.peer.Load() == r.self4 })
}

// Targets lists the local targets of g.
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

// localTargets returns g's local targets (the set, for round-robin) and
// whether one of them is not the sender.
func (r *Router) localTargets(g Group, sender *[16]byte) (*targetSet, []target, bool) {
	r.gmu.RLock()
	ts := r.targets[g]
	var list []target
	if ts != nil {
		list = ts.list
	}
	r.gmu.RUnlock()
	for i := range list {
		if list[i].addr != *sender {
			return ts, list, true
		}
	}
	return ts, list, false
}

// pick chooses, round-robin, a target of list that is not the sender.
func (ts *targetSet) pick(list []target, sender *[16]byte) *target {
	skip := -1
	for i := range list {
		if list[i].addr == *sender {
			skip = i
			break
		}
	}
	n := len(list)
	if skip >= 0 {
		n--
	}
	if n <= 0 {
		return nil
	}
	i := int((ts.rr.Add(1) - 1) % uint32(n))
	if skip >= 0 && i >= skip {
		i++
	}
	return &list[i]
}
