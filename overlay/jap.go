package overlay

// The JAP role: targets join here, and this proxy tells the groups' RAPs
// (two-tier membership) and the other proxies (a target that moved).
//
// The router holds each target's address, port and weight, and each
// group's policy: what the data path needs. The JAP keeps only what the
// control plane adds: names, join epochs and keepalive deadlines.

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pias-net/pias/router"
)

// target is what the JAP knows of a target beyond what the router holds.
type target struct {
	name     string
	port     uint16
	lastSeen int64
	epoch    uint32        // of its last join here (see Join.Epoch)
	timeout  time.Duration // silent this long, it is dropped
}

// report is what a JAP last told a group's RAPs: the count and when.
type report struct {
	count  int
	weight int
	policy router.Policy
	at     int64
}

// imposedPolicy is a group's policy as its RAPs told this JAP after a
// conflict: joins that state another are refused until it expires (the
// RAPs' state is soft too).
type imposedPolicy struct {
	policy router.Policy
	until  int64
}

type noTargetKey struct {
	iap netip.Addr
	g   router.Group
}

// jap is the state of the JAP role.
type jap struct {
	mu       sync.Mutex
	targets  map[router.Group]map[netip.Addr]*target
	imposed  map[router.Group]imposedPolicy
	reported map[router.Group]*report
	// noTargetSent: when each IAP was last told this JAP has no target for
	// a group (the zero IAP: when the group was last withdrawn for that).
	noTargetSent map[noTargetKey]int64
	// again: when to register every local group again (0: no need).
	again int64
}

func (j *jap) init() {
	j.targets = map[router.Group]map[netip.Addr]*target{}
	j.imposed = map[router.Group]imposedPolicy{}
	j.reported = map[router.Group]*report{}
	j.noTargetSent = map[noTargetKey]int64{}
}

// groups lists the groups with targets here, in order.
func (j *jap) groups() []router.Group {
	j.mu.Lock()
	defer j.mu.Unlock()
	return sortedGroups(j.targets)
}

// count is how many targets joined here for g; for an echo pseudo-group,
// for any group of its IP.
func (j *jap) count(g router.Group) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := 0
	for lg, ts := range j.targets {
		if lg == g || (g.IsEcho() && lg.Addr == g.Addr) {
			n += len(ts)
		}
	}
	return n
}

// movedNotices is a TypeMoved for every target joined here.
func (j *jap) movedNotices() []*Moved {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []*Moved
	for _, g := range sortedGroups(j.targets) {
		for _, addr := range sortedAddrs(j.targets[g]) {
			t := j.targets[g][addr]
			out = append(out, &Moved{Group: g, Name: t.name, Target: addr, Epoch: t.epoch})
		}
	}
	return out
}

// joinedBefore reports whether the target at addr joined g here with an
// epoch older than epoch: then its join elsewhere is the newer one. (A
// proxy cut off for a while and the target's new JAP tell each other about
// the same target; only the stale record must go.)
func (j *jap) joinedBefore(addr netip.Addr, g router.Group, epoch uint32) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	t := j.targets[g][addr]
	return t != nil && int32(epoch-t.epoch) > 0 // serial-number order: wraps safely
}

type expiry struct {
	g    router.Group
	addr netip.Addr
}

// expired lists the targets silent past their timeout, in order.
func (j *jap) expired(now int64) []expiry {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []expiry
	for _, g := range sortedGroups(j.targets) {
		for _, addr := range sortedAddrs(j.targets[g]) {
			if t := j.targets[g][addr]; now-t.lastSeen > int64(t.timeout) {
				out = append(out, expiry{g, addr})
			}
		}
	}
	return out
}

// reregisterAt asks for every group to be registered again at when.
func (j *jap) reregisterAt(when int64) {
	j.mu.Lock()
	j.again = when
	j.mu.Unlock()
}

// refreshDue lists the groups whose registration is older than every, or
// all of them when a registration again was asked for and is due.
func (j *jap) refreshDue(now int64, every time.Duration) []router.Group {
	j.mu.Lock()
	defer j.mu.Unlock()
	again := j.again != 0 && now >= j.again
	if again {
		j.again = 0
	}
	var out []router.Group
	for _, g := range sortedGroups(j.reported) {
		if again || now-j.reported[g].at > int64(every) {
			out = append(out, g)
		}
	}
	return out
}

// handleJoin takes a target's join, or refuses it with the reason.
func (p *Proxy) handleJoin(src, dst netip.AddrPort, seq uint32, m *Join) {
	why := p.admit(src.Addr(), m.Group)
	if why == "" {
		why = p.join(src.Addr(), m)
	}
	if why != "" {
		p.refuseJoin(src, dst, seq, m, why)
		return
	}
	p.send(dst, src, seq, &JoinAck{Group: m.Group, Status: StatusOK})
}

// refuseJoin answers a join with why it was refused, and tells a person.
func (p *Proxy) refuseJoin(src, dst netip.AddrPort, seq uint32, m *Join, why string) {
	p.emit(Event{Kind: EventRefuse, Group: m.Group, Target: netip.AddrPortFrom(src.Addr(), m.Port), Name: m.Name, Reason: why})
	p.send(dst, src, seq, &JoinAck{Group: m.Group, Status: StatusRefused, Reason: why})
}

