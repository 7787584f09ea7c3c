package overlay

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/pias-net/pias/overlay/overlaytest"
)

// newHealthNet starts bare health detectors, clusters[i] of them in
// cluster c<i+1>, at incarnation 100, on the unit tests' links.
func newHealthNet(t testing.TB, clusters ...int) (*harness, []Member) {
	return newHealthNetSeed(t, 1, clusters...)
}

// newHealthNetSeed is newHealthNet with the network's seed.
func newHealthNetSeed(t testing.TB, seed uint64, clusters ...int) (*harness, []Member) {
	n := newHarness(t, seed, unitLink)
	ms := clusterMembers(clusters...)
	for _, m := range ms {
		n.startHealth(m, ms, 100)
	}
	return n, ms
}

// clusterMembers names clusters[i] members of cluster c<i+1>, p1 on.
func clusterMembers(clusters ...int) []Member {
	var ms []Member
	for c, size := range clusters {
		for range size {
			ms = append(ms, testMember(len(ms)+1, fmt.Sprintf("c%d", c+1)))
		}
	}
	return ms
}

// probeInterval is the detectors' (the default).
const probeInterval = 100 * time.Millisecond

// step runs one probe interval.
func (h *harness) step() { h.run(probeInterval) }

// stepsUntil runs until cond holds, at most max probe intervals, and
// returns the intervals it took, counting the one under way.
func (h *harness) stepsUntil(max int, cond func() bool) int {
	h.t.Helper()
	d := h.until(time.Duration(max)*probeInterval, "the condition", cond)
	return int((d + probeInterval - 1) / probeInterval)
}

// delivered counts the messages delivered so far.
func (h *harness) delivered() uint64 { return h.net.Stats().Received }

func TestHealthDetectsDeathInCluster(t *testing.T) {
	n, _ := newHealthNet(t, 3)
	n.run(5 * probeInterval)
	for _, v := range []string{"p1", "p2", "p3"} {
		for _, o := range []string{"p1", "p2", "p3"} {
			if n.state(v, o) != StateAlive {
				t.Fatalf("%s sees %s %v at rest", v, o, n.state(v, o))
			}
		}
	}
	n.kill("p3")
	suspected := n.stepsUntil(10, func() bool { return n.state("p1", "p3") != StateAlive })
	if n.state("p1", "p3") != StateSuspect {
		t.Fatalf("p3 went %v before suspect", n.state("p1", "p3"))
	}
	steps := suspected + n.stepsUntil(10, n.allSee("p3", StateDead))
	t.Logf("suspected after %d, dead everywhere after %d probe intervals", suspected, steps)
	if steps > 8 {
		t.Errorf("detection took %d intervals (%v), want < 1 s", steps, time.Duration(steps)*100*time.Millisecond)
	}
	if c := n.changes["p1"]; len(c) == 0 || c[len(c)-1].dead[0].Name != "p3" {
		t.Errorf("p1 was not told of p3's death: %+v", c)
	}
}

func TestHealthIndirectProbeClearsSuspicion(t *testing.T) {
	n, _ := newHealthNet(t, 4)
	n.net.Cut("p1", "p2") // p1 cannot reach p2, others can
	for range 30 {
		n.step()
		if s := n.state("p1", "p2"); s == StateDead {
			t.Fatal("p1 declared p2 dead though its helpers reach it")
		}
	}
}

func TestHealthWatchersAndDissemination(t *testing.T) {
	// Four clusters of three: each proxy watches its own cluster and 2
	// members of 2 other clusters.
	n, ms := newHealthNet(t, 3, 3, 3, 3)
	watchers := map[string]map[string]bool{} // cluster → outsiders watching it
	for _, m := range ms {
		h := n.node(m.Name).health()
		w := h.watchedNames()
		for _, name := range w {
			o := h.memberNamed(name)
			if o.Cluster == m.Cluster {
				continue
			}
			if watchers[o.Cluster] == nil {
				watchers[o.Cluster] = map[string]bool{}
			}
			watchers[o.Cluster][m.Name] = true
		}
		if len(w) != 2+2*2 {
			t.Errorf("%s watches %d members, want 6", m.Name, len(w))
		}
	}
	for c, ws := range watchers {
		t.Logf("cluster %s watched by %d outsiders", c, len(ws))
		if len(ws) < 2 {
			t.Errorf("cluster %s is watched by only %v", c, ws)
		}
	}
	if len(watchers) != 4 {
		t.Errorf("only clusters %v are watched from outside", watchers)
	}
	// A whole cluster dies: every other proxy learns it, watcher or not.
	n.run(3 * probeInterval)
	for _, m := range ms {
		if m.Cluster == "c2" {
			n.kill(m.Name)
		}
	}
	steps := n.stepsUntil(20, func() bool {
		for _, m := range ms {
			if m.Cluster == "c2" && !n.allSee(m.Name, StateDead)() {
				return false
			}
		}
		return true
	})
	t.Logf("cluster c2 dead everywhere after %d intervals", steps)
	// At rest again, nobody probes the dead cluster more than once a second.
	before := n.delivered()
	n.run(time.Second)
	t.Logf("%d messages delivered per second among 9 proxies at rest", n.delivered()-before)
}

func TestHealthRestartAndRefute(t *testing.T) {
	n, ms := newHealthNet(t, 2, 1)
	n.run(3 * probeInterval)
	n.kill("p2")
	n.stepsUntil(10, n.allSee("p2", StateDead))
	// A restart with a higher incarnation: its Alive revives it at once.
	n.startHealth(ms[1], ms, 200)
	n.stepsUntil(2, n.allSee("p2", StateAlive))
	if c := n.changes["p1"]; len(c[len(c)-1].revived) != 1 {
		t.Errorf("p1 was not told p2 came back: %+v", c[len(c)-1])
	}
	// A restart at the same incarnation (a clock that went back): the
	// others tell it it is dead, and it refutes at a higher incarnation.
	n.kill("p2")
	n.stepsUntil(10, n.allSee("p2", StateDead))
	h := n.startHealth(ms[1], ms, 200)
	n.stepsUntil(5, n.allSee("p2", StateAlive))
	h.mu.Lock()
	inc := h.inc
	h.mu.Unlock()
	if inc <= 200 {
		t.Errorf("p2 refuted at incarnation %d, want > 200", inc)
	}
	n.run(5 * probeInterval)
	for _, v := range []string{"p1", "p3"} {
		if s := n.state(v, "p2"); s != StateAlive {
			t.Errorf("%s sees p2 %v", v, s)
		}
	}
}

