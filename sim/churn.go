package sim

import (
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// ChurnConfig is the churn scenario: targets of many groups join and leave
// at proxies of a full mesh while some proxies die (and may come back),
// with health monitoring, registration and RAP hashing as a node runs them.
type ChurnConfig struct {
	Proxies, Groups, Targets int
	// Deaths proxies die at times spread evenly over the churn; with
	// Revive, each restarts (empty, a new incarnation) that long after.
	Deaths  int
	Revive  time.Duration
	Cluster int // proxies per cluster; 0: 10
	// Inaccuracy is the JAPs' two-tier threshold in percent; 0: the
	// overlay's default (25); negative: every change is reported.
	Inaccuracy float64
	// Warm: every target joins once within it; Churn: then each leaves and
	// comes back after exponential times of mean Session; Settle: how long
	// the run goes on after its last event. Defaults 10 s, 60 s, 20 s, 60 s.
	Warm, Churn, Session, Settle time.Duration
	// Failover is how long a target whose JAP died takes to join its
	// backup proxy (its edge noticing the death); 0: 3 s.
	Failover time.Duration
	Link     overlaytest.Link // zero: 10 ms ± 5 ms
	Seed     uint64
	Progress io.Writer
}

func (c *ChurnConfig) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Warm, 10*time.Second)
	def(&c.Churn, 60*time.Second)
	def(&c.Session, 20*time.Second)
	def(&c.Settle, 60*time.Second)
	def(&c.Failover, 3*time.Second)
	if c.Cluster <= 0 {
		c.Cluster = 10
	}
	if c.Link == (overlaytest.Link{}) {
		c.Link = overlaytest.Link{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond}
	}
}

// ChurnSample is one second of a churn run.
type ChurnSample struct {
	At      time.Duration // end of the step, from the start of the run
	Targets int           // targets joined at a live proxy
	Live    int           // proxies up
	// Registers are the Register messages put on the network in the step;
	// Changes and Refreshes the registrations of a group (one per RAP, a
	// JAP's own included) that told a new count or repeated the last; Echo
	// those of the echo pseudo-groups.
	Registers, Changes, Refreshes, Echo uint64
	Wire                                uint64 // every control message
}

// ChurnResult is what a churn run measured.
type ChurnResult struct {
	Proxies, Groups, Targets, Deaths, Revived int
	Inaccuracy                                float64 // in force: 0 reports every change
	// Joins, Leaves and Failovers are the target events applied (a
	// failover is a target of a dead JAP joining its backup).
	Joins, Leaves, Failovers int
	Series                   []ChurnSample
	Total                    ChurnSample // sums over the run (Targets, Live: at the end)
	// Detected counts (live proxy, dead proxy) pairs in which the live one
	// held the dead one dead before it came back or the run ended; Missed
	// the pairs in which it did not; False the deaths declared of proxies
	// that were up.
	Detected, Missed, False int
	// LastEvent is when the last join, leave, death, failover or restart
	// happened, from the start; Converged whether every check from
	// LastEvent+ConvergeAfter to the end passed. Problem is what the last
	// check that failed found (converged or not): what took longest.
	LastEvent     time.Duration
	Converged     bool
	ConvergeAfter time.Duration
	Problem       string
	SimTime, Wall time.Duration
	PeakHeap      uint64
}

// churnTarget is one target: an edge address that joins one group, at its
// home proxy while that is up, else at its backup (which never dies).
type churnTarget struct {
	addr         netip.Addr
	g            router.Group
	home, backup int
	on           bool // the scenario has it joined (or on its way back)
	at           int  // the proxy it is joined at; -1: none
}

// churn is a churn run in progress.
type churn struct {
	cfg     ChurnConfig
	w       *world
	members []overlay.Member
	groups  []router.Group
	targets []churnTarget
	cfgs    []overlay.ProxyConfig // each proxy's, to restart it
	gen     []uint64              // restarts of each proxy
	res     *ChurnResult
	step    ChurnSample
	// lastReg: what each proxy last registered for each group (its index
	// in groups, echo groups after them), for changes against refreshes.
	lastReg []map[int]int
	groupIx map[router.Group]int
	// deadSeen: for each proxy that is down, the proxies that have held it
	// dead since it went down.
	deadSeen map[int]map[int]bool
	epoch    uint32
	t0       int64
}

