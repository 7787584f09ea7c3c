package overlay

// The RAP role: which JAPs serve the groups this proxy is a rendezvous
// proxy of, and the answers to IAPs' resolves.

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pias-net/pias/router"
)

type rapEntry struct {
	name    string
	targets int
	weight  int
	policy  router.Policy
	stated  bool  // a target with the right to set the policy stated it
	since   int64 // first registered (while the entry lived)
	expires int64
	version uint64 // of the report it holds (Register.Version)
}

// tomb is what a RAP keeps of a JAP's withdrawal of a group: its version,
// so that a count the JAP sent before it and the links delivered after it
// is not taken (Register.Version), until the withdrawal would have expired.
type tomb struct {
	version uint64
	expires int64
}

// resolveRelay is a resolve this proxy passes on for a proxy cut off from
// the group's RAPs.
type resolveRelay struct {
	to      netip.AddrPort
	seq     uint32 // the asker's
	expires int64
}

// rap is the state of the RAP role.
type rap struct {
	mu      sync.Mutex
	entries map[router.Group]map[netip.Addr]*rapEntry
	// relayed: resolves this proxy passes on for proxies cut off from
	// RAPs, by the seq of its own ask.
	relayed map[uint32]resolveRelay
	// perJAP counts each JAP's entries (maxGroupsPerJAP).
	perJAP map[netip.Addr]int
	// tombs: the versioned withdrawals, by group and JAP; tombsOf counts
	// each JAP's, also at most maxGroupsPerJAP (past it a withdrawal is
	// kept no more: its order is lost, nothing else).
	tombs   map[router.Group]map[netip.Addr]tomb
	tombsOf map[netip.Addr]int
	// pols counts each group's entries by policy, so that the arbiter
	// looks for a conflict (a sort of every JAP of the group: milliseconds
	// at 10,000 JAPs) only when an entry holds another policy.
	pols map[router.Group]map[router.Policy]int
	// due: no entry or relay expires before then (0: not known), so that
	// expire walks a RAP's 10,000 entries only when one may be due.
	due int64
}

// dueBy notes that something expires at at.
func (r *rap) dueBy(at int64) {
	if r.due != 0 {
		r.due = min(r.due, at)
	}
}

func (r *rap) init() {
	r.entries = map[router.Group]map[netip.Addr]*rapEntry{}
	r.relayed = map[uint32]resolveRelay{}
	r.perJAP = map[netip.Addr]int{}
	r.pols = map[router.Group]map[router.Policy]int{}
	r.tombs = map[router.Group]map[netip.Addr]tomb{}
	r.tombsOf = map[netip.Addr]int{}
}

// bury keeps jap's withdrawal of g, of version v, until expires.
func (r *rap) bury(g router.Group, jap netip.Addr, v uint64, expires int64) {
	ts := r.tombs[g]
	if _, ok := ts[jap]; !ok {
		if v == 0 || r.tombsOf[jap] >= maxGroupsPerJAP {
			return
		}
		if ts == nil {
			ts = map[netip.Addr]tomb{}
			r.tombs[g] = ts
		}
		r.tombsOf[jap]++
	}
	ts[jap] = tomb{version: v, expires: expires}
	r.dueBy(expires)
}

// unbury forgets jap's withdrawal of g.
func (r *rap) unbury(g router.Group, jap netip.Addr) {
	ts := r.tombs[g]
	if _, ok := ts[jap]; !ok {
		return
	}
	delete(ts, jap)
	if len(ts) == 0 {
		delete(r.tombs, g)
	}
	if r.tombsOf[jap]--; r.tombsOf[jap] <= 0 {
		delete(r.tombsOf, jap)
	}
}

// stale reports whether a report of version v from jap about g is older
// than what this RAP last took from it: its entry, or its withdrawal.
func (r *rap) stale(g router.Group, jap netip.Addr, v uint64) bool {
	if v == 0 {
		return false
	}
	if e := r.entries[g][jap]; e != nil && v <= e.version {
		return true
	}
	t, ok := r.tombs[g][jap]
	return ok && v <= t.version
}

// countPolicy adds d entries of policy pol to g's count.
func (r *rap) countPolicy(g router.Group, pol router.Policy, d int) {
	c := r.pols[g]
	if c == nil {
		c = map[router.Policy]int{}
		r.pols[g] = c
	}
	if c[pol] += d; c[pol] <= 0 {
		delete(c, pol)
		if len(c) == 0 {
			delete(r.pols, g)
		}
	}
}

// othersDiffer reports whether an entry of g other than jap's (e, if it
// has one) holds another policy than pol.
func (r *rap) othersDiffer(g router.Group, e *rapEntry, pol router.Policy) bool {
	others, same := len(r.entries[g]), r.pols[g][pol]
	if e != nil {
		others--
		if e.policy == pol {
			same--
		}
	}
	return same < others
}

// maxGroupsPerJAP bounds the groups one JAP may have entries for at this
// RAP: a proxy that registers made-up groups fills no more.
const maxGroupsPerJAP = 16384

