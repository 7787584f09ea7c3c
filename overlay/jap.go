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
	weight   uint32
	lastSeen int64
	epoch    uint32        // of its last join here (see Join.Epoch)
	timeout  time.Duration // silent this long, it is dropped
	// sets: its edge has the right to set the group's policy, and its join
	// stated the policy in force (see Proxy.join).
	sets bool
	// leaveAt: a leave that came too fast (see joinLimit) takes effect
	// then; 0: none. A join or keepalive before then cancels it.
	leaveAt int64
	// drainUntil: the target is draining (see handleDrain) and is dropped
	// then at the latest; 0: not draining. A join ends the drain.
	drainUntil int64
}

// Drain timeouts (Drain.Timeout): the default, what the operators
// expect of a graceful stop, and the most a target may ask for, so that a
// forgotten drain does not hold a target's flows here for ever.
const (
	DefaultDrainTimeout = 30 * time.Second
	MaxDrainTimeout     = time.Hour
)

// report is what a JAP last told a group's RAPs: the count and when.
type report struct {
	count  int
	weight int
	policy router.Policy
	stated bool
	at     int64
}

// imposedPolicy is a group's policy as its RAPs told this JAP after a
// conflict: joins that state another are refused until it expires (the
// RAPs' state is soft too).
type imposedPolicy struct {
	policy router.Policy
	until  int64
	// stated: targets here that stated another policy lost to it (they
	// were dropped, and a stated join that differs is refused). Otherwise
	// it is the policy followers here adopted: the group's own, for the
	// next target without the right to set one.
	stated bool
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
	// version: the Version of the last Register sent (Register.Version).
	version uint64
	// limits: the join and leave budget of each edge (joinLimit), shared
	// by its addresses (an edge with an IPv4 and an IPv6 address has one).
	limits map[*EdgePolicy]*bucket
	// moved: the TypeMoved notices waiting for the next Tick, by target
	// and group (the latest join's), and to which edge they belong.
	moved map[movedKey]movedNotice
	// tallies: per group with targets here, how many take new flows and
	// how many stated its policy, kept as targets come, drain and go, so
	// that a join or leave does not walk every target of its group.
	tallies map[router.Group]*tally
	// draining counts the targets draining here (drainTick has work).
	draining int
	// due: no target times out, leaves late or ends its drain before
	// then (0: not known); refreshAt: no registration is due for its
	// refresh before then (0: not known), for refreshEvery. Every Tick
	// walked every target and sorted every group before.
	due, refreshAt int64
	refreshEvery   time.Duration
}

// tally is what jap.tallies counts for one group.
type tally struct{ live, sets int }

// tallyLocked adds t's part to g's tally (d = 1), or takes it away (d = -1).
func (j *jap) tallyLocked(g router.Group, t *target, d int) {
	c := j.tallies[g]
	if c == nil {
		c = &tally{}
		j.tallies[g] = c
	}
	if t.drainUntil == 0 {
		c.live += d
	} else {
		j.draining += d
	}
	if t.sets {
		c.sets += d
	}
	if c.live == 0 && c.sets == 0 && len(j.targets[g]) == 0 {
		delete(j.tallies, g)
	}
}

func (j *jap) init() {
	j.targets = map[router.Group]map[netip.Addr]*target{}
	j.imposed = map[router.Group]imposedPolicy{}
	j.reported = map[router.Group]*report{}
	j.noTargetSent = map[noTargetKey]int64{}
	j.limits = map[*EdgePolicy]*bucket{}
	j.moved = map[movedKey]movedNotice{}
	j.tallies = map[router.Group]*tally{}
}

// nextVersion is the Version of the next Register: the wall clock, or one
// more than the last if the clock has not moved on (or went back).
func (j *jap) nextVersion(wall time.Time) uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.version = max(uint64(wall.UnixNano()), j.version+1)
	return j.version
}

// stated reports whether a target here stated g's policy in force with the
// right to (the caller holds mu).
func (j *jap) statedLocked(g router.Group) bool {
	c := j.tallies[g]
	return c != nil && c.sets > 0
}