// ChurnGroup is group i of the churn scenario: 100.65.0.0 + i + 2, so
// that none is fig6's Group.
func ChurnGroup(i int) router.Group {
	a := uint32(i + 2)
	return router.Group{Addr: netip.AddrFrom4([4]byte{100, 65, byte(a >> 8), byte(a)}), Port: 80, Proto: router.ProtoTCP}
}

// RunChurn runs the churn scenario.
//
// Every proxy knows every other (a static full mesh, as in failures) and
// runs HealthTick every probe interval (100 ms) and Tick every second.
// Targets join and leave through the real entry point, a Join or Leave to
// the group's anycast address handed to their proxy's HandleControl; they
// send no keepalives (their timeout is longer than the run). A proxy is
// killed by taking its host off the network; it restarts as a new
// overlay.Proxy with a higher incarnation on the same host.
func RunChurn(cfg ChurnConfig) (*ChurnResult, error) {
	c, err := newChurn(cfg)
	if err != nil {
		return nil, err
	}
	c.run()
	return c.res, nil
}

func newChurn(cfg ChurnConfig) (*churn, error) {
	cfg.defaults()
	switch {
	case cfg.Proxies < 2 || cfg.Groups < 1 || cfg.Targets < 0:
		return nil, fmt.Errorf("sim: churn needs 2 proxies and a group")
	case cfg.Groups > 60000:
		return nil, fmt.Errorf("sim: churn has room for 60,000 groups, not %d", cfg.Groups)
	case cfg.Deaths >= cfg.Proxies:
		return nil, fmt.Errorf("sim: %d deaths of %d proxies leave none", cfg.Deaths, cfg.Proxies)
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0xc4a7))
	c := &churn{cfg: cfg, groupIx: map[router.Group]int{}, deadSeen: map[int]map[int]bool{},
		res: &ChurnResult{Proxies: cfg.Proxies, Groups: cfg.Groups, Targets: cfg.Targets, Deaths: cfg.Deaths, Inaccuracy: max(cfg.Inaccuracy, 0)}}
	if cfg.Inaccuracy == 0 {
		c.res.Inaccuracy = overlay.DefaultInaccuracy
	}
	for i := range cfg.Groups {
		g := ChurnGroup(i)
		c.groups = append(c.groups, g)
		c.groupIx[g] = i
		c.groupIx[router.EchoGroup(g.Addr)] = cfg.Groups + i
	}
	// The victims, and each target's home and backup (the next proxy that
	// is no victim, so that a target is never orphaned twice).
	victims := rng.Perm(cfg.Proxies)[:cfg.Deaths]
	isVictim := make([]bool, cfg.Proxies)
	for _, v := range victims {
		isVictim[v] = true
	}
	for s := range cfg.Targets {
		h := rng.IntN(cfg.Proxies)
		b := (h + 1) % cfg.Proxies
		for isVictim[b] {
			b = (b + 1) % cfg.Proxies
		}
		c.targets = append(c.targets, churnTarget{addr: edgeAddr(s), g: c.groups[s%cfg.Groups], home: h, backup: b, at: -1})
	}
	// One edge per proxy holds the targets homed there: an edge is a
	// machine with many targets, and this keeps the admits each proxy
	// tells the others small.
	pols := make([]*overlay.EdgePolicy, cfg.Proxies)
	edges := make([]map[netip.Addr]*overlay.EdgePolicy, cfg.Proxies)
	c.members = make([]overlay.Member, cfg.Proxies)
	for i := range cfg.Proxies {
		c.members[i] = proxyMember(i, cfg.Cluster)
		pols[i] = &overlay.EdgePolicy{Name: "targets@" + c.members[i].Name, PublicKey: [32]byte{0xed, byte(i), byte(i >> 8), byte(i >> 16)}, Groups: c.groups}
		edges[i] = map[netip.Addr]*overlay.EdgePolicy{}
	}
	for _, t := range c.targets {
		edges[t.home][t.addr] = pols[t.home]
		edges[t.backup][t.addr] = pols[t.home]
	}
	inacc := cfg.Inaccuracy
	c.w = newWorld(cfg.Seed, cfg.Link)
	c.t0 = c.w.clk.Now()
	c.gen = make([]uint64, cfg.Proxies)
	c.lastReg = make([]map[int]int, cfg.Proxies)
	for i, m := range c.members {
		c.lastReg[i] = map[int]int{}
		pc := overlay.ProxyConfig{Members: c.members, Edges: edges[i], Replicas: 4, Health: overlay.HealthConfig{Incarnation: 1},
			Inaccuracy: inacc, TargetTimeout: 1000 * time.Hour, JoinRate: 1e9, JoinBurst: 1 << 30}
		c.cfgs = append(c.cfgs, pc)
		pc.Rand, pc.OnEvent = rand.New(rand.NewPCG(cfg.Seed, uint64(i))), c.onEvent(i)
		if _, err := c.w.addProxy(m, pc); err != nil {
			return nil, err
		}
		if cfg.Progress != nil && (i+1)%1000 == 0 {
			fmt.Fprintf(cfg.Progress, "  churn: %d proxies started\n", i+1)
		}
	}
	c.schedule(rng, victims)
	return c, nil
}

