package overlay

// The IAP role: resolving groups for the router through their RAPs.

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pias-net/pias/router"
)

type pendingResolve struct {
	seq     uint32
	tries   int
	retryAt int64
	gaveUp  bool // tried maxTries times: askRAP drops it, and the router's queue
}

// iap is the state of the IAP role: the resolves under way. The router
// bounds them: it asks for a resolve only when it queues a new group,
// within its caps (router.Config.MaxResolves and MaxResolvesPerSource).
type iap struct {
	mu      sync.Mutex
	pending map[router.Group]*pendingResolve
}

func (i *iap) init() { i.pending = map[router.Group]*pendingResolve{} }

// due lists, in order, the groups whose resolve should be asked again, and
// those tried maxTries times: for these askRAP gives up.
func (i *iap) due(now int64, maxTries int) []router.Group {
	i.mu.Lock()
	defer i.mu.Unlock()
	var out []router.Group
	for _, g := range sortedGroups(i.pending) {
		if pr := i.pending[g]; now >= pr.retryAt {
			pr.gaveUp = pr.tries >= maxTries
			out = append(out, g)
		}
	}
	return out
}

// Resolve asks the group's RAP which JAPs serve it; the router holds the
// group's packets until the answer comes, this proxy gives up, or the
// router's queue times out. The router asks only when it queues a new
// group, so a resolve still under way starts its tries over: they serve
// the new queue.
func (p *Proxy) Resolve(g router.Group) {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	i := &p.iap
	i.mu.Lock()
	i.pending[g] = &pendingResolve{}
	i.mu.Unlock()
	p.askRAP(g)
	p.flush()
}

// askRAP sends the next try of a resolve: RAPs in rank order, round robin.
// After the last try it gives up, and the packets waiting for the group go
// at once, not at the router's timeout, with the slot they take of the
// router's caps; the next packet asks again.
func (p *Proxy) askRAP(g router.Group) {
	i := &p.iap
	i.mu.Lock()
	pr := i.pending[g]
	gaveUp := pr != nil && pr.gaveUp
	if gaveUp {
		delete(i.pending, g)
	}
	i.mu.Unlock()
	switch {
	case pr == nil:
		return
	case gaveUp:
		p.cfg.Router.ResolveFailed(g)
		return
	}
	cut := p.health.unreachableAddrs()
	raps := p.reachableFirst(p.RAPs(g), cut)
	if len(raps) > 0 && cut[p.mem.addrOf(raps[0])] {
		// Cut off from every RAP of the group (a link between clusters is
		// down): ask a proxy this one still reaches, which asks a RAP for
		// us. The one the hash of the group picks, so asks concentrate.
		var via []string
		for _, n := range p.Live() {
			if n != p.cfg.Self.Name && !cut[p.mem.addrOf(n)] {
				via = append(via, n)
			}
		}
		if len(via) > 0 { // else nobody is reachable: keep trying the RAPs
			raps = RAPs(g, via, 1)
		}
	}
	seq := p.nextSeq()
	i.mu.Lock()
	if pr = i.pending[g]; pr == nil {
		i.mu.Unlock()
		return
	}
	name := raps[pr.tries%len(raps)]
	pr.tries++
	pr.seq = seq
	pr.retryAt = p.clock.Now() + int64(p.cfg.ResolveRetry)
	i.mu.Unlock()
	p.stats.resolvesSent.Add(1)
	p.emit(Event{Kind: EventResolve, Group: g, RAPs: []string{name}})
	if name == p.cfg.Self.Name {
		// This proxy is a RAP of the group: answer from its own table.
		japs, pol := p.rap.answer(g, p.clock.Now())
		p.handleResolveReply(seq, &ResolveReply{Group: g, TTL: p.cfg.CacheTTL, JAPs: japs, Policy: pol})
		return
	}
	p.sendTo(p.mem.addrOf(name), seq, &Resolve{Group: g})
}

func (p *Proxy) handleResolveReply(seq uint32, m *ResolveReply) {
	if p.relayAnswer(seq, m) {
		return
	}
	i := &p.iap
	i.mu.Lock()
	pr := i.pending[m.Group]
	if pr == nil || pr.seq != seq {
		i.mu.Unlock()
		return
	}
	delete(i.pending, m.Group)
	i.mu.Unlock()
	japs := p.rankByDistance(m.JAPs)
	p.emit(Event{Kind: EventResolved, Group: m.Group, JAPs: japs, Reason: m.Policy.String()})
	for _, pkt := range p.cfg.Router.ResolvedPolicy(m.Group, m.Policy, japs, m.TTL, p.clock.Now()) {
		p.net.Forward(pkt)
	}
}

// rankByDistance orders a group's JAPs by distance from this proxy,
// nearest first, and marks those of its cluster (proximity and scoping).
// The distance is the health probes' smoothed RTT, as MemberInfo.RTT
// gives it: from fresh samples of watched members only, none that waited
// for a WireGuard handshake, so a member measured once long ago (or at
// its first contact) skews neither its own distance nor its cluster's. A
// JAP this proxy does not measure is as far as the members of its cluster
// that it does, on average; a JAP of a cluster it measures nothing of
// comes last (ordered as the RAP sent them). This proxy itself is at
// distance zero.
func (p *Proxy) rankByDistance(japs []router.JAP) []router.JAP {
	out := slices.Clone(japs)
	tbl := p.mem.table()
	rtt := map[string]time.Duration{}
	sum, cnt := map[string]time.Duration{}, map[string]int{}
	for _, mi := range p.Members() {
		if mi.RTT > 0 { // 0: unknown, stale or dead
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
		ca, cb := cut[p.mem.addrOf(a)], cut[p.mem.addrOf(b)]
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
