package overlay

// The IAP role: resolving groups for the router through their RAPs.

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

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
	cut := p.health.unreachableAddrs()
	raps := p.reachableFirst(p.RAPs(g), cut)
	if len(raps) > 0 && cut[p.addrOf(raps[0])] {
		// Cut off from every RAP of the group (a link between clusters is
		// down): ask a proxy this one still reaches, which asks a RAP for
		// us. The one the hash of the group picks, so asks concentrate.
		var via []string
		for _, n := range p.Live() {
			if n != p.cfg.Self.Name && !cut[p.addrOf(n)] {
				via = append(via, n)
			}
		}
		if len(via) > 0 { // else nobody is reachable: keep trying the RAPs
			raps = RAPs(g, via, 1)
		}
	}
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
		japs, pol := p.japsLocked(g, p.cfg.Now())
		p.mu.Unlock()
		p.handleResolveReply(&Message{Type: TypeResolveReply, Seq: seq, Group: g, TTL: p.cfg.CacheTTL, JAPs: japs, Policy: pol})
		return
	}
	p.sendTo(p.addrOf(name), &m)
}

func (p *Proxy) handleResolveReply(m *Message) {
	if p.relayed(m) {
		return
	}
	p.mu.Lock()
	pr := p.pending[m.Group]
	if pr == nil || pr.seq != m.Seq {
		p.mu.Unlock()
		return
	}
	delete(p.pending, m.Group)
	p.mu.Unlock()
	japs := p.rankJAPs(m.JAPs)
	p.emit(Event{Kind: "resolved", Group: m.Group, JAPs: japs, Reason: m.Policy.String()})
	for _, pkt := range p.cfg.Router.ResolvedPolicy(m.Group, m.Policy, japs, m.TTL, p.cfg.Now()) {
		p.cfg.Send(pkt)
	}
}

// rankJAPs orders a group's JAPs by distance from this proxy, nearest
// first, and marks those of its cluster (proximity and scoping). The
// distance is the health probes' smoothed RTT; a JAP this proxy does not
// probe is as far as the members of its cluster that it does probe, on
// average; a JAP of a cluster it measures nothing of comes last (ordered
// as the RAP sent them). This proxy itself is at distance zero.
func (p *Proxy) rankJAPs(japs []router.JAP) []router.JAP {
	out := slices.Clone(japs)
	tbl := p.members.Load()
	rtt := map[string]time.Duration{}
	sum, cnt := map[string]time.Duration{}, map[string]int{}
	for _, mi := range p.Members() {
		if mi.RTT > 0 && mi.State != StateDead {
			rtt[mi.Name] = mi.RTT
			sum[mi.Cluster] += mi.RTT
			cnt[mi.Cluster]++
		}
	}
	const unknown = time.Duration(1<<63 - 1)
	dist := func(j router.JAP) time.Duration {
		m, ok := tbl.byAddr[j.Addr]
		switch {
		case j.Addr == p.cfg.Self.Addr:
			return 0
		case !ok:
			return unknown
		case rtt[m.Name] > 0:
			return rtt[m.Name]
		case cnt[m.Cluster] > 0:
			return sum[m.Cluster] / time.Duration(cnt[m.Cluster])
		}
		return unknown
	}
	for i := range out {
		m, ok := tbl.byAddr[out[i].Addr]
		out[i].SameCluster = out[i].Addr == p.cfg.Self.Addr || (ok && m.Cluster == p.cfg.Self.Cluster)
	}
	slices.SortStableFunc(out, func(a, b router.JAP) int { return cmp.Compare(dist(a), dist(b)) })
	return out
}

// reachableFirst orders proxy names so that those this proxy is cut off
// from come last (stable otherwise): others may still reach them, this
// proxy would only wait for its retry.
func (p *Proxy) reachableFirst(names []string, cut map[netip.Addr]bool) []string {
	out := slices.Clone(names)
	slices.SortStableFunc(out, func(a, b string) int {
		ca, cb := cut[p.addrOf(a)], cut[p.addrOf(b)]
		switch {
		case ca && !cb:
			return 1
		case cb && !ca:
			return -1
		}
		return 0
	})
	return out
}