func TestHealthFailAboutSelfIsRefuted(t *testing.T) {
	n, ms := newHealthNet(t, 3)
	n.run(3 * time.Second) // past its restart window: a death of this life
	h1 := n.node("p1").health()
	h1.handle(ms[1].Addr, 0, failMsg("p1", 100).m)
	n.settle()
	if h1.inc != 101 {
		t.Fatalf("p1 incarnation %d after a Fail at 100, want 101", h1.inc)
	}
	// A stale Fail (older incarnation) about a live member changes nothing.
	h2 := n.node("p2").health()
	h2.handle(ms[2].Addr, 0, failMsg("p1", 100).m)
	n.settle()
	if s := n.state("p2", "p1"); s != StateAlive {
		t.Fatalf("stale Fail made p2 see p1 %v", s)
	}
	names := []string{}
	for _, m := range h2.live() {
		names = append(names, m.Name)
	}
	if !slices.Equal(names, []string{"p1", "p2", "p3"}) {
		t.Errorf("live %v", names)
	}
}

// healthAtRest is how many health messages each of total simulated
// proxies (clusters of up to 10) sends per second at rest, with default
// timers. The run is exact: the clock and the net are simulated.
func healthAtRest(t testing.TB, total int) float64 {
	var clusters []int
	switch total {
	case 3:
		clusters = []int{2, 1}
	default:
		for range total / 10 {
			clusters = append(clusters, 10)
		}
	}
	n, _ := newHealthNet(t, clusters...)
	n.run(3*probeInterval + probeInterval/2)
	before := n.delivered()
	n.run(time.Second)
	return float64(n.delivered()-before) / float64(total)
}

// TestHealthMessagesAtRest: the health traffic at rest per proxy is what
// 2-tier monitoring promises: ClusterProbes (8) of its own cluster and 2×2
// watched members elsewhere, each probed and answered 10 times a second,
// so it stops growing with the overlay (and with the cluster). (BenchmarkHealthAtRest300 reports
// it for 300 proxies.)
func TestHealthMessagesAtRest(t *testing.T) {
	for _, tc := range []struct{ total, most int }{{3, 40}, {30, 260}} {
		per := healthAtRest(t, tc.total)
		t.Logf("%d proxies: %.0f health messages sent per proxy per second at rest", tc.total, per)
		if per == 0 || per > float64(tc.most) {
			t.Errorf("%d proxies: %.0f health messages per proxy per second at rest, want 1..%d", tc.total, per, tc.most)
		}
	}
}

// BenchmarkHealthAtRest300 reports the health messages per proxy per
// second at rest with 300 proxies in 30 clusters (260 with the defaults,
// as with 30: 2-tier monitoring does not grow with the overlay).
func BenchmarkHealthAtRest300(b *testing.B) {
	var per float64
	for range b.N {
		per = healthAtRest(b, 300)
	}
	b.ReportMetric(per, "msgs/proxy/s")
}

// TestHealthRingInBigCluster: in clusters of 20, each proxy probes
// ClusterProbes (8) of its own cluster, and every proxy is probed by
// exactly 8 of its cluster, so none goes unwatched. A death is told
// cluster by cluster (to FailFanout proxies of each other cluster, which
// tell theirs), yet reaches every live proxy, at about FailFanout messages
// per proxy rather than one from every proxy to every other.
func TestHealthRingInBigCluster(t *testing.T) {
	n, ms := newHealthNet(t, 20, 20, 20)
	n.run(5 * probeInterval)
	byCluster := map[string]int{}
	for _, m := range ms {
		hd := n.node(m.Name).hd
		inCluster := 0
		for _, w := range hd.watchedNames() {
			if hd.memberNamed(w).Cluster == m.Cluster {
				inCluster++
				byCluster[w]++
			}
		}
		if inCluster != 8 {
			t.Errorf("%s probes %d of its cluster, want 8", m.Name, inCluster)
		}
	}
	for _, m := range ms {
		if byCluster[m.Name] != 8 {
			t.Errorf("%s is probed by %d of its cluster, want 8", m.Name, byCluster[m.Name])
		}
	}
	var fails uint64
	n.net.Trace(func(p overlaytest.Packet) {
		if len(p.Payload) >= HeaderLen && (Type(p.Payload[3]) == TypeFail || Type(p.Payload[3]) == TypeNews) {
			fails++
		}
	})
	n.kill("p25")
	steps := n.stepsUntil(20, n.allSee("p25", StateDead))
	t.Logf("p25 dead everywhere after %d probe intervals, %d Fail and News messages", steps, fails)
	// Up to 12 proxies declare it (8 of its cluster, 4 outsiders), each
	// telling its cluster (19) and FailFanout (2) of each other cluster
	// (4); about 3 per cluster pass it on to their cluster (19 each).
	// Every proxy telling every other was 59×58.
	if most := uint64(12*(19+4) + 9*19); fails > most {
		t.Errorf("%d Fail and News messages for one death, want at most %d", fails, most)
	}
}

