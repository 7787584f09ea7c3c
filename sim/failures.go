package sim

import (
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/overlay/overlaytest"
)

// FailuresConfig is the failures scenario: a full mesh of proxies in
// clusters, health monitoring as a node runs it, then one proxy killed, a
// whole cluster killed, and a partition between two halves of the
// clusters.
type FailuresConfig struct {
	Proxies, Cluster int
	Seed             uint64
	Link             overlaytest.Link // zero: 10 ms ± 5 ms
	Rest             time.Duration    // the at-rest window; 0: 10 s
	Window           time.Duration    // how long each event is watched; 0: 10 s
	Progress         io.Writer
}

// FailureEvent is what one event measured.
type FailureEvent struct {
	Name string
	// Detect is, for every live proxy and every victim, how long after the
	// event it held the victim dead, sorted; Missed counts the pairs that
	// did not within the window.
	Detect Detections
	Missed int
	// Messages are the control messages sent during the window; False the
	// deaths declared of proxies that were alive and reachable.
	Messages, False uint64
	// Fails are the Fail and News messages among them: what telling the
	// deaths cost. Declared counts the deaths declared by a proxy's own
	// verdict (each is told to its cluster and 3 of every other).
	Fails, Declared uint64
	// ByType is Messages by type.
	ByType map[string]uint64
}

// FailuresResult is a failures run.
type FailuresResult struct {
	Proxies, Cluster int
	// RestPerProxy is control messages per proxy per second at rest, by
	// type and in all.
	RestPerProxy float64
	RestByType   map[string]float64
	// StartByType is the control messages of the first simulated
	// second, by type: every proxy's first announcements.
	StartByType   map[string]uint64
	Events        []FailureEvent
	SimTime, Wall time.Duration
	PeakHeap      uint64
	BytesPerPair  float64 // heap per (proxy, member it knows) after start
}