// onEvent counts proxy i's registrations and deaths.
func (c *churn) onEvent(i int) func(overlay.Event) {
	return func(e overlay.Event) {
		switch e.Kind {
		case overlay.EventRegister:
			gi, ok := c.groupIx[e.Group]
			if !ok || len(e.JAPs) == 0 {
				return
			}
			n := uint64(len(e.RAPs))
			if gi >= c.cfg.Groups {
				c.step.Echo += n
				return
			}
			t := e.JAPs[0].Targets
			if last, ok := c.lastReg[i][gi]; ok && last == t {
				c.step.Refreshes += n
			} else {
				c.step.Changes += n
			}
			c.lastReg[i][gi] = t
		case overlay.EventDead:
			v, ok := c.w.byName[e.Name]
			if !ok {
				return
			}
			if seen := c.deadSeen[v]; seen != nil {
				seen[i] = true
			} else {
				c.res.False++
			}
		}
	}
}

// schedule puts the run's events on the clock: targets' joins and leaves,
// deaths and restarts. Failovers are scheduled as deaths happen.
func (c *churn) schedule(rng *rand.Rand, victims []int) {
	cfg := c.cfg
	last := time.Duration(0)
	at := func(d time.Duration, f func()) {
		last = max(last, d)
		c.w.clk.AfterFunc(d, f)
	}
	end := cfg.Warm + cfg.Churn
	exp := func() time.Duration { return time.Duration(rng.ExpFloat64() * float64(cfg.Session)) }
	for s := range c.targets {
		d := time.Duration(rng.Int64N(int64(cfg.Warm)))
		at(d, func() { c.join(s) })
		for d = max(d, cfg.Warm) + exp(); d < end; d += exp() {
			leave := d
			at(leave, func() { c.leave(s) })
			if d += exp(); d >= end {
				break
			}
			at(d, func() { c.join(s) })
		}
	}
	for k, v := range victims {
		d := cfg.Warm + cfg.Churn*time.Duration(k+1)/time.Duration(len(victims)+1)
		at(d, func() { c.kill(v) })
		last = max(last, d+cfg.Failover)
		if cfg.Revive > 0 {
			at(d+cfg.Revive, func() { c.restart(v) })
		}
	}
	c.res.LastEvent = last
}

// join sends target s's Join to its home, or its backup while home is down.
func (c *churn) join(s int) {
	t := &c.targets[s]
	t.on = true
	if t.at >= 0 {
		return
	}
	p := t.home
	if !c.w.proxies[p].host.IsUp() {
		p = t.backup
	}
	t.at = p
	c.epoch++
	c.send(s, p, &overlay.Join{Group: t.g, Port: 80, Epoch: c.epoch, Weight: 1})
	c.res.Joins++
}

// leave sends target s's Leave to the proxy it is joined at.
func (c *churn) leave(s int) {
	t := &c.targets[s]
	t.on = false
	if t.at < 0 {
		return // its proxy died; it had not failed over yet
	}
	c.send(s, t.at, &overlay.Leave{Group: t.g, Port: 80})
	t.at = -1
	c.res.Leaves++
}

func (c *churn) send(s, p int, m overlay.Msg) {
	t := &c.targets[s]
	b, err := overlay.AppendMsg(nil, 0, m)
	if err != nil {
		panic(err)
	}
	c.w.proxies[p].p.HandleControl(netip.AddrPortFrom(t.addr, 40000), netip.AddrPortFrom(t.g.Addr, ControlPort), b)
}

