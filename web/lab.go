package web

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/lab"
)

// LabSource shows a whole in-process lab (pias demo --web): every
// proxy's view merged, and every edge where it says it is attached.
func LabSource(h *lab.Harness) Source { return labSource{h} }

type labSource struct{ h *lab.Harness }

func (s labSource) View(now time.Time) View {
	running := s.h.Running()
	names := slices.Sorted(maps.Keys(running))
	views := map[string]View{}
	for _, n := range names {
		views[n] = proxyView(running[n], now)
	}
	v := View{Node: "lab", Role: "lab", Time: now}
	groups := map[string]*GroupView{}
	for _, nd := range s.h.Lab.Nodes {
		if nd.Role != config.RoleProxy {
			continue
		}
		// A proxy's state is what the first other running proxy sees: a
		// killed one turns dead when the overlay notices, not before.
		pv := ProxyView{Name: nd.Name, Addr: nd.Address[0], Cluster: nd.Cluster, State: "dead", Flows: -1}
		if _, ok := running[nd.Name]; ok {
			pv.State = "alive"
		}
		for _, other := range names {
			if other == nd.Name {
				continue
			}
			if i := slices.IndexFunc(views[other].Proxies, func(p ProxyView) bool { return p.Name == nd.Name }); i >= 0 {
				pv.State = views[other].Proxies[i].State
				break
			}
		}
		if own, ok := views[nd.Name]; ok {
			for _, p := range own.Proxies {
				if p.Self {
					pv.Flows = p.Flows
				}
			}
		}
		v.Proxies = append(v.Proxies, pv)
	}
	for _, n := range names {
		pv := views[n]
		v.Links = append(v.Links, pv.Links...)
		for _, g := range pv.Groups {
			m := groups[g.Group]
			if m == nil {
				m = &GroupView{Group: g.Group, RAPs: g.RAPs, JAPs: []JAPView{}, Targets: []TargetView{}}
				groups[g.Group] = m
			}
			m.Policy = cmp.Or(m.Policy, g.Policy)
			for _, j := range g.JAPs {
				if !slices.ContainsFunc(m.JAPs, func(x JAPView) bool { return x.Name == j.Name }) {
					m.JAPs = append(m.JAPs, j)
				}
			}
			for _, t := range g.Targets {
				if t.Name != "" { // by name at its JAP; the RAPs' counts say it again
					m.Targets = append(m.Targets, t)
				}
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		g := groups[k]
		slices.SortFunc(g.JAPs, func(a, b JAPView) int { return cmp.Compare(a.Name, b.Name) })
		v.Groups = append(v.Groups, *g)
	}
	for _, nd := range s.h.Lab.Nodes {
		e := s.h.Edges[nd.Name]
		if nd.Role == config.RoleProxy || e == nil {
			continue
		}
		ev := edgeView(e, now).Edges[0]
		if _, ok := running[ev.Proxy]; !ok {
			ev.Proxy = "" // attached to a dead proxy: moving
		}
		v.Edges = append(v.Edges, ev)
	}
	return v
}

// WriteMetrics of a lab: each running proxy's member view, labelled by
// proxy, is what a person watching the demo wants; a real overlay is
// scraped node by node.
func (s labSource) WriteMetrics(m *Metrics) {
	running := s.h.Running()
	m.Family("pias_lab_proxies", "gauge", "Running proxies of the lab.")
	m.Sample(float64(len(running)))
}
