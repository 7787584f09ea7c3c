package node

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
)

// Status is what a running node knows, as `pias status` shows it.
type Status struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Interface string `json:"interface"`
	// Host is an edge's host interface kind ("netstack", "tun" or
	// "water"); a proxy has none, and its Interface only names its sockets.
	Host    string       `json:"host,omitempty"`
	Address []netip.Addr `json:"address"`
	Proxy   *ProxyStatus `json:"proxy,omitempty"`
	Edge    *EdgeStatus  `json:"edge,omitempty"`
}

// ProxyStatus is a proxy's view: its JAP, RAP and IAP state and counters.
type ProxyStatus struct {
	Cluster string `json:"cluster"`
	// Members is every proxy and its health as this proxy sees it.
	Members []MemberStatus `json:"members"`
	// Targets lists, per group, the targets that joined through this proxy.
	Targets map[string][]netip.AddrPort `json:"targets"`
	// Groups describes, per group joined here, its policy and each
	// target's weight and live flows.
	Groups map[string]GroupStatus `json:"groups"`
	// RAP lists, per group this proxy is a RAP of, the JAPs it knows.
	RAP      map[string][]router.JAP `json:"rap"`
	Flows    []router.Flow           `json:"flows"`
	Counters map[string]uint64       `json:"counters"`
	// CA: CA mode (nil in static mode).
	CA *CAStatus `json:"ca,omitempty"`
}

// CAStatus is a proxy's admission by certificate.
type CAStatus struct {
	CA       string    `json:"ca"`        // the CA's name
	NotAfter time.Time `json:"not_after"` // this proxy's certificate's expiry
	// RevocationSerial: of the revocation list held; 0 if none.
	RevocationSerial uint64 `json:"revocation_serial"`
	// Edges are the edges admitted here by certificate, by name.
	Edges []string `json:"edges"`
}

// GroupStatus is a group as its JAP sees it.
type GroupStatus struct {
	Policy  string              `json:"policy"`
	Targets []router.TargetLoad `json:"targets"`
}

// MemberStatus is one proxy as another sees it.
type MemberStatus struct {
	Name    string     `json:"name"`
	Addr    netip.Addr `json:"addr"`
	Cluster string     `json:"cluster"`
	State   string     `json:"state"`
	RTTms   float64    `json:"rtt_ms,omitempty"`
	Watched bool       `json:"watched"` // this proxy probes it
	// Unreachable: alive for others, but cut off from this proxy.
	Unreachable bool `json:"unreachable,omitempty"`
}

// CandidateStatus is a proxy an edge may attach to.
type CandidateStatus struct {
	Name   string     `json:"name"`
	Addr   netip.Addr `json:"addr"`
	Live   bool       `json:"live"`
	RTTms  float64    `json:"rtt_ms,omitempty"`
	Misses int        `json:"misses"`
	// Late counts answers that came after their probe was counted lost (a
	// busy host, here or there).
	Late int `json:"late,omitempty"`
	// Learned: not in the edge's file; its current proxy said it would
	// admit the edge.
	Learned bool `json:"learned,omitempty"`
}

// EdgeStatus is a target's or client's view.
type EdgeStatus struct {
	// Attached is the proxy the anycast prefix is routed to.
	Attached   string            `json:"attached"`
	Moves      int               `json:"moves"`
	Candidates []CandidateStatus `json:"candidates,omitempty"`
	Groups     []JoinStatus      `json:"groups,omitempty"` // a target's groups, by name
	Joined     bool              `json:"joined"`           // a target: every group joined
}

// JoinStatus is one of a target's groups: joined, refused or pending.
type JoinStatus struct {
	Group string `json:"group"`
	State string `json:"state"` // "joined", "refused", "pending", "draining" or "drained"
	// JAP: joined or refused, the proxy that answered.
	JAP string `json:"jap,omitempty"`
	// Reason: refused, the reason the proxy gave; pending after a join,
	// why the target joins again.
	Reason string `json:"reason,omitempty"`
	// Since: when it entered State (for pending, its first join); zero
	// before. For: how long before the status was taken, in seconds.
	Since time.Time `json:"since,omitzero"`
	For   float64   `json:"for_s,omitempty"`
	// Flows: draining, the live flows its JAP reported last; -1 before
	// its first answer.
	Flows int `json:"flows,omitempty"`
	// Check: the group's health check; nil if it has none.
	Check *CheckStatus `json:"check,omitempty"`
}