// TestHealthStarvedProxyWaitsItsTicks: a proxy starved of CPU ticks late.
// A suspicion then spans ConfirmTimeout of the clock without a tick in
// between, during which the suspect's answers wait unread; the first
// late tick must not declare the death, and the answer read after it
// clears the suspicion. A member that stays silent is still declared dead
// after ConfirmTimeout at the normal pace.
func TestHealthStarvedProxyWaitsItsTicks(t *testing.T) {
	var now int64
	ms := []Member{testMember(1, "c1"), testMember(2, "c1"), testMember(3, "c1")}
	var lastProbe uint32 // seq of the last probe of p2
	h := newHealth(HealthConfig{Incarnation: 100}, ms[0], ms, nil, func() int64 { return now },
		func(to netip.Addr, seq uint32, m Msg) {
			if _, ok := m.(*Probe); ok && to == ms[1].Addr {
				lastProbe = seq
			}
		}, func(change) {})
	state := func() MemberState { return st2(h) }
	answer := func() { h.handle(ms[1].Addr, lastProbe, &ProbeAck{From: "p2", Incarnation: 100}) }
	h.handle(ms[1].Addr, 0, &Probe{From: "p2", Incarnation: 100}) // heard
	for range 5 {
		now += int64(probeInterval)
		h.tick()
		answer()
	}
	if state() != StateAlive {
		t.Fatalf("p2 %v while it answers", state())
	}
	ticks := 0
	for state() == StateAlive && ticks < 10 {
		now += int64(probeInterval)
		h.tick()
		ticks++
	}
	if state() != StateSuspect {
		t.Fatalf("p2 %v after %d silent ticks, want suspect", state(), ticks)
	}
	// Starved: the next tick comes 400 ms later; p2's answer waits.
	now += int64(4 * probeInterval)
	h.tick()
	if state() == StateDead {
		t.Fatal("p2 declared dead at the first tick after a stall, before its answer could be read")
	}
	answer()
	if state() != StateAlive {
		t.Fatalf("p2 %v after its answer", state())
	}
	// Silent for good: dead at the normal pace.
	ticks = 0
	for state() != StateDead && ticks < 20 {
		now += int64(probeInterval)
		h.tick()
		ticks++
	}
	if want := h.cfg.ProbeMisses + 1 + int(h.cfg.ConfirmTimeout/h.cfg.ProbeInterval); state() != StateDead || ticks > want {
		t.Errorf("p2 %v after %d silent ticks, want dead within %d", state(), ticks, want)
	}
}

// TestHealthSuspectHeardIsAlive: any message from a suspect (here it asks
// for a probe of another) shows it is up, and clears the suspicion.
func TestHealthSuspectHeardIsAlive(t *testing.T) {
	var now int64
	ms := []Member{testMember(1, "c1"), testMember(2, "c1"), testMember(3, "c1")}
	h := newHealth(HealthConfig{Incarnation: 100}, ms[0], ms, nil, func() int64 { return now },
		func(netip.Addr, uint32, Msg) {}, func(change) {})
	h.handle(ms[1].Addr, 0, &Probe{From: "p2", Incarnation: 100}) // heard
	for ticks := 0; st2(h) != StateSuspect; ticks++ {
		if ticks == 10 {
			t.Fatalf("p2 %v after %d silent ticks, want suspect", st2(h), ticks)
		}
		now += int64(probeInterval)
		h.tick()
	}
	h.handle(ms[1].Addr, 7, &ProbeReq{Suspect: "p3", Incarnation: 100})
	for range 5 {
		now += int64(probeInterval)
		h.tick()
		if st := st2(h); st == StateDead {
			t.Fatal("p2 declared dead though it spoke while suspect")
		}
	}
}

// TestHealthRecordsOnlyWhatItProbes: a detector keeps a probe record only
// for the members it watches, and for the dead, whose record is the
// compact one; a tick visits only those.
func TestHealthRecordsOnlyWhatItProbes(t *testing.T) {
	n, ms := newHealthNet(t, 20, 20, 20)
	n.run(5 * probeInterval)
	records := func(hd *health) (int, int) {
		hd.mu.Lock()
		defer hd.mu.Unlock()
		dead := 0
		n := 0
		for i := range hd.recs {
			x := hd.rec(int32(i))
			if x == nil {
				continue
			}
			n++
			if hd.recs[i].state == StateDead {
				dead++
				if x.live != 0 {
					t.Errorf("%s keeps the live part of dead %s", hd.self.Name, hd.ros.ms[i].Name)
				}
			}
		}
		if c := hd.hot.count(); c != n {
			t.Errorf("%s: %d hot, %d records", hd.self.Name, c, n)
		}
		return n, dead
	}
	for _, m := range ms {
		hd := n.node(m.Name).hd
		if got, want := len(hd.watchedNames()), 8+2*2; got != want {
			t.Fatalf("%s watches %d, want %d", m.Name, got, want)
		}
		if got, _ := records(hd); got != 8+2*2 {
			t.Errorf("%s keeps %d probe records of 59 members, want %d", m.Name, got, 8+2*2)
		}
	}
	n.kill("p25")
	n.stepsUntil(20, n.allSee("p25", StateDead))
	n.run(5 * probeInterval)
	for _, m := range ms {
		if m.Name == "p25" {
			continue
		}
		hd := n.node(m.Name).hd
		got, dead := records(hd)
		if dead != 1 || got != len(hd.watchedNames())+1 {
			t.Errorf("%s keeps %d probe records (%d dead), want its %d watched and p25", m.Name, got, dead, len(hd.watchedNames()))
		}
	}
}

// st2 is what h holds of p2.
func st2(h *health) MemberState {
	st, _, _ := h.state("p2")
	return st
}

