package overlay

// The RAP role: which JAPs serve the groups this proxy is a rendezvous
// proxy of, and the answers to IAPs' resolves.

import (
	"net/netip"
	"slices"

	"github.com/pias-net/pias/router"
)

// RAPTable returns what this proxy knows as RAP: each group's live JAPs.
func (p *Proxy) RAPTable() map[router.Group][]router.JAP {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.cfg.Now()
	out := map[router.Group][]router.JAP{}
	for g := range p.rap {
		if japs := p.japsLocked(g, now); len(japs) > 0 {
			out[g] = japs
		}
	}
	return out
}

func (p *Proxy) handleRegister(jap netip.Addr, m *Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Registers++
	japs := p.rap[m.Group]
	if m.Targets == 0 {
		delete(japs, jap)
		if len(japs) == 0 {
			delete(p.rap, m.Group)
		}
		return
	}
	if japs == nil {
		japs = map[netip.Addr]*rapEntry{}
		p.rap[m.Group] = japs
	}
	japs[jap] = &rapEntry{name: m.Name, targets: int(m.Targets), expires: p.cfg.Now() + int64(m.TTL)}
}

// japsLocked lists a group's live JAPs, sorted by address for stable answers.
func (p *Proxy) japsLocked(g router.Group, now int64) []router.JAP {
	var out []router.JAP
	for addr, e := range p.rap[g] {
		if e.expires > now && e.targets > 0 {
			out = append(out, router.JAP{Addr: addr, Targets: e.targets})
		}
	}
	slices.SortFunc(out, func(a, b router.JAP) int { return a.Addr.Compare(b.Addr) })
	return out
}

func (p *Proxy) handleResolve(src netip.AddrPort, m *Message) {
	p.mu.Lock()
	p.stats.ResolvesAnswered++
	japs := p.japsLocked(m.Group, p.cfg.Now())
	p.mu.Unlock()
	reply := Message{Type: TypeResolveReply, Seq: m.Seq, Group: m.Group, Status: StatusOK, TTL: p.cfg.CacheTTL, JAPs: japs}
	p.send(p.selfPort(), src, &reply)
}
