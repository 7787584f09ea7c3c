package overlay

// The IAP role: resolving groups for the router through their RAPs.

import (
	"net/netip"

	"github.com/pias-net/pias/router"
)

// Resolve asks the group's RAP which JAPs serve it; the router holds the
// group's packets until the answer comes (or its queue times out).
func (p *Proxy) Resolve(g router.Group) {
	p.mu.Lock()
	pr := p.pending[g]
	if pr == nil {
		pr = &pendingResolve{}
		p.pending[g] = pr
	}
	p.mu.Unlock()
	p.askRAP(g, pr)
}

// askRAP sends the next try of a resolve: RAPs in rank order, round robin.
func (p *Proxy) askRAP(g router.Group, pr *pendingResolve) {
	raps := p.RAPs(g)
	p.mu.Lock()
	name := raps[pr.tries%len(raps)]
	pr.tries++
	p.seq++
	pr.seq = p.seq
	pr.retryAt = p.cfg.Now() + int64(p.cfg.ResolveRetry)
	p.stats.ResolvesSent++
	seq := pr.seq
	p.mu.Unlock()
	p.emit(Event{Kind: "resolve", Group: g, RAPs: []string{name}})
	m := Message{Type: TypeResolve, Seq: seq, Group: g}
	if name == p.cfg.Self.Name {
		// This proxy is a RAP of the group: answer from its own table.
		p.mu.Lock()
		japs := p.japsLocked(g, p.cfg.Now())
		p.mu.Unlock()
		p.handleResolveReply(&Message{Type: TypeResolveReply, Seq: seq, Group: g, TTL: p.cfg.CacheTTL, JAPs: japs})
		return
	}
	p.send(p.selfPort(), netip.AddrPortFrom(p.byName[name].Addr, p.cfg.ControlPort), &m)
}

func (p *Proxy) handleResolveReply(m *Message) {
	p.mu.Lock()
	pr := p.pending[m.Group]
	if pr == nil || pr.seq != m.Seq {
		p.mu.Unlock()
		return
	}
	delete(p.pending, m.Group)
	p.mu.Unlock()
	p.emit(Event{Kind: "resolved", Group: m.Group, JAPs: m.JAPs})
	for _, pkt := range p.cfg.Router.Resolved(m.Group, m.JAPs, m.TTL, p.cfg.Now()) {
		p.cfg.Send(pkt)
	}
}