// TestHealthDeadProbedByGuardiansOnly: a dead member is probed for a
// comeback by its DeadWatchers guardians (the first live members after it
// on the ring of all members), once a second each; every other live proxy
// probes only one of its dead a second, in turn (deadTurnLocked), not
// every dead member. A guardian sees one come back and everyone learns it.
func TestHealthDeadProbedByGuardiansOnly(t *testing.T) {
	n, ms := newHealthNet(t, 10, 10, 10)
	n.run(3 * probeInterval)
	dead := map[netip.Addr]string{}
	for _, m := range ms[10:20] {
		n.kill(m.Name)
		dead[m.Addr] = m.Name
	}
	n.stepsUntil(20, func() bool {
		for _, m := range ms[10:20] {
			if !n.allSee(m.Name, StateDead)() {
				return false
			}
		}
		return true
	})
	// guards[g][d]: g is one of d's guardians.
	guards := map[string]map[string]bool{}
	for _, m := range append(slices.Clone(ms[:10]), ms[20:]...) {
		h := n.node(m.Name).health()
		h.mu.Lock()
		guards[m.Name] = map[string]bool{}
		for _, i := range h.guardedLocked() {
			guards[m.Name][h.ros.ms[i].Name] = true
		}
		h.mu.Unlock()
	}
	for _, d := range ms[10:20] {
		var gs []string
		for g := range guards {
			if guards[g][d.Name] {
				gs = append(gs, g)
			}
		}
		if len(gs) != 8 {
			t.Errorf("dead %s has guardians %v, want 8", d.Name, gs)
		}
	}
	probes := map[string]map[string]int{} // prober → dead → probes
	n.net.Trace(func(p overlaytest.Packet) {
		if _, m, err := ParseMsg(p.Payload); err == nil && m.Type() == TypeProbe && dead[p.Dst.Addr()] != "" {
			if probes[p.From] == nil {
				probes[p.From] = map[string]int{}
			}
			probes[p.From][dead[p.Dst.Addr()]]++
		}
	})
	n.run(3 * time.Second)
	n.net.Trace(nil)
	total := 0
	for g, byDead := range probes {
		turns := 0
		for d, k := range byDead {
			total += k
			if !guards[g][d] {
				turns += k
			}
		}
		for d := range guards[g] {
			if byDead[d] < 2 || byDead[d] > 4 {
				t.Errorf("guardian %s probed dead %s %d times in 3 s, want about 3", g, d, byDead[d])
			}
		}
		if turns > 4 {
			t.Errorf("%s probed the dead it does not guard %d times in 3 s, want one a second", g, turns)
		}
	}
	// 8 guardians and at most one turn per live proxy a second, not all
	// 20 live probing all 10 dead.
	if max := 3 * (8*10 + 20); total > max+20 {
		t.Errorf("%d probes of the dead in 3 s, want at most about %d", total, max)
	}
	t.Logf("%d probes of 10 dead by 20 live in 3 s", total)
	// One comes back at the same incarnation (the Alive it sends at start
	// changes nothing for those who hold it dead): a probe finds it, tells
	// it it is dead, and its refutation reaches everyone.
	n.net.Up(ms[14].Name)
	n.stepsUntil(15, n.allSee(ms[14].Name, StateAlive))
}

// TestHealthPartitionHealsEverywhere: after a partition between two halves
// of the clusters, long enough for each side to hold the other dead, every
// proxy sees every other alive again once it heals, though only guardians
// probe the dead.
func TestHealthPartitionHealsEverywhere(t *testing.T) {
	n, ms := newHealthNet(t, 10, 10, 10, 10)
	n.run(3 * probeInterval)
	var a, b []string
	for i, m := range ms {
		if i < 20 {
			a = append(a, m.Name)
		} else {
			b = append(b, m.Name)
		}
	}
	hs := make([]*health, len(ms))
	for i, m := range ms {
		hs[i] = n.node(m.Name).health()
	}
	everyone := func(want func(viewer, of int) MemberState) func() bool {
		return func() bool {
			for i := range ms {
				for j := range ms {
					if st, _, _ := hs[i].state(ms[j].Name); i != j && st != want(i, j) {
						return false
					}
				}
			}
			return true
		}
	}
	n.net.Partition(a, b)
	n.until(10*time.Second, "each side holds the other dead", everyone(func(i, j int) MemberState {
		if (i < 20) != (j < 20) {
			return StateDead
		}
		return StateAlive
	}))
	n.net.Heal()
	d := n.until(20*time.Second, "everyone sees everyone alive", everyone(func(int, int) MemberState { return StateAlive }))
	t.Logf("healed everywhere %v after the partition ended", d)
}

// TestHealthDeadHeldByNoGuardianComesBack: views differ, and a proxy holds
// dead a member that every other proxy holds alive; it is not one of the
// member's guardians in its own view, and the member does not probe it.
// It still probes the member in its turn, sees it answer, and holds it
// alive again (the member refutes the death it is told of).
func TestHealthDeadHeldByNoGuardianComesBack(t *testing.T) {
	n, ms := newHealthNet(t, 10, 10, 10)
	n.run(3 * probeInterval)
	// Find v and p: p in another cluster than v, v does not watch p, and
	// p is not among the first DeadWatchers after v on the ring.
	var v, p, q Member
	for _, cv := range ms {
		hv := n.node(cv.Name).health()
		r := hv.ros
		guards := map[string]bool{}
		for k := 1; k <= hv.cfg.DeadWatchers; k++ {
			guards[r.ms[r.ring[(int(r.ringAt[r.byName[cv.Name]])+k)%len(r.ring)]].Name] = true
		}
		for _, cp := range ms {
			if cp.Cluster != cv.Cluster && !guards[cp.Name] && !slices.Contains(hv.watchedNames(), cp.Name) {
				v, p = cv, cp
				break
			}
		}
		if p.Name != "" {
			break
		}
	}
	if p.Name == "" {
		t.Fatal("no proxy is outside some member's guardians and watchers")
	}
	for _, m := range ms {
		if m.Cluster == p.Cluster && m.Name != p.Name {
			q = m
			break
		}
	}
	// A Fail from p's own cluster: p tells nobody.
	hp := n.node(p.Name).health()
	hp.handle(q.Addr, 0, failMsg(v.Name, 100).m)
	if n.state(p.Name, v.Name) != StateDead {
		t.Fatalf("%s does not hold %s dead after the Fail", p.Name, v.Name)
	}
	for _, m := range ms {
		if m.Name != p.Name && m.Name != v.Name && n.state(m.Name, v.Name) != StateAlive {
			t.Fatalf("%s holds %s %v, want only %s to hold it dead", m.Name, v.Name, n.state(m.Name, v.Name), p.Name)
		}
	}
	d := n.until(3*time.Second, p.Name+" sees "+v.Name+" alive again", func() bool { return n.state(p.Name, v.Name) == StateAlive })
	t.Logf("%s held %s dead alone; alive again after %v", p.Name, v.Name, d)
	n.run(time.Second)
	if !n.allSee(v.Name, StateAlive)() {
		t.Errorf("not everyone sees %s alive after its refutation", v.Name)
	}
}