// drop removes jap's entry for g, and g when it has no JAP left.
func (r *rap) drop(g router.Group, jap netip.Addr) {
	japs := r.entries[g]
	if e, ok := japs[jap]; ok {
		r.countPolicy(g, e.policy, -1)
		delete(japs, jap)
		if r.perJAP[jap]--; r.perJAP[jap] <= 0 {
			delete(r.perJAP, jap)
		}
	}
	if len(japs) == 0 {
		delete(r.entries, g)
	}
}

// membersChanged drops the entries of groups this proxy is no RAP of any
// more among the live proxies names, and those of JAPs that are gone.
func (r *rap) membersChanged(self string, live func() []string, k int, gone []*Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for g, japs := range r.entries {
		if !slices.Contains(RAPs(g, live(), k), self) {
			for addr := range japs {
				r.drop(g, addr)
			}
			continue
		}
		for _, m := range gone {
			r.drop(g, m.Addr)
		}
	}
}

// expire drops soft state past its time.
func (r *rap) expire(now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.due != 0 && now < r.due {
		return
	}
	due := int64(math.MaxInt64)
	for g, japs := range r.entries {
		for addr, e := range japs {
			if e.expires <= now {
				r.drop(g, addr)
			} else {
				due = min(due, e.expires)
			}
		}
	}
	for g, ts := range r.tombs {
		for addr, t := range ts {
			if t.expires <= now {
				r.unbury(g, addr)
			} else {
				due = min(due, t.expires)
			}
		}
	}
	for seq, rl := range r.relayed {
		if now >= rl.expires {
			delete(r.relayed, seq)
		} else {
			due = min(due, rl.expires)
		}
	}
	r.due = due
}

// RAPTable returns what this proxy knows as RAP: each group's live JAPs.
func (p *Proxy) RAPTable() map[router.Group][]router.JAP {
	r := &p.rap
	r.mu.Lock()
	defer r.mu.Unlock()
	now := p.clock.Now()
	out := map[router.Group][]router.JAP{}
	for g := range r.entries {
		if japs, _ := r.japsLocked(g, now); len(japs) > 0 {
			out[g] = japs
		}
	}
	return out
}

// answer lists g's live JAPs and its policy.
func (r *rap) answer(g router.Group, now int64) ([]router.JAP, router.Policy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.japsLocked(g, now)
}

func (p *Proxy) handleRegister(jap netip.Addr, m *Register) {
	// Keep state only for groups this proxy is a RAP of by its own view:
	// a JAP whose view is behind (it has not heard of a proxy yet) would
	// leave an entry here that nobody asks for and nobody withdraws. The
	// JAP registers again when its view catches up.
	raps := p.rapsOf(m.Group)
	if m.Targets != 0 && !slices.Contains(raps, p.cfg.Self.Name) {
		return
	}
	p.stats.registers.Add(1)
	if most := 3 * p.cfg.RegisterTTL; m.TTL > most {
		// Soft state is refreshed every RegisterTTL/3: a longer life is
		// only a way to fill this table for weeks.
		capped := *m
		capped.TTL = most
		m = &capped
	}
	arbiter := len(raps) > 0 && raps[0] == p.cfg.Self.Name
	for _, c := range p.rap.register(jap, m, arbiter, p.clock.Now()) {
		p.emit(Event{Kind: EventRefuse, Group: m.Group, Name: c.name, Reason: fmt.Sprintf(
			"JAP %q has %s with %v, but the group has %v (from %q)", c.name, m.Group, c.was, c.policy, c.from)})
		// To this proxy too: the message is handled after this one.
		p.sendTo(c.to, 0, &GroupPolicy{Group: m.Group, Policy: c.policy})
	}
}

// policyNotice is a GroupPolicy the arbiter sends: the JAP at to (called
// name) has the group with policy was, and must take policy (from the JAP
// from).
type policyNotice struct {
	to         netip.Addr
	name, from string
	was        router.Policy
	policy     router.Policy
}

