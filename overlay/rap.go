package overlay

// The RAP role: which JAPs serve the groups this proxy is a rendezvous
// proxy of, and the answers to IAPs' resolves.

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/pias-net/pias/router"
)

// RAPTable returns what this proxy knows as RAP: each group's live JAPs.
func (p *Proxy) RAPTable() map[router.Group][]router.JAP {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.cfg.Now()
	out := map[router.Group][]router.JAP{}
	for g := range p.rap {
		if japs, _ := p.japsLocked(g, now); len(japs) > 0 {
			out[g] = japs
		}
	}
	return out
}

func (p *Proxy) handleRegister(jap netip.Addr, m *Message) {
	// Keep state only for groups this proxy is a RAP of by its own view:
	// a JAP whose view is behind (it has not heard of a proxy yet) would
	// leave an entry here that nobody asks for and nobody withdraws. The
	// JAP registers again when its view catches up.
	if m.Targets != 0 && !slices.Contains(p.RAPs(m.Group), p.cfg.Self.Name) {
		return
	}
	p.mu.Lock()
	p.stats.Registers++
	conflict := p.registerLocked(jap, m)
	p.mu.Unlock()
	if conflict == nil {
		return
	}
	p.emit(Event{Kind: "refuse", Group: m.Group, Name: m.Name, Reason: fmt.Sprintf(
		"JAP %s registers %s with %v, but the group has %v (from %s)", m.Name, m.Group, m.Policy, conflict.policy, conflict.name)})
	told := Message{Type: TypePolicy, Group: m.Group, Policy: conflict.policy}
	if jap == p.cfg.Self.Addr {
		// Our own registration: the caller holds regMu, which dropping
		// the targets takes again.
		go p.handlePolicy(jap, &told)
		return
	}
	p.sendTo(jap, &told)
}

// registerLocked applies a registration. One group, one policy: the JAPs
// that registered first set it. The group's first RAP (by the hash over
// live proxies) is its arbiter: there, a JAP whose targets state another
// policy is not registered, and registerLocked returns the entry it
// conflicts with. (One arbiter, so that two RAPs that heard two JAPs in
// opposite orders cannot each turn one away; the other RAPs keep every
// entry until the loser withdraws.)
func (p *Proxy) registerLocked(jap netip.Addr, m *Message) *rapEntry {
	japs := p.rap[m.Group]
	if m.Targets == 0 {
		delete(japs, jap)
		if len(japs) == 0 {
			delete(p.rap, m.Group)
		}
		return nil
	}
	now := p.cfg.Now()
	since := now
	if e := japs[jap]; e != nil {
		since = e.since
	}
	if raps := p.RAPs(m.Group); len(raps) > 0 && raps[0] == p.cfg.Self.Name {
		for addr, e := range japs {
			if addr != jap && e.expires > now && e.targets > 0 && e.policy != m.Policy && e.since <= since {
				delete(japs, jap)
				return e
			}
		}
	}
	if japs == nil {
		japs = map[netip.Addr]*rapEntry{}
		p.rap[m.Group] = japs
	}
	japs[jap] = &rapEntry{name: m.Name, targets: int(m.Targets), weight: int(m.Weight), policy: m.Policy, since: since, expires: now + int64(m.TTL)}
	return nil
}

// japsLocked lists a group's live JAPs, sorted by address for stable
// answers, and the group's policy. JAPs agree on it, as each refuses joins
// that state another; should two disagree all the same (targets that
// joined different JAPs at once), the one with more targets wins, then the
// lower address.
func (p *Proxy) japsLocked(g router.Group, now int64) ([]router.JAP, router.Policy) {
	var out []router.JAP
	var pol router.Policy
	best := -1
	for addr, e := range p.rap[g] {
		if e.expires > now && e.targets > 0 {
			out = append(out, router.JAP{Addr: addr, Targets: e.targets, Weight: e.weight})
		}
	}
	slices.SortFunc(out, func(a, b router.JAP) int { return a.Addr.Compare(b.Addr) })
	for _, j := range out {
		if e := p.rap[g][j.Addr]; e.targets > best {
			best, pol = e.targets, e.policy
		}
	}
	return out, pol
}

func (p *Proxy) handleResolve(src netip.AddrPort, m *Message) {
	if m.Port == 0 && !slices.Contains(p.RAPs(m.Group), p.cfg.Self.Name) && p.isProxy(src.Addr()) {
		// Not a RAP of the group: a proxy cut off from all its RAPs asks
		// through this one (see askRAP). Ask a RAP and relay the answer;
		// once only (hops), so views that differ cannot make a loop.
		p.relayResolve(src, m)
		return
	}
	p.mu.Lock()
	p.stats.ResolvesAnswered++
	japs, pol := p.japsLocked(m.Group, p.cfg.Now())
	p.mu.Unlock()
	reply := Message{Type: TypeResolveReply, Seq: m.Seq, Group: m.Group, Status: StatusOK, TTL: p.cfg.CacheTTL, JAPs: japs, Policy: pol}
	p.send(p.selfPort(), src, &reply)
}

// resolveRelay is a resolve this proxy passes on for a proxy cut off from
// the group's RAPs.
type resolveRelay struct {
	to      netip.AddrPort
	seq     uint32 // the asker's
	expires int64
}

// relayTTL bounds how long a relayed resolve waits for its answer.
const relayTTL = 2 * time.Second

func (p *Proxy) relayResolve(src netip.AddrPort, m *Message) {
	raps := p.reachableFirst(p.RAPs(m.Group), p.health.unreachableAddrs())
	if len(raps) == 0 || raps[0] == p.cfg.Self.Name {
		return
	}
	now := p.cfg.Now()
	p.mu.Lock()
	if p.relays == nil {
		p.relays = map[uint32]resolveRelay{}
	}
	for seq, r := range p.relays {
		if now >= r.expires {
			delete(p.relays, seq)
		}
	}
	p.seq++
	seq := p.seq
	p.relays[seq] = resolveRelay{to: src, seq: m.Seq, expires: now + int64(relayTTL)}
	p.mu.Unlock()
	p.sendTo(p.addrOf(raps[0]), &Message{Type: TypeResolve, Seq: seq, Group: m.Group, Port: 1})
}

// relayed passes a RAP's answer on to the proxy this one asked for, and
// reports whether m was such an answer.
func (p *Proxy) relayed(m *Message) bool {
	p.mu.Lock()
	r, ok := p.relays[m.Seq]
	if ok {
		delete(p.relays, m.Seq)
	}
	p.mu.Unlock()
	if !ok {
		return false
	}
	reply := *m
	reply.Seq = r.seq
	p.send(p.selfPort(), r.to, &reply)
	return true
}