// RunFailures runs the scenario on cfg.Proxies proxies that all know each
// other (a static full mesh), with HealthTick every probe interval (100 ms)
// and Tick every second.
func RunFailures(cfg FailuresConfig) (*FailuresResult, error) {
	start := time.Now()
	if cfg.Link == (overlaytest.Link{}) {
		cfg.Link = overlaytest.Link{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond}
	}
	if cfg.Rest <= 0 {
		cfg.Rest = 10 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 10 * time.Second
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	members := make([]overlay.Member, cfg.Proxies)
	for i := range members {
		members[i] = proxyMember(i, cfg.Cluster)
	}
	// One member table for every proxy: each copies it only if it learns
	// a proxy, which a static mesh never does.
	shared := overlay.NewMemberList(members)
	w := newWorld(cfg.Seed, cfg.Link)
	// ev is the event under way (nil: none yet).
	var ev *watching
	var falseDeaths uint64
	victims := make([]bool, cfg.Proxies) // by proxy
	var partitioned func(i, v int) bool
	for i, m := range members {
		i := i
		_, err := w.addProxy(m, overlay.ProxyConfig{Shared: shared, Replicas: 4, Health: overlay.HealthConfig{Incarnation: 1},
			Rand: rand.New(rand.NewPCG(cfg.Seed, uint64(i))),
			OnEvent: func(e overlay.Event) {
				if e.Kind != overlay.EventDead || ev == nil {
					return
				}
				// By its name, not w.byName: a partition is 5×10⁷ of
				// these, and the map lookups were 3 % of its CPU.
				v, ok := proxyIndex(e.Name)
				if !ok || v >= len(victims) {
					return
				}
				if !victims[v] && (partitioned == nil || !partitioned(i, v)) {
					falseDeaths++
					return
				}
				ev.dead(i, v, partitioned, w.clk.Now())
			}})
		if err != nil {
			return nil, err
		}
		if cfg.Progress != nil && (i+1)%1000 == 0 {
			fmt.Fprintf(cfg.Progress, "  failures: %d proxies started, %.0f s wall\n", i+1, time.Since(start).Seconds())
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	res := &FailuresResult{Proxies: cfg.Proxies, Cluster: cfg.Cluster, RestByType: map[string]float64{}}
	res.BytesPerPair = float64(after.HeapAlloc-min(before.HeapAlloc, after.HeapAlloc)) / float64(cfg.Proxies) / float64(cfg.Proxies)
	res.PeakHeap = after.HeapAlloc
	w.tickEvery(100*time.Millisecond, func(s *simProxy) { s.p.HealthTick() })
	w.tickEvery(time.Second, func(s *simProxy) { s.p.Tick() })
	heap := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		res.PeakHeap = max(res.PeakHeap, m.HeapAlloc)
	}
	// Warm up (first Alives, admits exchange), then measure at rest.
	w.clk.Advance(time.Second)
	res.StartByType = byType(w.sent, [64]uint64{})
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "  failures: first second %v, %.0f s wall\n", res.StartByType, time.Since(start).Seconds())
	}
	w.clk.Advance(4 * time.Second)
	sent0 := w.sent
	w.clk.Advance(cfg.Rest)
	var total uint64
	for t := range w.sent {
		if d := w.sent[t] - sent0[t]; d > 0 {
			r := float64(d) / cfg.Rest.Seconds() / float64(cfg.Proxies)
			res.RestByType[overlay.Type(t).String()] = r
			total += d
		}
	}
	res.RestPerProxy = float64(total) / cfg.Rest.Seconds() / float64(cfg.Proxies)
	heap()
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "  failures: at rest %.1f msgs/proxy/s, %.0f s wall\n", res.RestPerProxy, time.Since(start).Seconds())
	}
	cluster := func(c int) []int {
		var out []int
		for i := c * cfg.Cluster; i < min((c+1)*cfg.Cluster, cfg.Proxies); i++ {
			out = append(out, i)
		}
		return out
	}
	clusters := (cfg.Proxies + cfg.Cluster - 1) / cfg.Cluster
	watch := func(name string, vs []int, do func()) {
		falseDeaths = 0
		for _, v := range vs {
			victims[v] = true
		}
		t0 := w.clk.Now()
		ev = newWatching(cfg.Proxies, vs, t0)
		fails := func() uint64 { return w.sent[overlay.TypeFail] + w.sent[overlay.TypeNews] }
		declared := func() (n uint64) {
			for _, s := range w.proxies {
				n += s.p.Stats().FailsDeclared
			}
			return n
		}
		before, fails0, dec0, sent0 := w.totalSent(), fails(), declared(), w.sent
		do()
		// A second at a time: a partition of 10,000 takes minutes of wall
		// time, and the pairs learned so far show how it goes.
		for left := cfg.Window; left > 0; left -= time.Second {
			w.clk.Advance(min(left, time.Second))
			if cfg.Progress != nil && left > time.Second {
				fmt.Fprintf(cfg.Progress, "    %s: %v on, %d messages, %d (proxy, victim) pairs learned, %.0f s wall\n",
					name, time.Duration(w.clk.Now()-t0), w.totalSent()-before, ev.detect.Len(), time.Since(start).Seconds())
			}
		}
		fe := FailureEvent{Name: name, Messages: w.totalSent() - before, False: falseDeaths, Fails: fails() - fails0, Declared: declared() - dec0,
			ByType: byType(w.sent, sent0)}
		for i, s := range w.proxies {
			if !s.host.IsUp() {
				continue
			}
			for k, v := range vs {
				if v == i || (partitioned != nil && !partitioned(i, v)) {
					continue
				}
				if !ev.seen(i, k) {
					fe.Missed++
				}
			}
		}
		fe.Detect = ev.detect
		ev = nil
		res.Events = append(res.Events, fe)
		heap()
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "  failures: %s: %d messages %v, %d deaths declared, %.0f s wall\n", name, fe.Messages, fe.ByType, fe.Declared, time.Since(start).Seconds())
		}
	}
	one := cfg.Proxies / 2
	watch(fmt.Sprintf("kill %s", ProxyName(one)), []int{one}, func() { w.net.Down(ProxyName(one)) })
	cl := cluster(clusters / 4)
	watch(fmt.Sprintf("kill cluster %s (%d proxies)", members[cl[0]].Cluster, len(cl)), cl, func() {
		for _, v := range cl {
			w.net.Down(ProxyName(v))
		}
	})
	// The partition: the first half of the clusters from the second.
	half := (clusters / 2) * cfg.Cluster
	var a, b []string
	var all []int
	for i := range members {
		if i < half {
			a = append(a, ProxyName(i))
		} else {
			b = append(b, ProxyName(i))
		}
		if w.proxies[i].host.IsUp() {
			all = append(all, i)
		}
	}
	partitioned = func(i, v int) bool { return (i < half) != (v < half) }
	watch(fmt.Sprintf("partition %d | %d proxies", len(a), len(b)), all, func() { w.net.Partition(a, b) })
	res.SimTime = time.Duration(w.clk.Now()) - time.Hour
	res.Wall = time.Since(start)
	return res, nil
}