// kill takes proxy v off the network; its targets fail over to their
// backups after cfg.Failover.
func (c *churn) kill(v int) {
	c.w.net.Down(c.members[v].Name)
	c.deadSeen[v] = map[int]bool{}
	var orphans []int
	for s := range c.targets {
		if c.targets[s].at == v {
			c.targets[s].at = -1
			orphans = append(orphans, s)
		}
	}
	c.w.clk.AfterFunc(c.cfg.Failover, func() {
		for _, s := range orphans {
			if t := &c.targets[s]; t.on && t.at < 0 {
				c.join(s)
				c.res.Joins--
				c.res.Failovers++
			}
		}
	})
}

// restart brings proxy v back as a new proxy: no targets, no RAP state,
// a higher incarnation.
func (c *churn) restart(v int) {
	c.tallyDeath(v)
	c.gen[v]++
	s := c.w.proxies[v]
	pc := c.cfgs[v]
	pc.Health.Incarnation = uint32(1 + c.gen[v])
	pc.Rand, pc.OnEvent = rand.New(rand.NewPCG(c.cfg.Seed, uint64(v)|c.gen[v]<<32)), c.onEvent(v)
	r, err := router.New(router.Config{Self: []netip.Addr{s.m.Addr}, Anycast: []netip.Prefix{anycastPrefix}, ControlPort: ControlPort})
	if err != nil {
		panic(err)
	}
	pc.Self, pc.ControlPort, pc.Router, pc.Clock, pc.Transport = s.m, ControlPort, r, c.w.clk, s
	p, err := overlay.NewProxy(pc)
	if err != nil {
		panic(err) // the same config made the first one
	}
	s.p = p
	clear(c.lastReg[v])
	c.w.net.Up(s.m.Name)
	c.res.Revived++
}

// tallyDeath counts who detected v's death, and stops watching it.
func (c *churn) tallyDeath(v int) {
	seen := c.deadSeen[v]
	if seen == nil {
		return
	}
	for i, s := range c.w.proxies {
		if i != v && s.host.IsUp() {
			if seen[i] {
				c.res.Detected++
			} else {
				c.res.Missed++
			}
		}
	}
	delete(c.deadSeen, v)
}

// run runs the scenario: the events, then checks every quarter of a
// second from the last event until the first passes, then every second to
// the end, going back to quarters when one fails.
func (c *churn) run() {
	start := time.Now()
	cfg, w, res := c.cfg, c.w, c.res
	w.tickEvery(100*time.Millisecond, func(s *simProxy) { s.p.HealthTick() })
	w.tickEvery(time.Second, func(s *simProxy) { s.p.Tick() })
	var heap runtime.MemStats
	sample := func() {
		st := c.step
		c.step = ChurnSample{}
		st.At = time.Duration(w.clk.Now() - c.t0)
		st.Registers, st.Wire = w.sent[overlay.TypeRegister], w.totalSent()
		for _, t := range c.targets {
			if t.at >= 0 {
				st.Targets++
			}
		}
		for _, s := range w.proxies {
			if s.host.IsUp() {
				st.Live++
			}
		}
		res.Series = append(res.Series, st)
		if len(res.Series)%10 == 0 {
			runtime.ReadMemStats(&heap)
			res.PeakHeap = max(res.PeakHeap, heap.HeapAlloc)
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "  churn: %v of %v simulated, %d targets, %d proxies up, %.0f s wall, heap %d MiB\n",
					st.At, (res.LastEvent + cfg.Settle).Round(time.Second), st.Targets, st.Live, time.Since(start).Seconds(), heap.HeapAlloc>>20)
			}
		}
	}
	w.clk.Every(time.Second, sample)
	w.clk.Advance(res.LastEvent)
	end := res.LastEvent + cfg.Settle
	passSince := time.Duration(-1)
	for now := res.LastEvent; now < end; {
		err := c.consistent()
		switch {
		case err != nil:
			passSince, res.Problem = -1, err.Error()
		case passSince < 0:
			passSince = now
		}
		step := time.Second
		if passSince < 0 {
			step = 250 * time.Millisecond
		}
		step = min(step, end-now)
		w.clk.Advance(step)
		now += step
	}
	err := c.consistent()
	if err != nil {
		passSince, res.Problem = -1, err.Error()
	} else if passSince < 0 {
		passSince = end
	}
	res.Converged = passSince >= 0
	if res.Converged {
		res.ConvergeAfter = passSince - res.LastEvent
	}
	for _, v := range slices.Sorted(maps.Keys(c.deadSeen)) {
		c.tallyDeath(v)
	}
	// Cumulative counters per sample: make them per step.
	for i := len(res.Series) - 1; i > 0; i-- {
		res.Series[i].Registers -= res.Series[i-1].Registers
		res.Series[i].Wire -= res.Series[i-1].Wire
	}
	res.Total = ChurnSample{At: time.Duration(w.clk.Now() - c.t0), Registers: w.sent[overlay.TypeRegister], Wire: w.totalSent()}
	if n := len(res.Series); n > 0 {
		res.Total.Targets, res.Total.Live = res.Series[n-1].Targets, res.Series[n-1].Live
	}
	for _, s := range res.Series {
		res.Total.Changes += s.Changes
		res.Total.Refreshes += s.Refreshes
		res.Total.Echo += s.Echo
	}
	res.Total.Changes += c.step.Changes
	res.Total.Refreshes += c.step.Refreshes
	res.Total.Echo += c.step.Echo
	runtime.ReadMemStats(&heap)
	res.PeakHeap = max(res.PeakHeap, heap.HeapAlloc)
	res.SimTime = res.Total.At
	res.Wall = time.Since(start)
}

