package web

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/router"
)

// View is what the map draws: one node's picture of the overlay
// (GET /api/view).
type View struct {
	Node    string      `json:"node"` // whose view
	Role    string      `json:"role"`
	Time    time.Time   `json:"time"`
	Proxies []ProxyView `json:"proxies"`
	Links   []Link      `json:"links"`
	Groups  []GroupView `json:"groups"`
	Edges   []EdgeView  `json:"edges"`
}

// ProxyView is a proxy as the viewing node sees it.
type ProxyView struct {
	Name    string     `json:"name"`
	Addr    netip.Addr `json:"addr"`
	Cluster string     `json:"cluster"`
	// State: "alive", "suspect", "dead", "joining" or "unreachable"
	// (alive for others, cut off from the viewer).
	State string `json:"state"`
	Self  bool   `json:"self,omitempty"`
	// Flows: live flows at it, where the viewer knows (its own; -1 else).
	Flows int `json:"flows"`
}

// Link is a health-monitoring link: From probes To.
type Link struct {
	From  string  `json:"from"`
	To    string  `json:"to"`
	RTTms float64 `json:"rtt_ms"` // 0: no fresh sample
	Live  bool    `json:"live"`
}

// GroupView is an anycast group as the viewer knows it: as its JAP (its
// targets by name), as a RAP (its JAPs and their counts), or both.
type GroupView struct {
	Group   string       `json:"group"`
	Policy  string       `json:"policy,omitempty"`
	RAPs    []string     `json:"raps"`
	JAPs    []JAPView    `json:"japs"`
	Targets []TargetView `json:"targets"`
}

// JAPView is a join proxy of a group and how many targets joined there.
type JAPView struct {
	Name    string `json:"name"`
	Targets int    `json:"targets"`
	Weight  int    `json:"weight"`
}

// TargetView is a target of a group. A RAP that is not the target's JAP
// knows it only as one of its JAP's count: Name is then empty.
type TargetView struct {
	Name     string `json:"name,omitempty"`
	Addr     string `json:"addr,omitempty"`
	JAP      string `json:"jap"`
	Weight   int    `json:"weight"`
	Flows    int    `json:"flows"`
	Draining bool   `json:"draining,omitempty"`
}

// EdgeView is a target or client and the proxy it is attached to.
type EdgeView struct {
	Name       string          `json:"name"`
	Role       string          `json:"role"`
	Proxy      string          `json:"proxy"` // "" when the viewer does not know
	Moves      int             `json:"moves,omitempty"`
	Candidates []CandidateView `json:"candidates,omitempty"`
}

// CandidateView is a proxy an edge may attach to.
type CandidateView struct {
	Name  string  `json:"name"`
	Live  bool    `json:"live"`
	RTTms float64 `json:"rtt_ms"`
}

// maxViewFlows: a proxy with more ingress flows than this leaves its
// clients out of its view, which would otherwise list every flow.
const maxViewFlows = 10000

