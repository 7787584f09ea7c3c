package sim

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// The cross-check: one small scenario played here, on the virtual clock
// and network, and in the in-process lab with real WireGuard tunnels
// (lab's TestCrossCheckSim), must end the same. "The same" is what does
// not depend on timing (see Outcome): both sides wait on conditions, and
// only then compare.

// CrossCheck is the scenario: proxies in clusters, targets that join
// groups at their home proxy and never move, and proxies killed one after
// another once every join is registered. The proxies' identities are the
// lab's (rendezvous hashing picks RAPs by name); registration reports
// every change (0 % inaccuracy).
type CrossCheck struct {
	Proxies  []overlay.Member // Name, Addr and Cluster are used
	Groups   []router.Group
	Targets  []CheckTarget
	Kills    []int // indexes into Proxies, killed in this order
	Replicas int   // RAPs per group
	Seed     uint64
}

// CheckTarget is one target of a CrossCheck: it joins each of its groups
// once, at its proxy.
type CheckTarget struct {
	Proxy  int   // index into CrossCheck.Proxies
	Groups []int // indexes into CrossCheck.Groups
}

// Joins is the number of joins of the scenario.
func (c *CrossCheck) Joins() int {
	n := 0
	for _, t := range c.Targets {
		n += len(t.Groups)
	}
	return n
}

// Expected is the RAP table every RAP of a group must hold once the
// control plane has converged with the proxies up: group (and its echo
// pseudo-group) → JAP name → count. Weights are one per target.
func (c *CrossCheck) Expected(up func(name string) bool) map[router.Group]map[string]int {
	want := map[router.Group]map[string]int{}
	for _, t := range c.Targets {
		jap := c.Proxies[t.Proxy].Name
		if !up(jap) {
			continue // pinned: its targets are gone with it
		}
		for _, gi := range t.Groups {
			g := c.Groups[gi]
			for _, gg := range []router.Group{g, router.EchoGroup(g.Addr)} {
				if want[gg] == nil {
					want[gg] = map[string]int{}
				}
				want[gg][jap]++
			}
		}
	}
	return want
}

// Converged checks that the running proxies agree with the scenario: each
// sees exactly the running ones as live, and every group's RAPs among
// them (and no other proxy) list exactly the expected JAPs, with their
// counts and weights.
func (c *CrossCheck) Converged(running map[string]*overlay.Proxy) error {
	live := slices.Sorted(maps.Keys(running))
	for _, name := range live {
		if got := running[name].Live(); !slices.Equal(got, live) {
			return fmt.Errorf("%s sees live proxies %v, running are %v", name, got, live)
		}
	}
	want := c.Expected(func(n string) bool { return running[n] != nil })
	names := c.names()
	for _, name := range live {
		table := running[name].RAPTable()
		for g := range table {
			if want[g] == nil || !slices.Contains(overlay.RAPs(g, live, c.Replicas), name) {
				return fmt.Errorf("%s lists JAPs for %s, of which it is no RAP or which has none", name, g)
			}
		}
		for g, w := range want {
			if !slices.Contains(overlay.RAPs(g, live, c.Replicas), name) {
				continue
			}
			got := map[string]int{}
			for _, j := range table[g] {
				if j.Weight != j.Targets {
					return fmt.Errorf("RAP %s of %s holds JAP %s with %d targets of weight %d, want weight 1 each", name, g, names[j.Addr], j.Targets, j.Weight)
				}
				got[names[j.Addr]] = j.Targets
			}
			if !maps.Equal(got, w) {
				return fmt.Errorf("RAP %s of %s lists %v, want %v", name, g, got, w)
			}
		}
	}
	return nil
}

func (c *CrossCheck) names() map[netip.Addr]string {
	m := map[netip.Addr]string{}
	for _, p := range c.Proxies {
		m[p.Addr] = p.Name
	}
	return m
}

