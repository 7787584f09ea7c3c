package sim

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// Fig6Config is one run of the fig6 scenario: one group's event at one
// inaccuracy.
type Fig6Config struct {
	Proxies    int
	Trace      []Event       // the event; Proxy < Proxies
	Duration   time.Duration // how long to run; 0: to the last event
	Inaccuracy float64       // percent; 0 reports every change
	Replicas   int           // RAPs per group; 0: 4, as in the paper
	// Tick is how often each proxy's Tick runs (registration refresh,
	// expiry); 0: 1 s. Nothing in the scenario needs it finer.
	Tick time.Duration
	Link overlaytest.Link // between proxies; zero: 10 ms ± 5 ms
	Seed uint64
	// Sample is the time series' step; 0: one minute.
	Sample time.Duration
	// Check, if set, runs before each trace event is applied (tests: the
	// RAPs' views against the JAPs' counts).
	Check func(v *View)
	// Progress, if set, gets a line every ten sampled steps.
	Progress io.Writer
	Label    string // names the run in progress lines
	// tickAll ticks every proxy every Tick, digests on: the run as it was
	// before Proxy.TickDue, which tests compare with.
	tickAll bool
}

// Sample is one step of the time series.
type Sample struct {
	At      time.Duration // end of the step, from the start of the event
	Members int           // group size at At
	// Registers are the JAP→RAP messages for the group in the step (one
	// per RAP, a JAP's own included); Changes those that told a new count,
	// Refreshes those that repeated the last (soft-state refresh). Echo
	// are those of the group's echo pseudo-group (ping), not in Registers.
	Registers, Changes, Refreshes, Echo uint64
	Wire                                uint64 // every control message put on the network
}

// Fig6Result is what one run measured.
type Fig6Result struct {
	Proxies    int
	Inaccuracy float64
	Peak       int // most concurrent members
	Joins      int
	Series     []Sample
	Total      Sample // sums (Members: the peak)
	ByType     map[string]uint64
	Withheld   map[string]uint64
	SimTime    time.Duration
	Wall       time.Duration
	PeakHeap   uint64 // bytes, sampled at each step
	RAPs       []string
}