// viewRight reports whether every proxy that is up sees every other as
// alive if it is up and dead if it is down.
func (h *harness) viewRight(ms []Member) func() bool {
	return func() bool {
		for _, a := range ms {
			if !h.node(a.Name).host.IsUp() {
				continue
			}
			for _, b := range ms {
				want := StateDead
				if h.node(b.Name).host.IsUp() {
					want = StateAlive
				}
				if a.Name != b.Name && h.state(a.Name, b.Name) != want {
					return false
				}
			}
		}
		return true
	}
}

// TestHealthRestartSameIncarnationLearnsTheDead: a proxy restarts at the
// incarnation it had (its clock went back, or it restarted within the
// same second), after the others held it dead, while a proxy it does not
// watch is dead. It refutes the death of its past self; every view must
// then become right: it alive for all, and the dead one dead for it too,
// though it never probes it.
func TestHealthRestartSameIncarnationLearnsTheDead(t *testing.T) {
	n, ms := newHealthNet(t, 10, 10, 10)
	n.run(3 * probeInterval)
	v := ms[0]
	watched := n.node(v.Name).health().watchedNames()
	var d Member
	for _, m := range ms[10:] {
		if !slices.Contains(watched, m.Name) {
			d = m
			break
		}
	}
	n.kill(d.Name)
	n.kill(v.Name)
	n.stepsUntil(20, func() bool { return n.allSee(d.Name, StateDead)() && n.allSee(v.Name, StateDead)() })
	n.run(time.Second)
	alives := 0
	n.net.Trace(func(p overlaytest.Packet) {
		if _, m, err := ParseMsg(p.Payload); err == nil && m.Type() == TypeAlive && p.From == v.Name {
			alives++
		}
	})
	h := n.startHealth(v, ms, 100)
	took := n.until(5*time.Second, "every view right", n.viewRight(ms))
	n.run(time.Second)
	n.net.Trace(nil)
	t.Logf("%s restarted at its incarnation; every view right after %v (it is at %d); it sent %d Alive", v.Name, took, h.incarnation(), alives)
	// Its first Alive to each, its refutation to each, and an answer to
	// each Fail it got (each proxy that held it dead answers its Alive and
	// its probe): not a refutation to all for each of those.
	if alives > 4*len(ms) {
		t.Errorf("%s sent %d Alive after its restart among %d proxies, want at most %d", v.Name, alives, len(ms), 4*len(ms))
	}
}

// TestHealthRestartedFloodIsCheap: a member floods a proxy with Restarted
// (each asks for the list of whom it holds dead, a Fail per dead member):
// it gets one list per DeadProbeInterval, or one per probe interval when
// it claims a new start each time; one about another member gets none;
// and the others' views stay right meanwhile.
func TestHealthRestartedFloodIsCheap(t *testing.T) {
	n, ms := newHealthNet(t, 10, 10, 10)
	n.run(3 * probeInterval)
	dead := ms[20:25]
	for _, d := range dead {
		n.kill(d.Name)
	}
	n.until(5*time.Second, "the 5 dead everywhere", func() bool {
		for _, d := range dead {
			if !n.allSee(d.Name, StateDead)() {
				return false
			}
		}
		return true
	})
	n.run(2 * time.Second) // past the lists that the starts asked for
	evil, target := ms[1], ms[2]
	fails := 0
	n.net.Trace(func(p overlaytest.Packet) {
		if _, m, err := ParseMsg(p.Payload); err == nil && p.From == target.Name && p.To == evil.Name {
			for _, m := range asSingles(m) {
				if m.Type() == TypeFail {
					fails++
				}
			}
		}
	})
	// One second: 1,000 asks at one incarnation, 1,000 about another member.
	for i := range 1000 {
		n.sendAs(evil.Name, target.Name, wmsg{0, &Restarted{Name: evil.Name, Incarnation: 100}})
		n.sendAs(evil.Name, target.Name, wmsg{0, &Restarted{Name: ms[3].Name, Incarnation: uint32(200 + i)}})
		n.run(time.Millisecond)
	}
	same := fails
	// One second: 1,000 asks, each claiming a new start.
	for i := range 1000 {
		n.sendAs(evil.Name, target.Name, wmsg{0, &Restarted{Name: evil.Name, Incarnation: uint32(1000 + i)}})
		n.run(time.Millisecond)
	}
	n.net.Trace(nil)
	t.Logf("1,000 Restarted at one incarnation got %d Fails; 1,000 with new ones %d more", same, fails-same)
	if same > 2*len(dead) {
		t.Errorf("1,000 Restarted at one incarnation within 1 s got %d Fails, want at most %d (two lists)", same, 2*len(dead))
	}
	if more := fails - same; more > 11*len(dead) {
		t.Errorf("1,000 Restarted claiming new starts within 1 s got %d Fails, want at most %d (one list per probe interval)", more, 11*len(dead))
	}
	if !n.viewRight(ms)() {
		t.Errorf("views went wrong during the flood")
	}
}

// TestHealthNewsBatched: deaths a proxy learns from another cluster in a
// burst go to its cluster together. The first is passed on at once, alone;
// those learned within the next probe interval go at the next tick, in
// one News to each member of its cluster, which then holds them all dead.
func TestHealthNewsBatched(t *testing.T) {
	n, ms := newHealthNet(t, 10, 10, 10)
	n.run(time.Second) // past the starts' second announcements
	relay, from, victims := ms[0], ms[10], ms[20:30]
	type sent struct {
		at    time.Duration
		to    string
		typ   Type
		items int
	}
	var out []sent
	t0 := n.clk.Now()
	n.net.Trace(func(p overlaytest.Packet) {
		if _, m, err := ParseMsg(p.Payload); err == nil && p.From == relay.Name && len(asSingles(m)) > 0 {
			out = append(out, sent{time.Duration(n.clk.Now() - t0), p.To, m.Type(), len(asSingles(m))})
		}
	})
	for _, v := range victims {
		n.kill(v.Name)
	}
	// The deaths come from c2, 2 ms apart: nobody in c1 has detected
	// them yet (that takes 6 probe intervals).
	for _, v := range victims {
		n.sendAs(from.Name, relay.Name, failMsg(v.Name, 100))
		n.run(2 * time.Millisecond)
	}
	n.run(probeInterval)
	n.net.Trace(nil)
	mates := ms[1:10]
	perMate := map[string][]sent{}
	for _, s := range out {
		perMate[s.to] = append(perMate[s.to], s)
	}
	for _, m := range mates {
		got := perMate[m.Name]
		if len(got) != 2 || got[0].typ != TypeFail || got[1].typ != TypeNews || got[1].items != len(victims)-1 {
			t.Errorf("%s got %+v from %s, want a Fail at once and then one News of %d", m.Name, got, relay.Name, len(victims)-1)
		}
		if len(got) == 2 && got[1].at > 20*time.Millisecond+probeInterval {
			t.Errorf("%s got the News %v after the first Fail came in, want within a probe interval of the last", m.Name, got[1].at)
		}
		for _, v := range victims {
			if n.state(m.Name, v.Name) != StateDead {
				t.Errorf("%s holds %s %v, want dead", m.Name, v.Name, n.state(m.Name, v.Name))
			}
		}
	}
	if len(out) != 2*len(mates) {
		t.Errorf("%s sent %d datagrams of news: %+v; want 2 to each of its cluster", relay.Name, len(out), out)
	}
}