// byType is the messages sent between two counts, by type name.
func byType(now, then [64]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for t := range now {
		if d := now[t] - then[t]; d > 0 {
			out[overlay.Type(t).String()] = d
		}
	}
	return out
}

// watching is what an event has seen so far: for each proxy and victim,
// whether (a bit) and how long after the event (a duration, unordered)
// the proxy first held the victim dead. A map of pairs to times was 2.5
// GB at 10,000 proxies, in the partition.
type watching struct {
	victim []int32 // by proxy: its place among the victims, or -1
	n      int     // victims
	bits   []uint64
	t0     int64
	detect Detections
}

func newWatching(proxies int, vs []int, t0 int64) *watching {
	ev := &watching{victim: make([]int32, proxies), n: len(vs), bits: make([]uint64, (proxies*len(vs)+63)/64), t0: t0}
	for i := range ev.victim {
		ev.victim[i] = -1
	}
	for k, v := range vs {
		ev.victim[v] = int32(k)
	}
	return ev
}

func (ev *watching) seen(i, k int) bool {
	b := i*ev.n + k
	return ev.bits[b/64]&(1<<(b%64)) != 0
}

// dead notes that proxy i held v dead at now, if v is a victim of the
// event (and, in a partition, on the other side) and i did not before.
func (ev *watching) dead(i, v int, partitioned func(i, v int) bool, now int64) {
	k := ev.victim[v]
	if k < 0 || v == i || (partitioned != nil && !partitioned(i, v)) || ev.seen(i, int(k)) {
		return
	}
	b := i*ev.n + int(k)
	ev.bits[b/64] |= 1 << (b % 64)
	ev.detect.add(time.Duration(now - ev.t0))
}

// Detections are how long after an event each (proxy, victim) pair
// learned of it, counted by the millisecond: a partition of 10,000 is
// 5 × 10⁷ of them, 400 MB as a list.
type Detections struct {
	perMs []uint64 // perMs[k]: those in [k, k+1) ms
	n     int
}

func (d *Detections) add(t time.Duration) {
	k := int(max(t, 0) / time.Millisecond)
	if k >= len(d.perMs) {
		d.perMs = append(d.perMs, make([]uint64, k+1-len(d.perMs))...)
	}
	d.perMs[k]++
	d.n++
}

// Len is how many there are.
func (d *Detections) Len() int { return d.n }

// Percentile is the p-th percentile (0..100), to the millisecond below:
// the element at p/100 of the way through them sorted.
func (d *Detections) Percentile(p float64) time.Duration {
	if d.n == 0 {
		return 0
	}
	i := uint64(p / 100 * float64(d.n-1))
	var seen uint64
	for k, c := range d.perMs {
		if seen += c; seen > i {
			return time.Duration(k) * time.Millisecond
		}
	}
	return time.Duration(len(d.perMs)-1) * time.Millisecond
}