// Rate is messages a second of n over d.
func Rate(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// View lets a Check look at the run.
type View struct {
	w    *world
	raps []int
	// Count is each proxy's member count as the trace has applied it.
	Count []int
	At    time.Duration
}

// RAPView is what RAP r (an index into RAPs) holds of JAP j's count: its
// Targets, or 0 if it holds nothing.
func (v *View) RAPView(r, j int) int {
	jap := v.w.proxies[j].m.Addr
	for _, e := range v.w.proxies[v.raps[r]].p.RAPTable()[Group] {
		if e.Addr == jap {
			return e.Targets
		}
	}
	return 0
}

// RAPs is the number of the group's RAPs.
func (v *View) RAPs() int { return len(v.raps) }

// JAPCount is JAP j's own count of the group's targets, from its stats.
func (v *View) Proxy(j int) *overlay.Proxy { return v.w.proxies[j].p }

// RunFig6 runs one fig6 event on cfg.Proxies real proxies.
//
// Who knows whom: the event exercises registration, not membership or
// health (no HealthTick runs: every proxy is alive throughout). So that
// 10,000 proxies fit in one process, each proxy is configured with itself
// and the group's RAPs (and the echo group's) only, and the RAPs with
// every proxy: rendezvous hashing over that subset picks the same RAPs as
// over all proxies, so every message is the one a full mesh would send.
// The anti-entropy Digest, which compares member lists that differ here
// only by this shortcut, is turned off (DigestEvery < 0; it never reached
// the network anyway).
//
// Only the proxies whose Proxy.TickDue has come are ticked: a Tick before
// then does nothing, so the run is the one ticking all would give (tested),
// without the 10,000 idle Ticks a second.
//
// Members join and leave through the real entry point: each is an edge
// address that sends a Join (or Leave) to the group's anycast address,
// handed to its proxy's HandleControl. Targets send no keepalives (their
// timeout is longer than the event): keepalives never reach a RAP.
func RunFig6(cfg Fig6Config) (*Fig6Result, error) {
	start := time.Now()
	if cfg.Replicas <= 0 {
		cfg.Replicas = 4
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.Link == (overlaytest.Link{}) {
		cfg.Link = overlaytest.Link{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond}
	}
	if cfg.Sample <= 0 {
		cfg.Sample = time.Minute
	}
	if cfg.Duration <= 0 && len(cfg.Trace) > 0 {
		cfg.Duration = cfg.Trace[len(cfg.Trace)-1].At + time.Second
	}
	inacc := cfg.Inaccuracy
	if inacc == 0 {
		inacc = -1 // overlay: negative reports every change (0 is its default, 25)
	}
	// Member slots: each proxy needs as many edge addresses as it has
	// members at its busiest.
	cur, peakAt := make([]int, cfg.Proxies), make([]int, cfg.Proxies)
	for _, e := range cfg.Trace {
		if e.Proxy < 0 || e.Proxy >= cfg.Proxies {
			return nil, fmt.Errorf("sim: trace names proxy %d of %d", e.Proxy, cfg.Proxies)
		}
		if e.Join {
			cur[e.Proxy]++
			peakAt[e.Proxy] = max(peakAt[e.Proxy], cur[e.Proxy])
		} else if cur[e.Proxy]--; cur[e.Proxy] < 0 {
			return nil, fmt.Errorf("sim: trace has a leave at proxy %d at %v with no member there", e.Proxy, e.At)
		}
	}
	members := make([]overlay.Member, cfg.Proxies)
	names := make([]string, cfg.Proxies)
	for i := range members {
		members[i] = proxyMember(i, 10)
		names[i] = members[i].Name
	}
	rapSet := map[int]bool{}
	var raps []int
	for _, g := range []router.Group{Group, router.EchoGroup(Group.Addr)} {
		for _, n := range overlay.RAPs(g, names, cfg.Replicas) {
			i := indexOf(names, n)
			if !rapSet[i] {
				rapSet[i] = true
			}
			if g == Group {
				raps = append(raps, i)
			}
		}
	}
	known := make([]overlay.Member, 0, len(rapSet)+1)
	for i := range members {
		if rapSet[i] {
			known = append(known, members[i])
		}
	}
	w := newWorld(cfg.Seed, cfg.Link)
	w.withhold = func(t overlay.Type) bool { return t == overlay.TypeDigest }
	w.skipIdle = !cfg.tickAll
	res := &Fig6Result{Proxies: cfg.Proxies, Inaccuracy: cfg.Inaccuracy}
	for _, i := range raps {
		res.RAPs = append(res.RAPs, names[i])
	}
	// Registration accounting, from the proxies' register events.
	lastReg := make([]int, cfg.Proxies)
	var step Sample
	echo := router.EchoGroup(Group.Addr)
	onEvent := func(e overlay.Event) {
		if e.Kind != overlay.EventRegister || len(e.JAPs) == 0 {
			return
		}
		n := uint64(len(e.RAPs))
		switch e.Group {
		case Group:
			j := w.byName[e.Proxy]
			step.Registers += n
			if t := e.JAPs[0].Targets; t != lastReg[j] {
				step.Changes += n
				lastReg[j] = t
			} else {
				step.Refreshes += n
			}
		case echo:
			step.Echo += n
		}
	}
	slot := 0
	free := make([][]netip.Addr, cfg.Proxies)
	for i, m := range members {
		pol := &overlay.EdgePolicy{Name: "members@" + m.Name, PublicKey: [32]byte{0xed, byte(i), byte(i >> 8), byte(i >> 16)},
			Groups: []router.Group{Group}}
		edges := make(map[netip.Addr]*overlay.EdgePolicy, peakAt[i])
		for k := 0; k < peakAt[i]; k++ {
			a := edgeAddr(slot)
			slot++
			edges[a] = pol
			free[i] = append(free[i], a)
		}
		slices.Reverse(free[i]) // pop from the end: lowest address first
		kn := known
		if rapSet[i] {
			kn = members
		}
		digests := time.Duration(-1) // withheld anyway: not even made
		if cfg.tickAll {
			digests = 0
		}
		_, err := w.addProxy(m, overlay.ProxyConfig{Members: kn, Edges: edges, Replicas: cfg.Replicas, DigestEvery: digests,
			Inaccuracy: inacc, TargetTimeout: 1000 * time.Hour, JoinRate: 1e9, JoinBurst: 1 << 30,
			Rand: rand.New(rand.NewPCG(cfg.Seed, uint64(i))), OnEvent: onEvent})
		if err != nil {
			return nil, err
		}
	}
	w.tickEvery(cfg.Tick, func(s *simProxy) { s.p.Tick() })

	// The trace, applied through each proxy's HandleControl.
	view := &View{w: w, raps: raps, Count: make([]int, cfg.Proxies)}
	active := make([][]netip.Addr, cfg.Proxies)
	t0 := w.clk.Now()
	var epoch uint32
	group := netip.AddrPortFrom(Group.Addr, ControlPort)
	size := 0
	apply := func(e Event) {
		s := w.proxies[e.Proxy]
		var msg overlay.Msg
		var from netip.Addr
		if e.Join {
			from = free[e.Proxy][len(free[e.Proxy])-1]
			free[e.Proxy] = free[e.Proxy][:len(free[e.Proxy])-1]
			active[e.Proxy] = append(active[e.Proxy], from)
			epoch++
			msg = &overlay.Join{Group: Group, Port: 80, Epoch: epoch, Weight: 1}
			view.Count[e.Proxy]++
			size++
			res.Joins++
			res.Peak = max(res.Peak, size)
		} else {
			// The trace names no member: the latest to join leaves.
			k := len(active[e.Proxy]) - 1
			from = active[e.Proxy][k]
			active[e.Proxy] = active[e.Proxy][:k]
			free[e.Proxy] = append(free[e.Proxy], from)
			msg = &overlay.Leave{Group: Group, Port: 80}
			view.Count[e.Proxy]--
			size--
		}
		b, err := overlay.AppendMsg(nil, 0, msg)
		if err != nil {
			panic(err)
		}
		s.handle(netip.AddrPortFrom(from, 40000), group, b)
	}
	var heap runtime.MemStats
	sample := func(end time.Duration) {
		step.At, step.Members, step.Wire = end, size, w.totalSent()
		res.Series = append(res.Series, step)
		step = Sample{}
		runtime.ReadMemStats(&heap)
		res.PeakHeap = max(res.PeakHeap, heap.HeapAlloc)
		if cfg.Progress != nil && len(res.Series)%10 == 0 {
			fmt.Fprintf(cfg.Progress, "  %s: %v of %v simulated, %d members, %.0f s wall, heap %d MiB\n",
				cfg.Label, end, cfg.Duration, size, time.Since(start).Seconds(), heap.HeapAlloc>>20)
		}
	}
	next := 0
	for end := cfg.Sample; ; end += cfg.Sample {
		end = min(end, cfg.Duration)
		for next < len(cfg.Trace) && cfg.Trace[next].At < end {
			e := cfg.Trace[next]
			w.clk.Advance(time.Duration(t0 + int64(e.At) - w.clk.Now()))
			if cfg.Check != nil {
				view.At = e.At
				cfg.Check(view)
			}
			apply(e)
			next++
		}
		w.clk.Advance(time.Duration(t0 + int64(end) - w.clk.Now()))
		sample(end)
		if end >= cfg.Duration {
			break
		}
	}
	// Wire counts are cumulative per sample: make them per step.
	for i := len(res.Series) - 1; i > 0; i-- {
		res.Series[i].Wire -= res.Series[i-1].Wire
	}
	for _, s := range res.Series {
		res.Total.Registers += s.Registers
		res.Total.Changes += s.Changes
		res.Total.Refreshes += s.Refreshes
		res.Total.Echo += s.Echo
		res.Total.Wire += s.Wire
	}
	res.Total.Members, res.Total.At = res.Peak, cfg.Duration
	res.ByType, res.Withheld = map[string]uint64{}, map[string]uint64{}
	for t := range w.sent {
		if w.sent[t] > 0 {
			res.ByType[overlay.Type(t).String()] = w.sent[t]
		}
		if w.withheld[t] > 0 {
			res.Withheld[overlay.Type(t).String()] = w.withheld[t]
		}
	}
	res.SimTime = cfg.Duration
	res.Wall = time.Since(start)
	return res, nil
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}