// TestHealthNewsFloodBounded: an admitted proxy of another cluster sends
// a proxy News as fast as it can, each item a death or a comeback new to
// it, which it must pass on to its cluster. What waits for a tick stays
// within maxNewsQueued, what goes out is packed (not a datagram an item),
// the victims, who are up, are told they are held dead at most once a
// probe interval each (each of their messages was answered with a Fail,
// 16,700 in the second), and a real death in the meantime is seen
// everywhere.
func TestHealthNewsFloodBounded(t *testing.T) {
	n, ms := newHealthNet(t, 10, 10, 10)
	n.run(3 * probeInterval)
	relay, evil, victims, dies := ms[0], ms[10], ms[20:30], ms[5]
	rh := n.node(relay.Name).health()
	var datagrams, items, toVictims int
	n.net.Trace(func(p overlaytest.Packet) {
		_, m, err := ParseMsg(p.Payload)
		if err != nil || p.From != relay.Name || len(asSingles(m)) == 0 {
			return
		}
		if slices.ContainsFunc(victims, func(v Member) bool { return v.Name == p.To }) {
			toVictims++
			return
		}
		datagrams++
		items += len(asSingles(m))
	})
	n.kill(dies.Name)
	most := 0
	inc := uint32(1000)
	const flood = time.Second
	for range flood / time.Millisecond { // one News a millisecond, 32 changes each
		var news News
		for _, v := range victims[:MaxNews/2] {
			news.Items = append(news.Items, NewsItem{Name: v.Name, Incarnation: inc + 1}, NewsItem{Name: v.Name, Incarnation: inc + 2, Dead: true})
		}
		inc += 2
		n.sendAs(evil.Name, relay.Name, wmsg{0, &news})
		n.run(time.Millisecond)
		most = max(most, rh.newsQueued)
	}
	n.net.Trace(nil)
	t.Logf("32,000 changes in 1 s: %d items passed on in %d datagrams, at most %d queued; %d Fails to the victims",
		items, datagrams, most, toVictims)
	if most > maxNewsQueued {
		t.Errorf("%d news items queued, want at most %d", most, maxNewsQueued)
	}
	if items < 9*1000 {
		t.Errorf("%s passed on %d items, want the flood's changes passed to its cluster (the test's flood did nothing)", relay.Name, items)
	}
	if datagrams > items/(MaxNews/2) {
		t.Errorf("%d items went in %d datagrams, want at least %d a datagram", items, datagrams, MaxNews/2)
	}
	if most := len(victims) * int(flood/probeInterval+1); toVictims > most {
		t.Errorf("%d Fails to the %d victims in %v, want at most %d (one each a probe interval)", toVictims, len(victims), flood, most)
	}
	n.until(5*time.Second, dies.Name+" dead everywhere", n.allSee(dies.Name, StateDead))
	n.until(10*time.Second, "every view right again", n.viewRight(ms))
}

// TestHealthClusterDeathTold: a whole cluster dies. A proxy of another
// cluster that declares several of its members dead in one tick tells the
// same FailFanout proxies of each cluster about all of them, in one
// datagram each: its forwarders are picked by the victims' cluster (and
// one by itself). (By the victim, each death had forwarders of its own,
// and a partition cost a datagram for each death to each of them.)
func TestHealthClusterDeathTold(t *testing.T) {
	n, ms := newHealthNet(t, 10, 10, 10, 10, 10, 10)
	n.run(time.Second)
	cluster := map[string]string{}
	for _, m := range ms {
		cluster[m.Name] = m.Cluster
	}
	type key struct {
		from string
		tick int64
	}
	dests := map[key]map[string]int{} // datagrams to other clusters, by sender and tick
	items := map[key]int{}
	t0 := n.clk.Now()
	n.net.Trace(func(p overlaytest.Packet) {
		_, m, err := ParseMsg(p.Payload)
		if err != nil || cluster[p.From] == cluster[p.To] || cluster[p.To] == "c1" || len(asSingles(m)) == 0 {
			return
		}
		k := key{p.From, (n.clk.Now() - t0) / int64(probeInterval)}
		if dests[k] == nil {
			dests[k] = map[string]int{}
		}
		dests[k][p.To]++
		items[k] += len(asSingles(m))
	})
	dead := ms[:10]
	for _, v := range dead {
		n.kill(v.Name)
	}
	for _, v := range dead {
		n.until(5*time.Second, v.Name+" dead everywhere", n.allSee(v.Name, StateDead))
	}
	n.net.Trace(nil)
	// Up to FailFanout of each of the other 4 live clusters. (Those told
	// in the dying cluster change as its members are held dead one by
	// one.)
	var cfg HealthConfig
	cfg.defaults()
	most := cfg.FailFanout * 4
	batched := 0
	for k, to := range dests {
		if len(to) > most {
			t.Errorf("%s told %d proxies of other clusters in one tick (%d items), want at most %d", k.from, len(to), items[k], most)
		}
		for d, c := range to {
			if c > 1 {
				t.Errorf("%s sent %s %d datagrams of news in one tick, want one", k.from, d, c)
			}
		}
		if items[k] > len(to) {
			batched++
		}
	}
	if batched == 0 {
		t.Errorf("no proxy told two deaths in one tick: the test does not test the batching (%d ticks of news)", len(dests))
	}
	t.Logf("%d (sender, tick) pairs told other clusters, %d of them more than one death each", len(dests), batched)
}