// handleKeepalive answers a target's keepalive: "unknown" if it is not a
// target here (it must join again).
func (p *Proxy) handleKeepalive(src, dst netip.AddrPort, seq uint32, m *Keepalive) {
	st := StatusOK
	if !p.keepalive(src.Addr(), m.Group) {
		st = StatusUnknown
	}
	p.send(dst, src, seq, &KeepaliveAck{Group: m.Group, Status: st})
}

// admit says why an edge may not join a group, or "" when it may.
func (p *Proxy) admit(addr netip.Addr, g router.Group) string {
	e := p.cfg.Edges[addr]
	if e == nil {
		return "not an edge of this proxy"
	}
	if !slices.Contains(e.Groups, g) {
		return fmt.Sprintf("edge %q may not join %s", e.Name, g)
	}
	return ""
}

// join takes a target into a group, or says why not: a group has one
// policy, stated alike by every target that joins it (the first one here
// sets it; a later one that states another is refused, so that nobody's
// traffic is split by a policy its owner did not choose).
func (p *Proxy) join(addr netip.Addr, m *Join) string {
	if m.Policy.Replicate == 1 {
		m.Policy.Replicate = 0 // one copy is no replication: the same policy
	}
	if m.Keepalive > p.cfg.TargetTimeout/3 {
		return fmt.Sprintf("keepalive %v is too slow for this proxy: its targets must send one at least every %v (its target_timeout is %v)",
			m.Keepalive, p.cfg.TargetTimeout/3, p.cfg.TargetTimeout)
	}
	now := p.clock.Now()
	pol := p.cfg.Router.Policy(m.Group)
	j := &p.jap
	j.mu.Lock()
	ts := j.targets[m.Group]
	if imp, ok := j.imposed[m.Group]; ok && len(ts) == 0 {
		if now < imp.until && imp.policy != m.Policy {
			j.mu.Unlock()
			return fmt.Sprintf("group %s has policy %v (its RAPs say, from targets that joined first elsewhere); this join asks for %v", m.Group, imp.policy, m.Policy)
		}
		delete(j.imposed, m.Group)
	}
	if len(ts) > 0 && pol != m.Policy {
		if _, self := ts[addr]; !self || len(ts) > 1 {
			j.mu.Unlock()
			return fmt.Sprintf("group %s has policy %v here; this join asks for %v", m.Group, pol, m.Policy)
		}
	}
	if ts == nil {
		ts = map[netip.Addr]*target{}
		j.targets[m.Group] = ts
	}
	t, known := ts[addr]
	if !known || t.port != m.Port {
		p.stats.joins.Add(1)
	}
	if !known {
		t = &target{}
		ts[addr] = t
	}
	t.name, t.port, t.lastSeen, t.epoch = m.Name, m.Port, now, m.Epoch
	t.timeout = p.targetTimeout(m.Keepalive)
	j.mu.Unlock()
	p.cfg.Router.SetPolicy(m.Group, m.Policy)
	p.cfg.Router.AddTargetWeight(m.Group, netip.AddrPortFrom(addr, m.Port), max(int(m.Weight), 1))
	if !known {
		p.emit(Event{Kind: EventJoin, Group: m.Group, Target: netip.AddrPortFrom(addr, m.Port), Name: m.Name})
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
	p.ctl.Lock()
	defer p.ctl.Unlock()
	now := p.clock.Now()
	key := noTargetKey{iap, g}
	j := &p.jap
	j.mu.Lock()
	if last, ok := j.noTargetSent[key]; ok && now-last < int64(noTargetEvery) {
		j.mu.Unlock()
		return // throttled before any other work: this comes from the data path
	}
	if len(j.noTargetSent) > 4096 {
		j.noTargetSent = map[noTargetKey]int64{} // bounded: forget old notices
	}
	j.noTargetSent[key] = now
	j.mu.Unlock()
	// The IAP found this JAP at a RAP: if our withdrawal was lost, the
	// RAPs list us until their entry expires, and every IAP's next resolve
	// brings it back here. Withdraw again (once per group per interval).
	withdraw := false
	if p.jap.count(g) == 0 {
		wkey := noTargetKey{netip.Addr{}, g}
		j.mu.Lock()
		if last, ok := j.noTargetSent[wkey]; !ok || now-last >= int64(noTargetEvery) {
			j.noTargetSent[wkey], withdraw = now, true
		}
		j.mu.Unlock()
	}
	p.sendTo(iap, 0, &NoTarget{Group: g})
	if withdraw {
		p.registerCount(g, 0, 0, p.cfg.Router.Policy(g))
	}
	p.flush()
}

const noTargetEvery = 200 * time.Millisecond

// tellMoved tells every other live proxy that a target joined a group here,
// so that a JAP it left (perhaps without a word: its path there may be what
// failed) drops it at once instead of after its keepalive timeout. Joins
// are rare, and proxies few.
func (p *Proxy) tellMoved(addr netip.Addr, m *Join) {
	moved := &Moved{Group: m.Group, Name: m.Name, Target: addr, Epoch: m.Epoch}
	for _, name := range p.Live() {
		if name == p.cfg.Self.Name {
			continue
		}
		if a := p.mem.addrOf(name); a.IsValid() {
			p.sendTo(a, 0, moved)
		}
	}
}

func (p *Proxy) keepalive(addr netip.Addr, g router.Group) bool {
	j := &p.jap
	j.mu.Lock()
	defer j.mu.Unlock()
	t := j.targets[g][addr]
	if t == nil {
		return false
	}
	t.lastSeen = p.clock.Now()
	return true
}

// leave drops a target of g, in the router too, and tells g's RAPs if the
// count moved enough.
func (p *Proxy) leave(addr netip.Addr, g router.Group, kind EventKind) {
	j := &p.jap
	j.mu.Lock()
	t := j.targets[g][addr]
	last := false
	if t != nil {
		delete(j.targets[g], addr)
		if len(j.targets[g]) == 0 {
			delete(j.targets, g)
			last = true
		}
	}
	j.mu.Unlock()
	if t == nil {
		return
	}
	p.cfg.Router.RemoveTarget(g, addr)
	if last {
		p.cfg.Router.SetPolicy(g, router.Policy{})
	}
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

// weight is the summed weight of g's targets here, from the router; for an
// echo pseudo-group, of every group of its IP.
func (p *Proxy) weight(g router.Group) int {
	if !g.IsEcho() {
		return p.cfg.Router.Weight(g)
	}
	w := 0
	for _, lg := range p.jap.groups() {
		if lg.Addr == g.Addr {
			w += p.cfg.Router.Weight(lg)
		}
	}
	return w
}

// report sends g's count to its RAPs if force or the rule says so, and
// remembers what it told them.
func (p *Proxy) report(g router.Group, force bool) {
	n, w := p.jap.count(g), p.weight(g)
	pol := p.cfg.Router.Policy(g)
	j := &p.jap
	j.mu.Lock()
	r := j.reported[g]
	last, lastW := 0, 0
	if r != nil {
		last, lastW = r.count, r.weight
	}
	if r != nil && r.policy != pol {
		force = true
	}
	if (r == nil && n == 0) || (!force && !shouldReport(last, n, p.cfg.Inaccuracy) && !shouldReport(lastW, w, p.cfg.Inaccuracy)) {
		j.mu.Unlock()
		if last != n {
			p.stats.registersSuppressed.Add(1)
		}
		return
	}
	if n == 0 {
		delete(j.reported, g)
	} else {
		j.reported[g] = &report{count: n, weight: w, policy: pol, at: p.clock.Now()}
	}
	j.mu.Unlock()
	p.registerCount(g, n, w, pol)
}

// registerCount tells each of g's RAPs that this JAP has n targets of total
// weight for g (n = 0 withdraws).
func (p *Proxy) registerCount(g router.Group, n, weight int, pol router.Policy) {
	raps := p.RAPs(g)
	p.emit(Event{Kind: EventRegister, Group: g, RAPs: raps, Name: p.cfg.Self.Name, JAPs: []router.JAP{{Addr: p.cfg.Self.Addr, Targets: n, Weight: weight}}})
	m := &Register{Group: g, JAP: p.cfg.Self.Name, Targets: uint32(n), TTL: p.cfg.RegisterTTL, Policy: pol, Weight: uint32(weight)}
	p.stats.registersSent.Add(uint64(len(raps)))
	for _, name := range raps {
		if name == p.cfg.Self.Name {
			// At once: a RAP answers resolves from its own table at once.
			p.handleRegister(p.cfg.Self.Addr, m)
			continue
		}
		p.sendTo(p.mem.addrOf(name), p.nextSeq(), m)
	}
}

// handlePolicy takes a RAP's word that a group has another policy than the
// targets joined here state: they are dropped, and their joins (and any
// like them) are refused while it holds. A target learns it at its next
// keepalive ("unknown"), joins again, and is refused with the reason.
func (p *Proxy) handlePolicy(rap netip.Addr, m *GroupPolicy) {
	if raps := p.RAPs(m.Group); len(raps) == 0 || p.mem.addrOf(raps[0]) != rap {
		return // only the group's arbiter decides (see registerLocked)
	}
	pol := p.cfg.Router.Policy(m.Group)
	j := &p.jap
	j.mu.Lock()
	ts := j.targets[m.Group]
	if len(ts) == 0 || pol == m.Policy {
		j.mu.Unlock()
		return
	}
	j.imposed[m.Group] = imposedPolicy{policy: m.Policy, until: p.clock.Now() + int64(p.cfg.RegisterTTL)}
	drop := sortedAddrs(ts)
	j.mu.Unlock()
	p.emit(Event{Kind: EventRefuse, Group: m.Group, Reason: fmt.Sprintf(
		"group %s has policy %v at its RAPs; dropping %d target(s) here that state %v", m.Group, m.Policy, len(drop), pol)})
	for _, addr := range drop {
		p.leave(addr, m.Group, EventRefuse)
	}
}
