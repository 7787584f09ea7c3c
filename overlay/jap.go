package overlay

// The JAP role: targets join here, and this proxy tells the groups' RAPs
// (two-tier membership) and the other proxies (a target that moved).

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/pias-net/pias/router"
)

// report is what a JAP last told a group's RAPs: the count and when.
type report struct {
	count  int
	weight int
	policy router.Policy
	at     int64
}

func (p *Proxy) handleEdge(src, dst netip.AddrPort, m *Message) {
	reply := Message{Seq: m.Seq, Group: m.Group, Port: m.Port, Status: StatusOK}
	switch m.Type {
	case TypeJoin:
		reply.Type = TypeJoinAck
		why := p.admit(src.Addr(), m.Group)
		if why == "" {
			why = p.join(src.Addr(), m)
		}
		if why != "" {
			reply.Status, reply.Reason = StatusRefused, why
			p.emit(Event{Kind: "refuse", Group: m.Group, Target: netip.AddrPortFrom(src.Addr(), m.Port), Name: m.Name, Reason: why})
		}
	case TypeKeepalive:
		reply.Type = TypeKeepaliveAck
		if !p.keepalive(src.Addr(), m.Group) {
			reply.Status = StatusUnknown
		}
	case TypeLeave:
		reply.Type = TypeJoinAck
		p.leave(src.Addr(), m.Group, "leave")
	}
	p.send(dst, src, &reply)
}

// admit says why an edge may not join a group, or "" when it may.
func (p *Proxy) admit(addr netip.Addr, g router.Group) string {
	e := p.cfg.Edges[addr]
	if e == nil {
		return "not an edge of this proxy"
	}
	if !slices.Contains(e.Groups, g) {
		return fmt.Sprintf("edge %s may not join %s", e.Name, g)
	}
	return ""
}

// join takes a target into a group, or says why not: a group has one
// policy, stated alike by every target that joins it (the first one here
// sets it; a later one that states another is refused, so that nobody's
// traffic is split by a policy its owner did not choose).
func (p *Proxy) join(addr netip.Addr, m *Message) string {
	if m.Policy.Replicate == 1 {
		m.Policy.Replicate = 0 // one copy is no replication: the same policy
	}
	if m.Keepalive > p.cfg.TargetTimeout/3 {
		return fmt.Sprintf("keepalive %v is too slow for this proxy: its targets must send one at least every %v (its target_timeout is %v)",
			m.Keepalive, p.cfg.TargetTimeout/3, p.cfg.TargetTimeout)
	}
	p.mu.Lock()
	ts := p.local[m.Group]
	if imp, ok := p.imposed[m.Group]; ok && len(ts) == 0 {
		if p.cfg.Now() < imp.until && imp.policy != m.Policy {
			p.mu.Unlock()
			return fmt.Sprintf("group %s has policy %v (its RAPs say, from targets that joined first elsewhere); this join asks for %v", m.Group, imp.policy, m.Policy)
		}
		delete(p.imposed, m.Group)
	}
	if pol, ok := p.policy[m.Group]; ok && len(ts) > 0 && pol != m.Policy {
		if _, self := ts[addr]; !self || len(ts) > 1 {
			p.mu.Unlock()
			return fmt.Sprintf("group %s has policy %v here; this join asks for %v", m.Group, pol, m.Policy)
		}
	}
	if ts == nil {
		ts = map[netip.Addr]*target{}
		p.local[m.Group] = ts
	}
	if p.policy == nil {
		p.policy = map[router.Group]router.Policy{}
	}
	p.policy[m.Group] = m.Policy
	t, known := ts[addr]
	if !known || t.port != m.Port {
		p.stats.Joins++
	}
	if !known {
		t = &target{}
		ts[addr] = t
	}
	t.name, t.port, t.lastSeen, t.epoch, t.weight = m.Name, m.Port, p.cfg.Now(), m.Incarnation, int(m.Weight)
	t.timeout = p.targetTimeout(m.Keepalive)
	p.mu.Unlock()
	p.cfg.Router.SetPolicy(m.Group, m.Policy)
	p.cfg.Router.AddTargetWeight(m.Group, netip.AddrPortFrom(addr, m.Port), max(int(m.Weight), 1))
	if !known {
		p.emit(Event{Kind: "join", Group: m.Group, Target: netip.AddrPortFrom(addr, m.Port), Name: m.Name})
		p.register(m.Group, false)
		p.tellMoved(addr, m)
	}
	return ""
}