// groups lists the groups with targets here, in order.
func (j *jap) groups() []router.Group {
	j.mu.Lock()
	defer j.mu.Unlock()
	return sortedGroups(j.targets)
}

// count is how many targets joined here for g and take new flows (those
// draining do not count: with none left, the JAP withdraws); for an echo
// pseudo-group, for any group of its IP.
func (j *jap) count(g router.Group) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !g.IsEcho() {
		if c := j.tallies[g]; c != nil {
			return c.live
		}
		return 0
	}
	n := 0
	for lg, c := range j.tallies {
		if lg.Addr == g.Addr {
			n += c.live
		}
	}
	return n
}

// movedNotices lists a MovedTarget for every target joined here.
func (j *jap) movedNotices() []MovedTarget {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []MovedTarget
	for _, g := range sortedGroups(j.targets) {
		for _, addr := range sortedAddrs(j.targets[g]) {
			t := j.targets[g][addr]
			out = append(out, MovedTarget{Group: g, Name: t.name, Target: addr, Epoch: t.epoch})
		}
	}
	return out
}

// JAPGroups lists the groups that targets joined here, sorted.
func (p *Proxy) JAPGroups() []router.Group { return p.jap.groups() }

// groupsOf lists the groups the target at addr joined here.
func (j *jap) groupsOf(addr netip.Addr) []router.Group {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []router.Group
	for _, g := range sortedGroups(j.targets) {
		if j.targets[g][addr] != nil {
			out = append(out, g)
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
	// EventExpire: silent; EventLeave: a delayed leave; EventDrained: a
	// drain past its timeout.
	kind EventKind
}

// expired lists the targets silent past their timeout, those whose
// delayed leave is due, and those whose drain timed out, in order.
func (j *jap) expired(now int64) []expiry {
	j.mu.Lock()
	defer j.mu.Unlock()
	// Find, then sort what was found: this runs every Tick, and sorting
	// every target of a busy JAP each time was most of its cost.
	if j.due != 0 && now < j.due {
		return nil
	}
	var out []expiry
	due := int64(math.MaxInt64)
	for g, ts := range j.targets {
		for addr, t := range ts {
			switch {
			case t.leaveAt != 0 && now >= t.leaveAt:
				out = append(out, expiry{g, addr, EventLeave})
			case now-t.lastSeen > int64(t.timeout):
				out = append(out, expiry{g, addr, EventExpire})
			case t.drainUntil != 0 && now >= t.drainUntil:
				out = append(out, expiry{g, addr, EventDrained})
			}
			// Keepalives only put lastSeen later: due stays early, safe.
			due = min(due, t.lastSeen+int64(t.timeout)+1)
			if t.leaveAt != 0 {
				due = min(due, t.leaveAt)
			}
			if t.drainUntil != 0 {
				due = min(due, t.drainUntil)
			}
		}
	}
	j.due = due
	slices.SortFunc(out, func(a, b expiry) int {
		if c := cmpGroup(a.g, b.g); c != 0 {
			return c
		}
		return a.addr.Compare(b.addr)
	})
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
	} else if j.refreshAt != 0 && every == j.refreshEvery && now <= j.refreshAt {
		// (A report made since is at a later time: it moves nothing up.)
		return nil
	}
	var out []router.Group
	oldest := int64(math.MaxInt64)
	for _, g := range sortedGroups(j.reported) {
		if again || now-j.reported[g].at > int64(every) {
			out = append(out, g)
		} else {
			oldest = min(oldest, j.reported[g].at)
		}
	}
	// The groups listed are reported again now, so none is due before
	// oldest+every; with none left, not before now+every.
	j.refreshAt, j.refreshEvery = min(oldest, now)+int64(every), every
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

// handleLeave takes a target's leave. One that comes faster than its
// edge's budget (joinLimit) is delayed, not refused: the target is dropped
// when the budget allows, unless it joins again first, so that a target
// that joins and leaves in a loop costs nothing past its budget. At the
// group's anycast address it is answered at once all the same; at this
// proxy's own address (a target that moved away), not.
func (p *Proxy) handleLeave(src, dst netip.AddrPort, seq uint32, m *Leave) {
	if p.leaveNow(src.Addr(), m.Group) {
		p.leave(src.Addr(), m.Group, EventLeave)
	}
	if dst.Addr() == m.Group.Addr {
		p.send(dst, src, seq, &JoinAck{Group: m.Group, Status: StatusOK})
	}
}

// leaveNow reports whether the target at addr may leave g now; if not, its
// leave is delayed until its edge's budget allows.
func (p *Proxy) leaveNow(addr netip.Addr, g router.Group) bool {
	e := p.edges[addr]
	j := &p.jap
	j.mu.Lock()
	defer j.mu.Unlock()
	t := j.targets[g][addr]
	switch {
	case t == nil || e == nil:
		return true // nothing to do (or not an edge: leave finds nothing)
	case t.leaveAt != 0:
		return false // already on its way out
	}
	now := p.clock.Now()
	ok, wait := j.take(e, now, p.cfg.JoinRate, p.joinBurst(e))
	if !ok {
		// Owe the token: the leave, when it happens, is a change like any
		// other, so a join/leave loop gets no more than its budget.
		j.limits[e].tokens--
		t.leaveAt = now + int64(wait)
		j.due = 0
	}
	return ok
}

// joinBurst is how many joins and leaves the edge e may make at once.
func (p *Proxy) joinBurst(e *EdgePolicy) int {
	return max(p.cfg.JoinBurst, 2*len(e.Groups))
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

// handleDrain takes a target's drain: it leaves g's selection for new flows
// here (in the router), stops counting in what this JAP registers (the
// last one draining withdraws the JAP at the RAPs, so IAPs stop sending
// new flows), and stays a target, keepalives and all, while its flows
// finish: it is dropped when they reach zero (drainTick) or its timeout
// passes (expired), whichever comes first. The answer carries its live
// flows. A drain's first message spends one of its edge's join budget,
// like a leave (a drain/join loop costs a join and a leave); a repeat only
// refreshes it as a keepalive would, and its timeout stays the first's.
func (p *Proxy) handleDrain(src, dst netip.AddrPort, seq uint32, m *Drain) {
	addr := src.Addr()
	now := p.clock.Now()
	j := &p.jap
	j.mu.Lock()
	t := j.targets[m.Group][addr]
	e := p.edges[addr]
	if t == nil || e == nil {
		j.mu.Unlock()
		p.send(dst, src, seq, &DrainAck{Group: m.Group, Status: StatusUnknown})
		return
	}
	t.lastSeen = now
	first := t.drainUntil == 0
	if first {
		if ok, wait := j.take(e, now, p.cfg.JoinRate, p.joinBurst(e)); !ok {
			j.mu.Unlock()
			why := fmt.Sprintf("edge %q joins, leaves and drains too fast: at most %g a second after a burst of %d; retry in %v",
				e.Name, p.cfg.JoinRate, p.joinBurst(e), wait.Round(time.Millisecond)+time.Millisecond)
			p.send(dst, src, seq, &DrainAck{Group: m.Group, Status: StatusRefused, Reason: why})
			return
		}
		timeout := m.Timeout
		if timeout <= 0 {
			timeout = DefaultDrainTimeout
		}
		j.tallyLocked(m.Group, t, -1)
		t.drainUntil = now + int64(min(timeout, MaxDrainTimeout))
		j.tallyLocked(m.Group, t, 1)
		j.due = 0
	}
	port, name := t.port, t.name
	j.mu.Unlock()
	target := netip.AddrPortFrom(addr, port)
	if first {
		p.cfg.Router.DrainTarget(m.Group, addr)
		p.emit(Event{Kind: EventDrain, Group: m.Group, Target: target, Name: name})
		p.register(m.Group, false)
	}
	flows := p.liveFlows(m.Group, addr)
	if flows == 0 {
		p.leaveWhy(addr, m.Group, EventDrained, "its flows ended")
	}
	p.send(dst, src, seq, &DrainAck{Group: m.Group, Status: StatusOK, Flows: uint32(flows)})
}

// liveFlows is the router's count of live flows to the local target addr
// of g.
func (p *Proxy) liveFlows(g router.Group, addr netip.Addr) int {
	for _, l := range p.cfg.Router.Loads(g) {
		if l.Target.Addr() == addr {
			return l.Flows
		}
	}
	return 0
}

// drainTick drops the draining targets whose flows have all ended.
func (p *Proxy) drainTick() {
	type key struct {
		g    router.Group
		addr netip.Addr
	}
	var draining []key
	j := &p.jap
	j.mu.Lock()
	if j.draining == 0 {
		j.mu.Unlock()
		return
	}
	for g, ts := range j.targets {
		for addr, t := range ts {
			if t.drainUntil != 0 {
				draining = append(draining, key{g, addr})
			}
		}
	}
	j.mu.Unlock()
	slices.SortFunc(draining, func(a, b key) int {
		if c := cmpGroup(a.g, b.g); c != 0 {
			return c
		}
		return a.addr.Compare(b.addr)
	})
	for _, d := range draining {
		if p.liveFlows(d.g, d.addr) == 0 {
			p.leaveWhy(d.addr, d.g, EventDrained, "its flows ended")
		}
	}
}

// admit says why an edge may not join a group, or "" when it may.
func (p *Proxy) admit(addr netip.Addr, g router.Group) string {
	e := p.edges[addr]
	if e == nil {
		return "not an edge of this proxy"
	}
	if !e.allows(g) {
		return fmt.Sprintf("edge %q may not join %s", e.Name, g)
	}
	return ""
}

// join takes a target into a group, or says why not.
//
// Weight: a join may ask for at most its edge's MaxWeight.
//
// Policy: a group has one policy. A target whose edge has the right to set
// it (EdgePolicy.SetsPolicy) states it: the first such target sets it, and
// a later one that states another is refused, so that nobody's traffic is
// split by a policy its owner did not choose. A target without the right
// takes the group's own: the policy in force here, or the one the group's
// RAPs told this proxy, or the default; what its file states is ignored.
// A stated policy overrides one that only such followers hold, here and
// at the group's arbiter RAP (see rap.register).
//
// Rate: a join that changes something (a new target, port, weight or
// policy) spends one of its edge's budget (joinLimit); past it, the join
// is refused, with when to retry.
func (p *Proxy) join(addr netip.Addr, m *Join) string {
	e := p.edges[addr]
	if m.Weight > e.maxWeight() {
		return fmt.Sprintf("weight %d is above %d, the most edge %q may ask for (max_weight of its [[edge]])", m.Weight, e.maxWeight(), e.Name)
	}
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
	imp, hasImp := j.imposed[m.Group]
	if hasImp && now >= imp.until {
		delete(j.imposed, m.Group)
		hasImp = false
	}
	t, known := ts[addr]
	others, othersStated := len(ts), j.statedLocked(m.Group)
	if known {
		others--
		othersStated = j.tallies[m.Group].sets > b2i(t.sets)
	}
	if e.SetsPolicy {
		switch {
		case others == 0 && hasImp && imp.stated && imp.policy != m.Policy:
			j.mu.Unlock()
			return fmt.Sprintf("group %s has policy %v (its RAPs say, from targets that joined first elsewhere); this join asks for %v", m.Group, imp.policy, m.Policy)
		case othersStated && pol != m.Policy:
			j.mu.Unlock()
			return fmt.Sprintf("group %s has policy %v here; this join asks for %v", m.Group, pol, m.Policy)
		}
	} else {
		switch {
		case len(ts) > 0:
			m.Policy = pol
		case hasImp:
			m.Policy = imp.policy
		default:
			m.Policy = router.Policy{}
		}
	}
	undrain := known && t.drainUntil != 0
	changes := !known || undrain || t.port != m.Port || t.weight != m.Weight || (len(ts) > 0 && pol != m.Policy)
	if changes {
		if ok, wait := j.take(e, now, p.cfg.JoinRate, p.joinBurst(e)); !ok {
			j.mu.Unlock()
			return fmt.Sprintf("edge %q joins and leaves too fast: at most %g a second after a burst of %d; retry in %v",
				e.Name, p.cfg.JoinRate, p.joinBurst(e), wait.Round(time.Millisecond)+time.Millisecond)
		}
	}
	if hasImp && !imp.stated && e.SetsPolicy {
		delete(j.imposed, m.Group) // a stated policy replaces the one followers adopted
	}
	if ts == nil {
		ts = map[netip.Addr]*target{}
		j.targets[m.Group] = ts
	}
	if !known || t.port != m.Port {
		p.stats.joins.Add(1)
	}
	if !known {
		t = &target{}
		ts[addr] = t
	} else {
		j.tallyLocked(m.Group, t, -1)
	}
	t.name, t.port, t.weight, t.lastSeen, t.epoch = m.Name, m.Port, m.Weight, now, m.Epoch
	t.sets, t.leaveAt, t.drainUntil = e.SetsPolicy, 0, 0
	t.timeout = p.targetTimeout(m.Keepalive)
	j.tallyLocked(m.Group, t, 1)
	j.due = 0
	if !known {
		j.moved[movedKey{addr, m.Group}] = movedNotice{key: e.PublicKey, t: MovedTarget{Group: m.Group, Name: m.Name, Target: addr, Epoch: m.Epoch}}
	}
	j.mu.Unlock()
	p.cfg.Router.SetPolicy(m.Group, m.Policy)
	p.cfg.Router.AddTargetWeight(m.Group, netip.AddrPortFrom(addr, m.Port), max(int(m.Weight), 1))
	switch {
	case !known:
		p.emit(Event{Kind: EventJoin, Group: m.Group, Target: netip.AddrPortFrom(addr, m.Port), Name: m.Name})
	case undrain:
		p.emit(Event{Kind: EventJoin, Group: m.Group, Target: netip.AddrPortFrom(addr, m.Port), Name: m.Name, Reason: "ends its drain"})
	}
	if changes {
		p.register(m.Group, false)
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
		p.registerCount(g, 0, 0, p.cfg.Router.Policy(g), false)
	}
	p.flush()
}

const noTargetEvery = 200 * time.Millisecond

type movedKey struct {
	target netip.Addr
	g      router.Group
}

// movedNotice is a target that joined here, to be told to the proxies that
// admit its edge (key).
type movedNotice struct {
	key [32]byte
	t   MovedTarget
}

// tellMoved tells the other live proxies that may hold them (those that
// admit their edges, or whose admitted edges this proxy has not heard yet)
// which targets joined here since the last Tick, so that a JAP a target
// left (perhaps without a word: its path there may be what failed) drops
// it at once instead of after its keepalive timeout. One Moved per proxy
// carries them all (as many as fit, see packMoved): a target that joins
// again and again within a tick is told once.
func (p *Proxy) tellMoved() {
	j := &p.jap
	j.mu.Lock()
	if len(j.moved) == 0 {
		j.mu.Unlock()
		return
	}
	pending := make([]movedNotice, 0, len(j.moved))
	for _, n := range j.moved {
		pending = append(pending, n)
	}
	clear(j.moved)
	j.mu.Unlock()
	slices.SortFunc(pending, func(a, b movedNotice) int {
		if c := cmpGroup(a.t.Group, b.t.Group); c != 0 {
			return c
		}
		return a.t.Target.Compare(b.t.Target)
	})
	others, _ := p.health.liveOthers()
	for _, o := range others {
		p.mem.mu.Lock()
		var keys map[[32]byte]bool
		if _, ok := p.mem.admits.has(o.idx); ok {
			keys = p.mem.admits.keys[o.idx]
			if keys == nil {
				keys = map[[32]byte]bool{} // it admits none
			}
		}
		var ts []MovedTarget
		for _, n := range pending {
			if keys == nil || keys[n.key] {
				ts = append(ts, n.t)
			}
		}
		p.mem.mu.Unlock()
		for _, m := range packMoved(ts) {
			p.sendTo(o.Addr, 0, m)
		}
	}
}

// packMoved packs ts into as few Moveds as hold them: at most MaxMoved
// targets and maxPackedPayload bytes each.
func packMoved(ts []MovedTarget) []*Moved {
	var out []*Moved
	for _, run := range packRuns(ts, MaxMoved, movedTargetLen) {
		out = append(out, &Moved{Targets: run})
	}
	return out
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
	p.leaveWhy(addr, g, kind, "")
}

// leaveWhy is leave with the reason its event gives.
func (p *Proxy) leaveWhy(addr netip.Addr, g router.Group, kind EventKind, why string) {
	j := &p.jap
	j.mu.Lock()
	t := j.targets[g][addr]
	last := false
	if t != nil {
		delete(j.targets[g], addr)
		j.tallyLocked(g, t, -1)
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
	p.emit(Event{Kind: kind, Group: g, Target: netip.AddrPortFrom(addr, t.port), Name: t.name, Reason: why})
	p.register(g, false)
}

// bucket is a token bucket: a budget of burst tokens, refilled at rate a
// second.
type bucket struct {
	tokens float64
	at     int64
}

// take spends one token of e's budget at now, or says how long until one
// is there. (The caller holds mu.) Budgets are per edge: the edges are the
// configured ones, so the map is bounded.
func (j *jap) take(e *EdgePolicy, now int64, rate float64, burst int) (bool, time.Duration) {
	b := j.limits[e]
	if b == nil {
		b = &bucket{tokens: float64(burst), at: now}
		j.limits[e] = b
	}
	b.tokens = min(float64(burst), b.tokens+float64(now-b.at)*rate/1e9)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * 1e9)
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
	stated := j.statedLocked(g)
	r := j.reported[g]
	last, lastW := 0, 0
	if r != nil {
		last, lastW = r.count, r.weight
	}
	if r != nil && (r.policy != pol || r.stated != stated) {
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
		j.reported[g] = &report{count: n, weight: w, policy: pol, stated: stated, at: p.clock.Now()}
	}
	j.mu.Unlock()
	p.registerCount(g, n, w, pol, stated)
}

// registerCount tells each of g's RAPs that this JAP has n targets of total
// weight for g (n = 0 withdraws), and its policy, stated or followed.
func (p *Proxy) registerCount(g router.Group, n, weight int, pol router.Policy, stated bool) {
	rs := p.rapSet(g)
	if p.cfg.OnEvent != nil {
		p.emit(Event{Kind: EventRegister, Group: g, RAPs: slices.Clone(rs.names), Name: p.cfg.Self.Name, JAPs: []router.JAP{{Addr: p.cfg.Self.Addr, Targets: n, Weight: weight}}})
	}
	m := &Register{Group: g, JAP: p.cfg.Self.Name, Targets: uint32(n), TTL: p.cfg.RegisterTTL, Policy: pol, Weight: uint32(weight), Stated: stated, Version: p.jap.nextVersion(p.clock.Wall())}
	p.stats.registersSent.Add(uint64(len(rs.names)))
	for i, name := range rs.names {
		if name == p.cfg.Self.Name {
			// At once: a RAP answers resolves from its own table at once.
			p.handleRegister(p.cfg.Self.Addr, m)
			continue
		}
		p.sendTo(rs.addrs[i], p.nextSeq(), m)
	}
}

// handlePolicy takes the group's arbiter RAP's word that a group has
// another policy than the one in force here. If a target here stated the
// policy in force (with the right to), it lost to another that did so
// first elsewhere: the targets are dropped, and joins that state the same
// are refused while it holds. A target learns it at its next keepalive
// ("unknown"), joins again, and is refused with the reason. If none did,
// the targets here are followers: they adopt the group's policy and stay.
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
	stated := j.statedLocked(m.Group)
	j.imposed[m.Group] = imposedPolicy{policy: m.Policy, until: p.clock.Now() + int64(p.cfg.RegisterTTL), stated: stated}
	drop := sortedAddrs(ts)
	j.mu.Unlock()
	if !stated {
		p.cfg.Router.SetPolicy(m.Group, m.Policy)
		p.register(m.Group, true)
		return
	}
	p.emit(Event{Kind: EventRefuse, Group: m.Group, Reason: fmt.Sprintf(
		"group %s has policy %v at its RAPs; dropping %d target(s) here that state %v", m.Group, m.Policy, len(drop), pol)})
	for _, addr := range drop {
		p.leave(addr, m.Group, EventRefuse)
	}
}