// consistent checks the control plane against the scenario, as the lab's
// Harness.Consistent does against a running lab: every live proxy sees
// exactly the live proxies as live; and every group's RAPs (by the hash
// over live proxies) list exactly the JAPs that have targets for it, with
// their counts (for its echo group too), and no other proxy lists it.
func (c *churn) consistent() error {
	var live []string
	var up []int
	for i, s := range c.w.proxies {
		if s.host.IsUp() {
			live = append(live, s.m.Name)
			up = append(up, i)
		}
	}
	slices.Sort(live)
	for _, i := range up {
		if got := c.w.proxies[i].p.Live(); !slices.Equal(got, live) {
			return fmt.Errorf("%s sees %d live proxies, %d are up (%s)", c.members[i].Name, len(got), len(live), diffNames(got, live))
		}
	}
	// Expected RAP tables: group (echo groups after) → JAP → count.
	want := make([]map[netip.Addr]int, 2*len(c.groups))
	for _, t := range c.targets {
		if t.at < 0 {
			continue
		}
		gi := c.groupIx[t.g]
		for _, k := range []int{gi, len(c.groups) + gi} {
			if want[k] == nil {
				want[k] = map[netip.Addr]int{}
			}
			want[k][c.members[t.at].Addr]++
		}
	}
	// Which groups each live proxy is a RAP of.
	rapOf := map[int][]int{}
	for k := range want {
		g := c.groups[k%len(c.groups)]
		if k >= len(c.groups) {
			g = router.EchoGroup(g.Addr)
		}
		for _, name := range overlay.RAPs(g, live, 4) {
			i := c.w.byName[name]
			rapOf[i] = append(rapOf[i], k)
		}
	}
	for _, i := range up {
		table := c.w.proxies[i].p.RAPTable()
		mine := rapOf[i]
		for g, japs := range table {
			k, ok := c.groupIx[g]
			if !ok || !slices.Contains(mine, k) {
				return fmt.Errorf("%s is not a RAP of %s but lists %d JAPs", c.members[i].Name, g, len(japs))
			}
		}
		for _, k := range mine {
			g := c.groups[k%len(c.groups)]
			if k >= len(c.groups) {
				g = router.EchoGroup(g.Addr)
			}
			got := map[netip.Addr]int{}
			for _, j := range table[g] {
				got[j.Addr] = j.Targets
			}
			if !maps.Equal(got, want[k]) && (len(got) > 0 || len(want[k]) > 0) {
				return fmt.Errorf("RAP %s of %s lists %v, want %v", c.members[i].Name, g, got, want[k])
			}
		}
	}
	return nil
}

// diffNames says which names one list has that the other has not.
func diffNames(got, want []string) string {
	var extra, missing []string
	for _, n := range got {
		if !slices.Contains(want, n) {
			extra = append(extra, n)
		}
	}
	for _, n := range want {
		if !slices.Contains(got, n) {
			missing = append(missing, n)
		}
	}
	return fmt.Sprintf("extra %v, missing %v", extra, missing)
}