// register applies a registration. One group, one policy. The group's
// first RAP (by the hash over live proxies) is its arbiter, and there:
//
//   - between JAPs whose targets stated their policy (Register.Stated),
//     the one that registered first sets it: a later one that states
//     another is not registered, and is told the group's;
//   - a stated policy wins over one JAPs only follow: such a JAP is told
//     the stated one and keeps its entry (it adopts it and registers
//     again), whenever it registered;
//   - between JAPs that only follow, the first one's holds, and the later
//     one is told it (and keeps its entry too).
//
// register returns the notices to send. (One arbiter, so that two RAPs
// that heard two JAPs in opposite orders cannot each turn one away; the
// other RAPs keep every entry until the loser withdraws.)
func (r *rap) register(jap netip.Addr, m *Register, arbiter bool, now int64) []policyNotice {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stale(m.Group, jap, m.Version) {
		return nil // it crossed a later one on the way
	}
	japs := r.entries[m.Group]
	if m.Targets == 0 {
		r.drop(m.Group, jap)
		r.bury(m.Group, jap, m.Version, now+int64(m.TTL))
		return nil
	}
	// One lookup of the entry: a RAP takes a Register from each of its
	// 10,000 JAPs every 10 s, and the lookups were most of its cost.
	old := japs[jap]
	if old == nil && r.perJAP[jap] >= maxGroupsPerJAP {
		return nil // see maxGroupsPerJAP
	}
	since := now
	if old != nil {
		since = old.since
	}
	var out []policyNotice
	if arbiter && r.othersDiffer(m.Group, old, m.Policy) {
		for _, addr := range sortedAddrs(japs) {
			e := japs[addr]
			if addr == jap || e.expires <= now || e.targets == 0 || e.policy == m.Policy {
				continue
			}
			switch {
			case m.Stated && !e.stated:
				out = append(out, policyNotice{to: addr, name: e.name, from: m.JAP, was: e.policy, policy: m.Policy})
			case m.Stated && e.stated && e.since <= since:
				r.drop(m.Group, jap)
				return []policyNotice{{to: jap, name: m.JAP, from: e.name, was: m.Policy, policy: e.policy}}
			case !m.Stated && (e.stated || e.since <= since) && (len(out) == 0 || e.stated):
				// One notice, a stated policy's if there is one.
				out = append(out[:0], policyNotice{to: jap, name: m.JAP, from: e.name, was: m.Policy, policy: e.policy})
			}
		}
	}
	r.unbury(m.Group, jap)
	e := rapEntry{name: m.JAP, targets: int(m.Targets), weight: int(m.Weight), policy: m.Policy, stated: m.Stated, since: since, expires: now + int64(m.TTL), version: m.Version}
	switch {
	case old == nil:
		if japs == nil {
			japs = map[netip.Addr]*rapEntry{}
			r.entries[m.Group] = japs
		}
		r.perJAP[jap]++
		r.countPolicy(m.Group, m.Policy, 1)
		japs[jap] = &e
	default:
		if old.policy != m.Policy {
			r.countPolicy(m.Group, old.policy, -1)
			r.countPolicy(m.Group, m.Policy, 1)
		}
		*old = e // entries are not shared: japsLocked copies
	}
	r.dueBy(now + int64(m.TTL))
	return out
}

// japsLocked lists a group's live JAPs, sorted by address for stable
// answers, and the group's policy. JAPs agree on it, as each refuses joins
// that state another and followers adopt it; should two disagree all the
// same (targets that joined different JAPs at once), a stated policy wins,
// then the one with more targets, then the lower address.
func (r *rap) japsLocked(g router.Group, now int64) ([]router.JAP, router.Policy) {
	var out []router.JAP
	var pol router.Policy
	best := -1
	for addr, e := range r.entries[g] {
		if e.expires > now && e.targets > 0 {
			out = append(out, router.JAP{Addr: addr, Targets: e.targets, Weight: e.weight})
		}
	}
	slices.SortFunc(out, func(a, b router.JAP) int { return a.Addr.Compare(b.Addr) })
	for _, j := range out {
		e := r.entries[g][j.Addr]
		rank := e.targets
		if e.stated {
			rank += math.MaxInt32 + 1 // targets fit 32 bits (Register)
		}
		if rank > best {
			best, pol = rank, e.policy
		}
	}
	return out, pol
}

func (p *Proxy) handleResolve(src netip.AddrPort, seq uint32, m *Resolve) {
	if !m.Relayed && !slices.Contains(p.RAPs(m.Group), p.cfg.Self.Name) {
		// Not a RAP of the group: a proxy cut off from all its RAPs asks
		// through this one (see askRAP). Ask a RAP and relay the answer;
		// once only (hops), so views that differ cannot make a loop.
		p.relayResolve(src, seq, m)
		return
	}
	p.stats.resolvesAnswered.Add(1)
	japs, pol := p.rap.answer(m.Group, p.clock.Now())
	p.send(p.selfPort(), src, seq, &ResolveReply{Group: m.Group, Status: StatusOK, TTL: p.cfg.CacheTTL, JAPs: japs, Policy: pol})
}

// relayTTL bounds how long a relayed resolve waits for its answer.
const relayTTL = 2 * time.Second

func (p *Proxy) relayResolve(src netip.AddrPort, askSeq uint32, m *Resolve) {
	raps := p.reachableFirst(p.RAPs(m.Group), p.health.unreachableAddrs())
	if len(raps) == 0 || raps[0] == p.cfg.Self.Name {
		return
	}
	seq := p.nextSeq()
	r := &p.rap
	r.mu.Lock()
	r.relayed[seq] = resolveRelay{to: src, seq: askSeq, expires: p.clock.Now() + int64(relayTTL)}
	r.dueBy(p.clock.Now() + int64(relayTTL))
	r.mu.Unlock()
	p.sendTo(p.mem.addrOf(raps[0]), seq, &Resolve{Group: m.Group, Relayed: true})
}

// relayAnswer passes a RAP's answer on to the proxy this one asked for,
// and reports whether m was such an answer.
func (p *Proxy) relayAnswer(seq uint32, m *ResolveReply) bool {
	r := &p.rap
	r.mu.Lock()
	rl, ok := r.relayed[seq]
	if ok {
		delete(r.relayed, seq)
	}
	r.mu.Unlock()
	if !ok {
		return false
	}
	p.send(p.selfPort(), rl.to, rl.seq, m)
	return true
}