// TestProbeRecSize: in a partition of 10,000 proxies every proxy holds a
// probeRec for each of 5,000 dead members, 5×10⁷ in all; each byte of it
// is 50 MB.
// Neither it nor its liveRec holds a pointer: the collector would read
// every page of them at every cycle.
func TestProbeRecSize(t *testing.T) {
	if s := unsafe.Sizeof(probeRec{}); s > 24 {
		t.Errorf("probeRec is %d bytes, want at most 24", s)
	}
	for _, v := range []any{probeRec{}, liveRec{}} {
		if p := pointerIn(reflect.TypeOf(v)); p != "" {
			t.Errorf("%T holds a pointer: %s", v, p)
		}
	}
}

// pointerIn names a field of t that is or holds a pointer, or "".
func pointerIn(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct:
		for i := range t.NumField() {
			if p := pointerIn(t.Field(i).Type); p != "" {
				return t.Field(i).Name + "." + p
			}
		}
		return ""
	case reflect.Array:
		return pointerIn(t.Elem())
	case reflect.Pointer, reflect.Slice, reflect.String, reflect.Map, reflect.Interface, reflect.Func, reflect.Chan, reflect.UnsafePointer:
		return t.String()
	}
	return ""
}

// TestRecPagesLiveReuse: a dropped record's liveRec is reused, cleared,
// by the next record that needs one, and records keep their own. (Whether
// a member has a record is health's flag, fRec.)
func TestRecPagesLiveReuse(t *testing.T) {
	var r recPages
	a, b := r.add(3), r.add(700)
	r.l(a).srtt, r.l(b).srtt = 1, 2
	if r.lv(a).srtt != 1 || r.lv(b).srtt != 2 || r.at(3) != a || r.at(700) != b {
		t.Fatalf("records mixed up: %+v %+v", *a, *b)
	}
	a.deadAt = 9
	r.remove(3)
	if *r.at(3) != (probeRec{}) || len(r.free) != 1 {
		t.Fatalf("removed record still there, or its liveRec not freed (%d free)", len(r.free))
	}
	c := r.add(5)
	if l := r.l(c); l.srtt != 0 || r.nLive != 2 {
		t.Errorf("reused liveRec not cleared (srtt %d), or a new one made (%d made)", l.srtt, r.nLive)
	}
	r.dropLive(b)
	if r.lv(b) != nil || r.vouchedAt(b) != 0 || r.at(700) != b {
		t.Errorf("dropLive: liveRec kept, or the record lost")
	}
	for i := range int32(40) {
		r.l(r.add(1000 + i)).suspectTicks = i
	}
	for i := range int32(40) {
		if got := r.lv(r.at(1000 + i)).suspectTicks; got != i {
			t.Fatalf("record %d has liveRec of %d", i, got)
		}
	}
}

// TestSortNewsByMember: the radix sort orders as a stable sort by member
// does, over one, two and three bytes of member numbers.
func TestSortNewsByMember(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, hi := range []int32{1, 200, 60000, 1 << 20} {
		for _, n := range []int{0, 1, 2, 17, 3000} {
			q := make([]queuedNews, n)
			for k := range q {
				q[k] = queuedNews{to: rng.Int32N(hi), news: NewsItem{Name: fmt.Sprint("p", k)}}
			}
			want := slices.Clone(q)
			slices.SortStableFunc(want, func(a, b queuedNews) int { return int(a.to - b.to) })
			sortNewsByMember(q)
			if !slices.Equal(q, want) {
				t.Fatalf("%d items below %d: sorted wrong", n, hi)
			}
		}
	}
}

// TestHealthWideFanout: a FailFanout wider than spreadLocked's room on the
// stack still tells that many proxies of each other cluster, and each once;
// so does the default.
func TestHealthWideFanout(t *testing.T) {
	ms := clusterMembers(10, 10, 10)
	// 0: the default, 2 (one by the victim's cluster, one by the
	// declarer): two of each cluster, not the same one twice.
	for _, fanout := range []int{7, 0} {
		h := newHealth(HealthConfig{Incarnation: 100, FailFanout: fanout}, ms[0], ms, nil, func() int64 { return 0 },
			func(netip.Addr, uint32, Msg) {}, func(change) {})
		v := ms[15] // in c2
		h.mu.Lock()
		h.spreadLocked(NewsItem{Name: v.Name, Incarnation: 100, Dead: true}, h.byName(v.Name), netip.Addr{})
		per, seen := map[string]int{}, map[int32]bool{}
		qp := h.queuedLocked()
		for _, q := range *qp {
			if seen[q.to] {
				t.Errorf("fan-out %d: %s told twice", fanout, h.ros.ms[q.to].Name)
			}
			seen[q.to] = true
			per[h.ros.ms[q.to].Cluster]++
		}
		h.mu.Unlock()
		want := map[string]int{"c1": 9, "c2": 7, "c3": 7}
		if fanout == 0 {
			want = map[string]int{"c1": 9, "c2": 2, "c3": 2}
		}
		if !maps.Equal(per, want) {
			t.Errorf("fan-out %d: told %v by cluster, want %v", fanout, per, want)
		}
	}
}