// targetTimeout is how long a target that sends keepalives every ka may
// stay silent: three lost in a row and the fourth late, at most the
// proxy's TargetTimeout (ka 0: a target that did not say; join refuses a
// ka above TargetTimeout/3).
func (p *Proxy) targetTimeout(ka time.Duration) time.Duration {
	if ka <= 0 {
		return p.cfg.TargetTimeout
	}
	return min(4*ka+ka/2, p.cfg.TargetTimeout)
}

// NoTarget tells the IAP at iap that this proxy has no target for g any
// more (the router dropped its packet for that): the IAP forgets this JAP
// for g and resolves again, instead of sending there until its cache
// expires. At most one notice per IAP and group every noTargetEvery.
func (p *Proxy) NoTarget(iap netip.Addr, g router.Group) {
	now := p.cfg.Now()
	key := noTargetKey{iap, g}
	p.mu.Lock()
	if last, ok := p.noTargetSent[key]; ok && now-last < int64(noTargetEvery) {
		p.mu.Unlock()
		return
	}
	if p.noTargetSent == nil || len(p.noTargetSent) > 4096 {
		p.noTargetSent = map[noTargetKey]int64{} // bounded: forget old notices
	}
	p.noTargetSent[key] = now
	// The IAP found this JAP at a RAP: if our withdrawal was lost, the
	// RAPs list us until their entry expires, and every IAP's next resolve
	// brings it back here. Withdraw again (once per group per interval).
	withdraw := false
	if n, _ := p.countLocked(g); n == 0 {
		wkey := noTargetKey{netip.Addr{}, g}
		if last, ok := p.noTargetSent[wkey]; !ok || now-last >= int64(noTargetEvery) {
			p.noTargetSent[wkey], withdraw = now, true
		}
	}
	p.mu.Unlock()
	p.sendTo(iap, &Message{Type: TypeNoTarget, Group: g})
	if withdraw {
		p.withdraw(g)
	}
}

// withdraw tells g's RAPs again that this JAP has no target for it, unless
// one joined meanwhile (regMu orders it with report's registrations).
func (p *Proxy) withdraw(g router.Group) {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	p.mu.Lock()
	n, _ := p.countLocked(g)
	pol := p.policy[g]
	p.mu.Unlock()
	if n == 0 {
		p.registerCount(g, 0, 0, pol)
	}
}

const noTargetEvery = 200 * time.Millisecond

type noTargetKey struct {
	iap netip.Addr
	g   router.Group
}

// joinedBefore reports whether the target at addr joined g here with an
// epoch older than epoch: then its join elsewhere is the newer one. (A
// proxy cut off for a while and the target's new JAP tell each other about
// the same target; only the stale record must go.)
func (p *Proxy) joinedBefore(addr netip.Addr, g router.Group, epoch uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.local[g][addr]
	return t != nil && int32(epoch-t.epoch) > 0 // serial-number order: wraps safely
}

// tellMoved tells every other live proxy that a target joined a group here,
// so that a JAP it left (perhaps without a word: its path there may be what
// failed) drops it at once instead of after its keepalive timeout. Joins
// are rare, and proxies few.
func (p *Proxy) tellMoved(addr netip.Addr, m *Message) {
	moved := Message{Type: TypeMoved, Group: m.Group, Name: m.Name, Target: addr, Incarnation: m.Incarnation}
	for _, name := range p.Live() {
		if name == p.cfg.Self.Name {
			continue
		}
		if a := p.addrOf(name); a.IsValid() {
			p.sendTo(a, &moved)
		}
	}
}

func (p *Proxy) keepalive(addr netip.Addr, g router.Group) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.local[g][addr]
	if t == nil {
		return false
	}
	t.lastSeen = p.cfg.Now()
	return true
}

func (p *Proxy) leave(addr netip.Addr, g router.Group, kind string) {
	p.mu.Lock()
	t := p.local[g][addr]
	if t != nil {
		delete(p.local[g], addr)
		if len(p.local[g]) == 0 {
			delete(p.local, g)
		}
	}
	if len(p.local[g]) == 0 {
		delete(p.policy, g)
	}
	p.mu.Unlock()
	if t == nil {
		return
	}
	p.cfg.Router.RemoveTarget(g, addr)
	p.emit(Event{Kind: kind, Group: g, Target: netip.AddrPortFrom(addr, t.port), Name: t.name})
	p.register(g, false)
}

// DefaultInaccuracy is ProxyConfig.Inaccuracy's default, in percent.
const DefaultInaccuracy = 25