// Outcome is how a cross-check run ends, in what does not depend on
// timing:
//   - every surviving RAP's table (group → JAP → count), which the
//     scenario determines once the control plane has converged;
//   - which proxies each survivor holds dead at the end, and which it
//     declared dead (EventDead) during the run: the killed ones, each once
//     at every survivor, and no false death;
//   - per group, the registrations that told a new count (at 0 %
//     inaccuracy one per join at each JAP, whatever the order in which
//     the joins come).
//
// Not compared: detection times, refreshes and re-registrations after a
// membership change (their number depends on how many ticks pass while
// the lab waits), message counts in general.
type Outcome struct {
	Tables   map[string]map[router.Group]map[string]int // RAP → group → JAP → targets
	Dead     map[string][]string                        // survivor → proxies it holds dead
	Declared map[string][]string                        // survivor → proxies it declared dead, in order
	Changes  map[router.Group]int                       // registration events with a new count
}

// Lines is the outcome as sorted lines, to compare and to show.
func (o *Outcome) Lines() []string {
	var out []string
	for rap, t := range o.Tables {
		for g, japs := range t {
			for _, j := range slices.Sorted(maps.Keys(japs)) {
				out = append(out, fmt.Sprintf("table %s %s %s=%d", rap, g, j, japs[j]))
			}
		}
	}
	for p, d := range o.Dead {
		out = append(out, fmt.Sprintf("dead at %s: %v", p, d))
	}
	for p, d := range o.Declared {
		out = append(out, fmt.Sprintf("declared at %s: %v", p, d))
	}
	for g, n := range o.Changes {
		out = append(out, fmt.Sprintf("changes %s %d", g, n))
	}
	slices.Sort(out)
	return out
}

// Recorder takes the proxies' events (overlay.ProxyConfig.OnEvent, or a
// lab's HarnessOptions.OnEvent) and keeps what an Outcome needs. It is
// safe for concurrent use: a lab's proxies emit from their own goroutines.
type Recorder struct {
	mu       sync.Mutex
	declared map[string][]string
	last     map[regKey]int
	changes  map[router.Group]int
}

type regKey struct {
	jap string
	g   router.Group
}

// OnEvent records e.
func (r *Recorder) OnEvent(e overlay.Event) {
	if e.Kind != overlay.EventDead && (e.Kind != overlay.EventRegister || len(e.JAPs) == 0) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.declared == nil {
		r.declared, r.last, r.changes = map[string][]string{}, map[regKey]int{}, map[router.Group]int{}
	}
	if e.Kind == overlay.EventDead {
		r.declared[e.Proxy] = append(r.declared[e.Proxy], e.Name)
		return
	}
	k := regKey{e.Proxy, e.Group}
	if n := e.JAPs[0].Targets; n != r.last[k] {
		r.last[k] = n
		r.changes[e.Group]++
	}
}

// Outcome is the run's end as the running proxies hold it, with the
// events recorded so far.
func (r *Recorder) Outcome(running map[string]*overlay.Proxy, names map[netip.Addr]string) *Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := &Outcome{Tables: map[string]map[router.Group]map[string]int{}, Dead: map[string][]string{},
		Declared: map[string][]string{}, Changes: maps.Clone(r.changes)}
	for name, p := range running {
		t := map[router.Group]map[string]int{}
		for g, japs := range p.RAPTable() {
			t[g] = map[string]int{}
			for _, j := range japs {
				n, ok := names[j.Addr]
				if !ok {
					n = j.Addr.String()
				}
				t[g][n] = j.Targets
			}
		}
		if len(t) > 0 {
			o.Tables[name] = t
		}
		var dead []string
		for _, m := range p.Members() {
			if m.State == overlay.StateDead {
				dead = append(dead, m.Name)
			}
		}
		o.Dead[name] = dead
		o.Declared[name] = slices.Clone(r.declared[name])
	}
	return o
}

// checkTimeout bounds, in simulated time, each wait of RunCrossCheck.
const checkTimeout = time.Minute