// TestLiveViewLost: lost answers as shrinks does, whether or not the dead
// it is given routed before.
func TestLiveViewLost(t *testing.T) {
	var ms []Member
	for i := range 6 {
		ms = append(ms, testMember(i+1, "c1"))
	}
	h := newHealth(HealthConfig{Incarnation: 100}, ms[0], ms, nil, func() int64 { return 0 },
		func(netip.Addr, uint32, Msg) {}, func(change) {})
	kill := func(m Member) {
		h.mu.Lock()
		h.setState(h.byName(m.Name), StateDead)
		h.mu.Unlock()
	}
	v := h.view()
	kill(ms[2])
	w := h.view()
	for _, c := range []struct {
		from, to *liveView
		dead     []*Member
		want     bool
	}{
		{v, w, []*Member{&ms[2]}, true},  // it routed in v
		{v, w, nil, true},                // shrinks finds it
		{w, w, nil, false},               // nothing lost
		{w, w, []*Member{&ms[2]}, false}, // dead already in w: no shortcut
		{w, v, nil, false},               // it came back
	} {
		if got := c.from.lost(c.to, c.dead); got != c.want || got != c.from.shrinks(c.to) {
			t.Errorf("lost(%v dead) = %v, shrinks %v, want %v", len(c.dead), got, c.from.shrinks(c.to), c.want)
		}
	}
}

// TestHealthRestartClaimsCoalesced: a member that claims restart after
// restart (its own Alive, two above the last, every millisecond) is passed
// on by the proxy it tells as its latest restart only, once a flush: each
// other proxy hears of it from that proxy about once a probe interval,
// not a thousand times a second. (The red team's finding 4; passed on by
// the forwarders too, the whole overlay still hears more than that.) Its
// last incarnation reaches everyone.
func TestHealthRestartClaimsCoalesced(t *testing.T) {
	n, ms := newHealthNet(t, 25, 25, 25)
	n.run(3 * probeInterval)
	claimant, relay := ms[30], ms[0]
	items := map[string]int{} // Alive items about the claimant from relay, by receiver
	n.net.Trace(func(p overlaytest.Packet) {
		if p.From != relay.Name {
			return
		}
		_, m, err := ParseMsg(p.Payload)
		if err != nil {
			return
		}
		for _, m := range asSingles(m) {
			if a, ok := m.(*Alive); ok && a.Name == claimant.Name {
				items[p.To]++
			}
		}
	})
	const claims = 1000
	last := uint32(1000 + 2*(claims-1))
	for k := range claims {
		n.sendAs(claimant.Name, relay.Name, wmsg{0, &Alive{Name: claimant.Name, Incarnation: uint32(1000 + 2*k)}})
		n.run(time.Millisecond)
	}
	n.run(time.Second)
	n.net.Trace(nil)
	// 1 s of claims and 1 s after: a flush each probe interval, and one
	// at once when news was quiet.
	most := int(2*time.Second/probeInterval) + 2
	worst := 0
	for _, k := range items {
		worst = max(worst, k)
	}
	t.Logf("%d claimed restarts: %s passed them on to %d proxies, at most %d items to one", claims, relay.Name, len(items), worst)
	if len(items) == 0 || worst > most {
		t.Errorf("%s passed the claims on to %d proxies, at most %d items to one; want some, at most %d", relay.Name, len(items), worst, most)
	}
	for _, m := range ms {
		if m.Name == claimant.Name {
			continue
		}
		if _, inc, _ := n.node(m.Name).health().state(claimant.Name); inc != last {
			t.Errorf("%s holds %s at %d, want its last claim %d", m.Name, claimant.Name, inc, last)
		}
	}
}

// TestHealthDeathToldTwiceAtHome: a cluster dies on links that lose 2 %
// of packets, and every live proxy learns every death. A proxy tells its
// own cluster the deaths it declares in one datagram, and its
// cluster-mates pass on nothing they hear from it, so a loss there was a
// death never learned: 2 (proxy, victim) pairs of 3,000 were still held
// alive 20 s later, each in a declarer's cluster (4 of 5,000 over 10
// seeds). The declarer now
// tells its cluster twice, a tick apart.
func TestHealthDeathToldTwiceAtHome(t *testing.T) {
	missed, pairs := 0, 0
	for seed := uint64(1); seed <= 6; seed++ { // (more cost the race detector half a minute)
		n, ms := newHealthNetSeed(t, seed, 10, 10, 10, 10, 10, 10)
		n.run(time.Second)
		lossy := unitLink
		lossy.Loss = 0.02
		n.net.SetDefault(lossy)
		for _, v := range ms[:10] {
			n.kill(v.Name)
		}
		n.run(20 * time.Second)
		for _, o := range ms[10:] {
			for _, v := range ms[:10] {
				pairs++
				if st := n.state(o.Name, v.Name); st != StateDead {
					missed++
					t.Errorf("seed %d: %s (%s) holds %s %v 20 s after its death", seed, o.Name, o.Cluster, v.Name, st)
				}
			}
		}
	}
	t.Logf("%d of %d (proxy, victim) pairs not held dead", missed, pairs)
}

// TestHealthRetoldDeathStillTrue: the second telling of a death to the
// declarer's cluster goes out only if the member is still dead at that
// incarnation: one that came back between the two was declared dead
// again by it (a death at incarnation 0 is taken at the one known).
func TestHealthRetoldDeathStillTrue(t *testing.T) {
	ms := clusterMembers(5, 5)
	for _, back := range []bool{false, true} {
		h := newHealth(HealthConfig{Incarnation: 100}, ms[0], ms, nil, func() int64 { return 0 },
			func(netip.Addr, uint32, Msg) {}, func(change) {})
		v := h.byName(ms[2].Name) // in c1, the declarer's cluster
		h.mu.Lock()
		h.setState(v, StateDead)
		h.spreadLocked(NewsItem{Name: ms[2].Name, Dead: true}, v, netip.Addr{})
		first := len(h.newsOutLocked(nil, 0, true))
		if back {
			h.setState(v, StateAlive)
			h.recs[v].inc = 7
		}
		second := h.newsOutLocked(nil, int64(probeInterval), true)
		third := h.newsOutLocked(nil, 2*int64(probeInterval), true)
		h.mu.Unlock()
		want := 3 // the other 3 live members of c1
		if back {
			want = 0
		}
		if first != 3+2 || len(second) != want || len(third) != 0 {
			t.Errorf("came back %v: told %d, then %d, then %d; want 5, %d, 0", back, first, len(second), len(third), want)
		}
		for _, o := range second {
			if h.ros.ms[h.byAddr(o.to)].Cluster != "c1" {
				t.Errorf("retold to %v, of another cluster", o.to)
			}
		}
	}
}
