package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// fakeNet connects health detectors by an in-memory transport and a fake
// clock; cut links and dead nodes drop messages.
type fakeNet struct {
	t       *testing.T
	now     int64
	nodes   map[netip.Addr]*health
	names   map[netip.Addr]string
	down    map[string]bool    // dead nodes
	cut     map[[2]string]bool // cut links, both directions
	queue   []fakeMsg
	changes map[string][]change
	sent    int
}

type fakeMsg struct {
	from, to netip.Addr
	m        Message
}

func newFakeNet(t *testing.T, clusters ...int) (*fakeNet, []Member) {
	n := &fakeNet{t: t, nodes: map[netip.Addr]*health{}, names: map[netip.Addr]string{}, down: map[string]bool{},
		cut: map[[2]string]bool{}, changes: map[string][]change{}}
	var ms []Member
	for c, size := range clusters {
		for i := range size {
			k := len(ms) + 1
			ms = append(ms, Member{Name: fmt.Sprintf("p%d", k), Addr: netip.AddrFrom4([4]byte{100, 64, byte(k >> 8), byte(k)}), Cluster: fmt.Sprintf("c%d", c+1)})
			_ = i
		}
	}
	for _, m := range ms {
		n.start(m, ms, 100)
	}
	return n, ms
}

func (n *fakeNet) start(self Member, ms []Member, inc uint32) *health {
	h := newHealth(HealthConfig{Incarnation: inc}, self, ms, func() int64 { return n.now },
		func(to netip.Addr, m *Message) {
			// Encode and decode, as the wire would.
			b, err := m.MarshalBinary()
			if err != nil {
				n.t.Fatalf("%s sends unencodable %+v: %v", self.Name, m, err)
			}
			var d Message
			if err := d.UnmarshalBinary(b); err != nil {
				n.t.Fatal(err)
			}
			n.queue = append(n.queue, fakeMsg{self.Addr, to, d})
		}, func(c change) { n.changes[self.Name] = append(n.changes[self.Name], c) })
	n.nodes[self.Addr] = h
	n.names[self.Addr] = self.Name
	delete(n.down, self.Name)
	return h
}

func (n *fakeNet) deliver() {
	for len(n.queue) > 0 {
		q := n.queue[0]
		n.queue = n.queue[1:]
		a, b := n.names[q.from], n.names[q.to]
		if n.down[a] || n.down[b] || n.cut[[2]string{a, b}] || n.cut[[2]string{b, a}] {
			continue
		}
		n.sent++
		n.nodes[q.to].handle(q.from, &q.m)
	}
}

// step advances the clock by one probe interval and runs every live node.
func (n *fakeNet) step() {
	n.now += int64(100 * time.Millisecond)
	for a, h := range n.nodes {
		if !n.down[n.names[a]] {
			h.tick()
		}
	}
	n.deliver()
}

func (n *fakeNet) state(viewer, of string) MemberState {
	for a, h := range n.nodes {
		if n.names[a] == viewer {
			for _, m := range h.snapshot() {
				if m.Name == of {
					return m.State
				}
			}
		}
	}
	n.t.Fatalf("%s does not know %s", viewer, of)
	return 0
}

// until steps until cond holds, at most max steps, and returns the steps.
func (n *fakeNet) until(max int, cond func() bool) int {
	for i := 1; i <= max; i++ {
		n.step()
		if cond() {
			return i
		}
	}
	n.t.Fatalf("condition not met within %d steps", max)
	return 0
}

func (n *fakeNet) allSee(of string, st MemberState) func() bool {
	return func() bool {
		for a := range n.nodes {
			if v := n.names[a]; v != of && !n.down[v] && n.state(v, of) != st {
				return false
			}
		}
		return true
	}
}

func TestHealthDetectsDeathInCluster(t *testing.T) {
	n, _ := newFakeNet(t, 3)
	for range 5 {
		n.step()
	}
	for _, v := range []string{"p1", "p2", "p3"} {
		for _, o := range []string{"p1", "p2", "p3"} {
			if n.state(v, o) != StateAlive {
				t.Fatalf("%s sees %s %v at rest", v, o, n.state(v, o))
			}
		}
	}
	n.down["p3"] = true
	suspected := n.until(10, func() bool { return n.state("p1", "p3") != StateAlive })
	if n.state("p1", "p3") != StateSuspect {
		t.Fatalf("p3 went %v before suspect", n.state("p1", "p3"))
	}
	steps := suspected + n.until(10, n.allSee("p3", StateDead))
	t.Logf("suspected after %d, dead everywhere after %d probe intervals", suspected, steps)
	if steps > 8 {
		t.Errorf("detection took %d intervals (%v), want < 1 s", steps, time.Duration(steps)*100*time.Millisecond)
	}
	if c := n.changes["p1"]; len(c) == 0 || c[len(c)-1].dead[0].Name != "p3" {
		t.Errorf("p1 was not told of p3's death: %+v", c)
	}
}