// proxyView is a proxy's own view.
func proxyView(p *node.Proxy, now time.Time) View {
	cfg := p.Config
	v := View{Node: p.Name, Role: config.RoleProxy, Time: now}
	byAddr := map[netip.Addr]string{}
	st := p.Router.Stats()
	for _, m := range p.Overlay.Members() {
		pv := ProxyView{Name: m.Name, Addr: m.Addr, Cluster: m.Cluster, State: m.State.String(), Flows: -1}
		if m.Unreachable {
			pv.State = "unreachable"
		}
		if m.Name == p.Name {
			pv.Self, pv.Flows = true, st.IAPFlows+st.JAPFlows
		}
		byAddr[m.Addr] = m.Name
		v.Proxies = append(v.Proxies, pv)
		if m.Watched {
			v.Links = append(v.Links, Link{From: p.Name, To: m.Name, RTTms: ms(m.RTT), Live: m.State.String() == "alive" && !m.Unreachable})
		}
	}
	edgeByAddr := map[netip.Addr]string{}
	for _, e := range cfg.Edges {
		for _, a := range e.Address {
			edgeByAddr[a] = e.Name
		}
	}
	groups := map[router.Group]*GroupView{}
	group := func(g router.Group) *GroupView {
		if gv := groups[g]; gv != nil {
			return gv
		}
		gv := &GroupView{Group: g.String(), RAPs: p.Overlay.RAPs(g), JAPs: []JAPView{}, Targets: []TargetView{}}
		groups[g] = gv
		return gv
	}
	// As JAP: the targets that joined here, by name.
	seen := map[router.Group]bool{}
	for _, e := range cfg.Edges {
		for _, g := range e.Groups {
			if seen[g] {
				continue
			}
			seen[g] = true
			loads := p.Router.Loads(g)
			if len(loads) == 0 {
				continue
			}
			gv := group(g)
			gv.Policy = p.Router.Policy(g).String()
			for _, l := range loads {
				gv.Targets = append(gv.Targets, TargetView{Name: edgeByAddr[l.Target.Addr()], Addr: l.Target.String(),
					JAP: p.Name, Weight: l.Weight, Flows: l.Flows, Draining: l.Draining})
			}
		}
	}
	// As RAP: every JAP and its count; targets at other JAPs by count.
	for g, japs := range p.Overlay.RAPTable() {
		if g.IsEcho() {
			continue
		}
		gv := group(g)
		for _, j := range japs {
			name := cmp.Or(byAddr[j.Addr], j.Addr.String())
			gv.JAPs = append(gv.JAPs, JAPView{Name: name, Targets: j.Targets, Weight: cmp.Or(j.Weight, j.Targets)})
			if name == p.Name {
				continue
			}
			for range min(j.Targets, 64) {
				gv.Targets = append(gv.Targets, TargetView{JAP: name})
			}
		}
	}
	for _, gv := range groups {
		if len(gv.JAPs) == 0 && len(gv.Targets) > 0 {
			gv.JAPs = append(gv.JAPs, JAPView{Name: p.Name, Targets: len(gv.Targets), Weight: p.Router.Weight(mustGroup(gv.Group))})
		}
		slices.SortFunc(gv.JAPs, func(a, b JAPView) int { return cmp.Compare(a.Name, b.Name) })
		v.Groups = append(v.Groups, *gv)
	}
	slices.SortFunc(v.Groups, func(a, b GroupView) int { return cmp.Compare(a.Group, b.Group) })
	// Edges: the targets joined here, and the clients with flows in
	// through here (the tunnels say little: an edge handshakes with every
	// proxy it probes). Past maxViewFlows flows, clients are left out.
	attached := map[string]bool{}
	for _, gv := range v.Groups {
		for _, t := range gv.Targets {
			if t.JAP == p.Name && t.Name != "" {
				attached[t.Name] = true
			}
		}
	}
	if st.IAPFlows <= maxViewFlows {
		for _, f := range p.Router.Flows() {
			if f.Kind == "iap" {
				if n := edgeByAddr[f.Client.Addr()]; n != "" {
					attached[n] = true
				}
			}
		}
	}
	for _, e := range cfg.Edges {
		ev := EdgeView{Name: e.Name, Role: config.RoleClient}
		if len(e.Groups) > 0 {
			ev.Role = config.RoleTarget
		}
		if attached[e.Name] {
			ev.Proxy = p.Name
		}
		v.Edges = append(v.Edges, ev)
	}
	return v
}

// edgeView is a target's or client's view: itself, its candidates, and
// its groups.
func edgeView(e *node.Edge, now time.Time) View {
	st := e.Status()
	v := View{Node: e.Name, Role: st.Role, Time: now}
	es := st.Edge
	ev := EdgeView{Name: e.Name, Role: st.Role, Proxy: es.Attached, Moves: es.Moves}
	clusters := map[string]string{}
	for _, p := range e.Config.Proxies {
		clusters[p.Name] = p.Cluster
	}
	for _, c := range es.Candidates {
		ev.Candidates = append(ev.Candidates, CandidateView{Name: c.Name, Live: c.Live, RTTms: c.RTTms})
		state := "dead"
		if c.Live {
			state = "alive"
		}
		v.Proxies = append(v.Proxies, ProxyView{Name: c.Name, Addr: c.Addr, Cluster: clusters[c.Name], State: state, Flows: -1})
		v.Links = append(v.Links, Link{From: e.Name, To: c.Name, RTTms: c.RTTms, Live: c.Live})
	}
	if len(es.Candidates) == 0 {
		for _, p := range e.Config.Proxies {
			v.Proxies = append(v.Proxies, ProxyView{Name: p.Name, Addr: p.Addr4(), Cluster: p.Cluster, State: "alive", Flows: -1})
		}
	}
	v.Edges = []EdgeView{ev}
	for _, g := range es.Groups {
		gv := GroupView{Group: g.Group, RAPs: []string{}, JAPs: []JAPView{}, Targets: []TargetView{}}
		if g.State == "joined" || g.State == "draining" {
			gv.JAPs = append(gv.JAPs, JAPView{Name: g.JAP, Targets: 1, Weight: 1})
			gv.Targets = append(gv.Targets, TargetView{Name: e.Name, JAP: g.JAP, Weight: 1, Draining: g.State == "draining"})
		}
		v.Groups = append(v.Groups, gv)
	}
	return v
}

func mustGroup(s string) router.Group {
	g, _ := router.ParseGroup(s)
	return g
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