// shouldReport is the two-tier membership rule: a JAP that last told a
// group's RAPs it had last targets and now has n tells them again when the
// count crosses zero (0→n or n→0) or drifts from last by more than pct
// percent of last.
func shouldReport(last, n int, pct float64) bool {
	if (last == 0) != (n == 0) {
		return true
	}
	if last == 0 {
		return false
	}
	return math.Abs(float64(n-last))*100 > pct*float64(last)
}

// register reports the group's target count here to its RAPs, and does the
// same for the echo pseudo-group of its IP so that IAPs can answer ping,
// each when the two-tier membership rule says so, or always with force
// (new RAPs, refresh).
func (p *Proxy) register(g router.Group, force bool) {
	p.report(g, force)
	p.report(router.EchoGroup(g.Addr), force)
}

// countLocked is how many targets joined here for g; for an echo
// pseudo-group, for any group of its IP.
func (p *Proxy) countLocked(g router.Group) (n, weight int) {
	for lg, ts := range p.local {
		if lg == g || (g.IsEcho() && lg.Addr == g.Addr) {
			n += len(ts)
			for _, t := range ts {
				weight += max(t.weight, 1)
			}
		}
	}
	return n, weight
}

// report sends g's count to its RAPs if force or the rule says so, and
// remembers what it told them.
func (p *Proxy) report(g router.Group, force bool) {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	p.mu.Lock()
	n, w := p.countLocked(g)
	pol := p.policy[g]
	r := p.reported[g]
	last, lastW := 0, 0
	if r != nil {
		last, lastW = r.count, r.weight
	}
	if r != nil && r.policy != pol {
		force = true
	}
	if (r == nil && n == 0) || (!force && !shouldReport(last, n, p.cfg.Inaccuracy) && !shouldReport(lastW, w, p.cfg.Inaccuracy)) {
		if last != n {
			p.stats.RegistersSuppressed++
		}
		p.mu.Unlock()
		return
	}
	if n == 0 {
		delete(p.reported, g)
	} else {
		p.reported[g] = &report{count: n, weight: w, policy: pol, at: p.cfg.Now()}
	}
	p.mu.Unlock()
	p.registerCount(g, n, w, pol)
}

func (p *Proxy) registerCount(g router.Group, n, weight int, pol router.Policy) {
	raps := p.RAPs(g)
	p.emit(Event{Kind: "register", Group: g, RAPs: raps, Name: p.cfg.Self.Name, JAPs: []router.JAP{{Addr: p.cfg.Self.Addr, Targets: n, Weight: weight}}})
	m := Message{Type: TypeRegister, Group: g, Name: p.cfg.Self.Name, Targets: uint32(n), TTL: p.cfg.RegisterTTL, Policy: pol, Weight: uint32(weight)}
	p.mu.Lock()
	p.stats.RegistersSent += uint64(len(raps))
	p.mu.Unlock()
	for _, name := range raps {
		if name == p.cfg.Self.Name {
			p.handleRegister(p.cfg.Self.Addr, &m)
			continue
		}
		p.mu.Lock()
		p.seq++
		m.Seq = p.seq
		p.mu.Unlock()
		p.sendTo(p.addrOf(name), &m)
	}
}

// imposedPolicy is a group's policy as its RAPs told this JAP after a
// conflict: joins that state another are refused until it expires (the
// RAPs' state is soft too).
type imposedPolicy struct {
	policy router.Policy
	until  int64
}

// handlePolicy takes a RAP's word that a group has another policy than the
// targets joined here state: they are dropped, and their joins (and any
// like them) are refused while it holds. A target learns it at its next
// keepalive ("unknown"), joins again, and is refused with the reason.
func (p *Proxy) handlePolicy(rap netip.Addr, m *Message) {
	if raps := p.RAPs(m.Group); len(raps) == 0 || p.addrOf(raps[0]) != rap {
		return // only the group's arbiter decides (see registerLocked)
	}
	p.mu.Lock()
	pol, ok := p.policy[m.Group]
	if !ok || pol == m.Policy {
		p.mu.Unlock()
		return
	}
	if p.imposed == nil {
		p.imposed = map[router.Group]imposedPolicy{}
	}
	p.imposed[m.Group] = imposedPolicy{policy: m.Policy, until: p.cfg.Now() + int64(p.cfg.RegisterTTL)}
	var drop []netip.Addr
	for addr := range p.local[m.Group] {
		drop = append(drop, addr)
	}
	p.mu.Unlock()
	p.emit(Event{Kind: "refuse", Group: m.Group, Reason: fmt.Sprintf(
		"group %s has policy %v at its RAPs; dropping %d target(s) here that state %v", m.Group, m.Policy, len(drop), pol)})
	for _, addr := range drop {
		p.leave(addr, m.Group, "refuse")
	}
}