// RunCrossCheck plays c on the virtual clock: every proxy knows every
// other (a static mesh, as a static lab's files say), HealthTick and Tick
// run every 100 ms as in a running node, targets join through the
// proxies' HandleControl and send no keepalives (their timeout outlasts
// the run), and a kill takes a proxy's host off the network.
func RunCrossCheck(c CrossCheck) (*Outcome, error) {
	w := newWorld(c.Seed, overlaytest.Link{Delay: time.Millisecond, Jitter: 500 * time.Microsecond})
	// Every proxy accepts every target, as a static lab's files say.
	edges := map[netip.Addr]*overlay.EdgePolicy{}
	for j, t := range c.Targets {
		pol := &overlay.EdgePolicy{Name: fmt.Sprintf("t%d", j+1), PublicKey: [32]byte{0xed, byte(j), byte(j >> 8)},
			SetsPolicy: true, MaxWeight: router.MaxWeight}
		for _, gi := range t.Groups {
			if gi < 0 || gi >= len(c.Groups) {
				return nil, fmt.Errorf("sim: target %d joins group %d of %d", j, gi, len(c.Groups))
			}
			pol.Groups = append(pol.Groups, c.Groups[gi])
		}
		if t.Proxy < 0 || t.Proxy >= len(c.Proxies) {
			return nil, fmt.Errorf("sim: target %d joins at proxy %d of %d", j, t.Proxy, len(c.Proxies))
		}
		edges[edgeAddr(j)] = pol
	}
	members := slices.Clone(c.Proxies)
	for i := range members {
		members[i].PublicKey = [32]byte{0xee, byte(i), byte(i >> 8)}
	}
	rec := &Recorder{}
	for i, m := range members {
		_, err := w.addProxy(m, overlay.ProxyConfig{Members: members, Edges: edges, Replicas: c.Replicas,
			Inaccuracy: -1, TargetTimeout: 1000 * time.Hour, Health: overlay.HealthConfig{Incarnation: 1},
			Rand: rand.New(rand.NewPCG(c.Seed, uint64(i))), OnEvent: rec.OnEvent})
		if err != nil {
			return nil, err
		}
	}
	w.tickEvery(100*time.Millisecond, func(s *simProxy) { s.p.HealthTick() })
	w.tickEvery(100*time.Millisecond, func(s *simProxy) { s.p.Tick() })
	running := func() map[string]*overlay.Proxy {
		out := map[string]*overlay.Proxy{}
		for _, s := range w.proxies {
			if s.host.IsUp() {
				out[s.m.Name] = s.p
			}
		}
		return out
	}
	until := func(what string, cond func() error) error {
		end := w.clk.Now() + int64(checkTimeout)
		for {
			err := cond()
			if err == nil {
				return nil
			}
			if w.clk.Now() >= end {
				return fmt.Errorf("sim: %s: not within %v: %v", what, checkTimeout, err)
			}
			w.clk.Advance(50 * time.Millisecond)
		}
	}
	converged := func() error { return c.Converged(running()) }
	meshed := func() error {
		live := slices.Sorted(maps.Keys(running()))
		for _, s := range w.proxies {
			if got := s.p.Live(); !slices.Equal(got, live) {
				return fmt.Errorf("%s sees %v", s.m.Name, got)
			}
		}
		return nil
	}
	if err := until("meshed", meshed); err != nil {
		return nil, err
	}
	for j, t := range c.Targets {
		for k, gi := range t.Groups {
			g := c.Groups[gi]
			b, err := overlay.AppendMsg(nil, 0, &overlay.Join{Group: g, Port: g.Port + 8000, Name: fmt.Sprintf("t%d", j+1),
				Epoch: uint32(k + 1), Weight: 1})
			if err != nil {
				return nil, err
			}
			w.proxies[t.Proxy].p.HandleControl(netip.AddrPortFrom(edgeAddr(j), 40000), netip.AddrPortFrom(g.Addr, ControlPort), b)
		}
		w.clk.Advance(time.Millisecond)
	}
	if err := until("registered", converged); err != nil {
		return nil, err
	}
	for _, k := range c.Kills {
		name := c.Proxies[k].Name
		w.net.Down(name)
		err := until("death of "+name, func() error {
			for n, p := range running() {
				if !slices.ContainsFunc(p.Members(), func(m overlay.MemberInfo) bool { return m.Name == name && m.State == overlay.StateDead }) {
					return fmt.Errorf("%s does not hold %s dead", n, name)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := until("converged after the kills", converged); err != nil {
		return nil, err
	}
	return rec.Outcome(running(), c.names()), nil
}