func TestHealthIndirectProbeClearsSuspicion(t *testing.T) {
	n, _ := newFakeNet(t, 4)
	n.cut[[2]string{"p1", "p2"}] = true // p1 cannot reach p2, others can
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
	n, ms := newFakeNet(t, 3, 3, 3, 3)
	watchers := map[string]map[string]bool{} // cluster → outsiders watching it
	for _, m := range ms {
		h := n.nodes[m.Addr]
		h.mu.Lock()
		w := h.watchedLocked()
		h.mu.Unlock()
		for name := range w {
			o := h.members[name]
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
	for range 3 {
		n.step()
	}
	for _, m := range ms {
		if m.Cluster == "c2" {
			n.down[m.Name] = true
		}
	}
	steps := n.until(20, func() bool {
		for _, m := range ms {
			if m.Cluster == "c2" && !n.allSee(m.Name, StateDead)() {
				return false
			}
		}
		return true
	})
	t.Logf("cluster c2 dead everywhere after %d intervals", steps)
	// At rest again, nobody probes the dead cluster more than once a second.
	before := n.sent
	for range 10 {
		n.step()
	}
	t.Logf("%d messages delivered per second among 9 proxies at rest", n.sent-before)
}

func TestHealthRestartAndRefute(t *testing.T) {
	n, ms := newFakeNet(t, 2, 1)
	for range 3 {
		n.step()
	}
	n.down["p2"] = true
	n.until(10, n.allSee("p2", StateDead))
	// A restart with a higher incarnation: its Alive revives it at once.
	n.start(ms[1], ms, 200)
	n.until(2, n.allSee("p2", StateAlive))
	if c := n.changes["p1"]; len(c[len(c)-1].revived) != 1 {
		t.Errorf("p1 was not told p2 came back: %+v", c[len(c)-1])
	}
	// A restart at the same incarnation (a clock that went back): the
	// others tell it it is dead, and it refutes at a higher incarnation.
	n.down["p2"] = true
	n.until(10, n.allSee("p2", StateDead))
	h := n.start(ms[1], ms, 200)
	n.until(5, n.allSee("p2", StateAlive))
	h.mu.Lock()
	inc := h.inc
	h.mu.Unlock()
	if inc <= 200 {
		t.Errorf("p2 refuted at incarnation %d, want > 200", inc)
	}
	for range 5 {
		n.step()
	}
	for _, v := range []string{"p1", "p3"} {
		if s := n.state(v, "p2"); s != StateAlive {
			t.Errorf("%s sees p2 %v", v, s)
		}
	}
}

func TestHealthFailAboutSelfIsRefuted(t *testing.T) {
	n, ms := newFakeNet(t, 3)
	n.step()
	h1 := n.nodes[ms[0].Addr]
	h1.handle(ms[1].Addr, &Message{Type: TypeFail, Name: "p1", Incarnation: 100})
	n.deliver()
	if h1.inc != 101 {
		t.Fatalf("p1 incarnation %d after a Fail at 100, want 101", h1.inc)
	}
	// A stale Fail (older incarnation) about a live member changes nothing.
	h2 := n.nodes[ms[1].Addr]
	h2.handle(ms[2].Addr, &Message{Type: TypeFail, Name: "p1", Incarnation: 100})
	n.deliver()
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

// TestHealthMessagesAtRest reports the health messages per second per proxy
// at rest, with default timers, for 3, 30 and 300 simulated proxies
// (clusters of up to 10).
func TestHealthMessagesAtRest(t *testing.T) {
	for _, total := range []int{3, 30, 300} {
		var clusters []int
		switch total {
		case 3:
			clusters = []int{2, 1}
		default:
			for range total / 10 {
				clusters = append(clusters, 10)
			}
		}
		n, _ := newFakeNet(t, clusters...)
		for range 3 {
			n.step()
		}
		before := n.sent
		for range 10 { // one second
			n.step()
		}
		per := float64(n.sent-before) / float64(total)
		t.Logf("%d proxies in %d clusters: %.0f health messages sent per proxy per second at rest", total, len(clusters), per)
		if n.sent-before == 0 {
			t.Fatal("no probes at rest")
		}
	}
}