// Status reports what the proxy knows now.
func (p *Proxy) Status() Status {
	p.mu.Lock()
	cfg := p.Config
	p.mu.Unlock()
	ps := &ProxyStatus{
		Cluster:  cfg.Cluster,
		Targets:  map[string][]netip.AddrPort{},
		Groups:   map[string]GroupStatus{},
		RAP:      map[string][]router.JAP{},
		Flows:    p.Router.Flows(),
		Counters: map[string]uint64{},
	}
	for _, m := range p.Overlay.Members() {
		ps.Members = append(ps.Members, MemberStatus{Name: m.Name, Addr: m.Addr, Cluster: m.Cluster,
			State: m.State.String(), RTTms: ms(m.RTT), Watched: m.Watched, Unreachable: m.Unreachable})
	}
	for _, g := range p.Overlay.JAPGroups() {
		if ts := p.Router.Targets(g); len(ts) > 0 {
			ps.Targets[g.String()] = ts
			ps.Groups[g.String()] = GroupStatus{Policy: p.Router.Policy(g).String(), Targets: p.Router.Loads(g)}
		}
	}
	if cfg.CAMode() {
		ps.CA = &CAStatus{CA: cfg.CA.Name, NotAfter: p.Overlay.CertNotAfter(), RevocationSerial: p.Overlay.RevocationSerial(), Edges: p.Overlay.CertEdges()}
	}
	for g, japs := range p.Overlay.RAPTable() {
		ps.RAP[g.String()] = japs
	}
	st := p.Router.Stats()
	ps.Counters["control_dropped"] = p.ControlDropped()
	ost := p.Overlay.Stats()
	ps.Counters["control_malformed"] = ost.Malformed
	for t, n := range ost.Refused {
		ps.Counters["control_refused:"+t.String()] = n
	}
	ps.Counters["forwarded"] = st.Forwarded
	ps.Counters["control"] = st.Control
	ps.Counters["queued"] = st.Queued
	ps.Counters["evicted"] = st.Evicted
	for r, n := range st.Drops {
		if n > 0 {
			ps.Counters["drop:"+router.DropReason(r).String()] = n
		}
	}
	return Status{Name: cfg.Name, Role: config.RoleProxy, Interface: cfg.InterfaceName, Address: cfg.Address, Proxy: ps}
}

// Status reports what the edge knows now.
func (e *Edge) Status() Status {
	cfg := e.Config
	es := &EdgeStatus{Attached: cfg.Proxies[0].Name}
	if a := e.attacher(); a != nil {
		st := a.Status()
		es.Attached, es.Moves = st.Current, st.Moves
		for _, c := range st.Candidates {
			rtt := c.RTT
			if !c.Live {
				rtt = 0 // its last RTT, from before it died
			}
			es.Candidates = append(es.Candidates, CandidateStatus{Name: c.Name, Addr: c.Addr, Live: c.Live, RTTms: ms(rtt), Misses: c.Misses, Late: c.Late, Learned: c.Learned})
		}
	}
	if e.Target != nil {
		now := time.Now()
		for _, g := range e.Target.Groups() {
			js := JoinStatus{Group: g.Group.String(), State: g.State.String(), JAP: g.JAP, Reason: g.Reason, Flows: g.Flows, Check: e.checkStatus(g.Group)}
			if g.Tried {
				js.Since = e.epoch.Add(time.Duration(g.Since))
				js.For = now.Sub(js.Since).Seconds()
			}
			es.Groups = append(es.Groups, js)
		}
		slices.SortFunc(es.Groups, func(a, b JoinStatus) int { return strings.Compare(a.Group, b.Group) })
		es.Joined = e.Target.Joined()
	}
	name := cfg.InterfaceName
	if e.Host.Name != "" {
		name = e.Host.Name
	}
	return Status{Name: cfg.Name, Role: cfg.Role, Interface: name, Host: cfg.Interface, Address: cfg.Address, Edge: es}
}

// ms is d in milliseconds, rounded to microseconds.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
