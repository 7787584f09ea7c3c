package overlay

import (
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
)

// Start-up announcements in an overlay larger than announceAll: a proxy
// tells its start to a few, and news of a restart or a comeback is spread
// as a death is.

// bigClusters is 200 detectors in 20 clusters of 10: past announceAll.
var bigClusters = []int{10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10}

// countAlives counts, from now on, the Alives sent, by sender, and those
// about a proxy other than their sender (news passed on).
func countAlives(n *harness) (bySender map[string]int, passed *int) {
	bySender, passed = map[string]int{}, new(int)
	n.net.Trace(func(p overlaytest.Packet) {
		_, m, err := ParseMsg(p.Payload)
		if err != nil {
			return
		}
		for _, m := range asSingles(m) {
			if a, ok := m.(*Alive); ok {
				bySender[p.From]++
				if a.Name != p.From {
					*passed++
				}
			}
		}
	})
	return bySender, passed
}

// seesAt reports whether every detector that is up, but of, holds of alive
// at incarnation inc.
func seesAt(n *harness, ms []Member, of string, inc uint32) func() bool {
	return func() bool {
		for _, m := range ms {
			if m.Name == of || !n.node(m.Name).host.IsUp() {
				continue
			}
			if st, i, _ := n.node(m.Name).health().state(of); st != StateAlive || i != inc {
				return false
			}
		}
		return true
	}
}

// changedFor counts the detectors but of whose changes since from[name]
// revive or reset of.
func changedFor(n *harness, ms []Member, of string, from map[string]int) int {
	k := 0
	for _, m := range ms {
		if m.Name == of {
			continue
		}
		for _, c := range n.changes[m.Name][from[m.Name]:] {
			if slices.ContainsFunc(append(slices.Clone(c.revived), c.reset...), func(x Member) bool { return x.Name == of }) {
				k++
				break
			}
		}
	}
	return k
}

func changeMarks(n *harness, ms []Member) map[string]int {
	out := map[string]int{}
	for _, m := range ms {
		out[m.Name] = len(n.changes[m.Name])
	}
	return out
}

// TestHealthColdStartAnnouncesToFew: 200 proxies start at once. Each tells
// its start to those it probes, those that probe it in its cluster and its
// guardians (about 20), not to all 199 (N² = 39,800 Alives), and nobody
// passes a first word on; yet every proxy sees every other alive, and
// none is suspected.
func TestHealthColdStartAnnouncesToFew(t *testing.T) {
	n := newHarness(t, 1, unitLink)
	var ms []Member
	for c, size := range bigClusters {
		for range size {
			ms = append(ms, testMember(len(ms)+1, "c"+string(rune('a'+c))))
		}
	}
	bySender, passed := countAlives(n)
	for _, m := range ms {
		n.startHealth(m, ms, 100)
	}
	n.run(3 * time.Second)
	n.net.Trace(nil)
	total, most := 0, 0
	for _, k := range bySender {
		total += k
		most = max(most, k)
	}
	t.Logf("cold start of %d: %d Alives (at most %d from one proxy), %d passed on", len(ms), total, most, *passed)
	// ClusterProbes + WatchClusters×WatchPerCluster + ClusterProbes
	// + DeadWatchers = 28 at most; the sets overlap.
	if most > 28 {
		t.Errorf("a proxy announced its start to %d, want at most 28", most)
	}
	if *passed != 0 {
		t.Errorf("%d Alives passed on at a cold start, want none", *passed)
	}
	for _, m := range ms {
		for _, c := range n.changes[m.Name] {
			if len(c.dead)+len(c.revived)+len(c.reset) > 0 {
				t.Fatalf("%s saw a change at a cold start: %+v", m.Name, c)
			}
		}
	}
	for _, m := range ms {
		if !allAlive(n, ms, m.Name) {
			t.Fatalf("not every proxy sees %s alive", m.Name)
		}
	}
}

// allAlive reports whether every detector but of holds of alive (at an
// incarnation it may never have heard).
func allAlive(n *harness, ms []Member, of string) bool {
	for _, m := range ms {
		if st, _, _ := n.node(m.Name).health().state(of); m.Name != of && st != StateAlive {
			return false
		}
	}
	return true
}

// TestHealthRestartLearnedEverywhere: a proxy restarts (a new incarnation)
// in an overlay of 200 without having died for anyone. It tells a few;
// those that knew its old incarnation spread it; within a few probe
// intervals every proxy holds it at the new incarnation, and every one
// has reset it (forgotten the state it had with its past self), including
// those that never heard its old incarnation.
func TestHealthRestartLearnedEverywhere(t *testing.T) {
	n, ms := newHealthNet(t, bigClusters...)
	n.run(3 * time.Second)
	v := ms[57]
	marks := changeMarks(n, ms)
	bySender, passed := countAlives(n)
	n.startHealth(v, ms, 200)
	took := n.until(10*probeInterval, "every proxy sees the restart", seesAt(n, ms, v.Name, 200))
	n.run(time.Second)
	n.net.Trace(nil)
	total := 0
	for _, k := range bySender {
		total += k
	}
	t.Logf("restart seen everywhere after %v; %d Alives (%d from it, %d passed on)", took, total, bySender[v.Name], *passed)
	if bySender[v.Name] > 28 {
		t.Errorf("%s announced its restart to %d, want at most 28", v.Name, bySender[v.Name])
	}
	if k := changedFor(n, ms, v.Name, marks); k != len(ms)-1 {
		t.Errorf("%d of %d proxies reset %s after its restart", k, len(ms)-1, v.Name)
	}
}

// TestHealthDeadRestartSeenEverywhere: a proxy dies, everyone holds it
// dead, and it restarts at a new incarnation. Those it tells (its
// guardians among them) held it dead and spread its comeback: every
// proxy sees it alive within a few probe intervals, not at a guardian's
// probe a second later.
func TestHealthDeadRestartSeenEverywhere(t *testing.T) {
	n, ms := newHealthNet(t, bigClusters...)
	n.run(3 * time.Second)
	v := ms[123]
	n.kill(v.Name)
	n.until(3*time.Second, "everyone holds it dead", func() bool {
		for _, m := range ms {
			if st, _, _ := n.node(m.Name).health().state(v.Name); m.Name != v.Name && st != StateDead {
				return false
			}
		}
		return true
	})
	n.run(time.Second)
	marks := changeMarks(n, ms)
	bySender, _ := countAlives(n)
	n.startHealth(v, ms, 200)
	took := n.until(5*probeInterval, "every proxy sees the comeback", seesAt(n, ms, v.Name, 200))
	n.net.Trace(nil)
	t.Logf("comeback seen everywhere after %v; %s sent %d Alives", took, v.Name, bySender[v.Name])
	if bySender[v.Name] > 28 {
		t.Errorf("%s announced its restart to %d, want at most 28", v.Name, bySender[v.Name])
	}
	if k := changedFor(n, ms, v.Name, marks); k != len(ms)-1 {
		t.Errorf("%d of %d proxies revived %s", k, len(ms)-1, v.Name)
	}
}

// TestHealthJoinAnnouncedToAll: a newcomer learned at run time (add, as a
// MemberSync from its seed makes it) still announces itself to every
// member, and every member, which holds it joining, sees it alive at its
// first word, well before joinQuiet: joins are as fast as before.
func TestHealthJoinAnnouncedToAll(t *testing.T) {
	n, ms := newHealthNet(t, bigClusters...)
	n.run(3 * time.Second)
	nm := testMember(len(ms)+1, "cb")
	bySender, _ := countAlives(n)
	// Its seed (ms[0]) takes it alive and calls it (members.go); the seed
	// tells the others, who hold it joining.
	h := n.startHealth(nm, []Member{ms[0]}, 300)
	n.node(ms[0].Name).health().add(nm, 300, StateAlive, true)
	for _, m := range ms[1:] {
		n.node(m.Name).health().add(nm, 0, StateJoining, false)
	}
	for _, m := range ms[1:] {
		h.add(m, 0, StateAlive, true)
	}
	took := n.until(3*probeInterval, "every member sees the newcomer", seesAt(n, ms, nm.Name, 300))
	n.net.Trace(nil)
	t.Logf("newcomer seen everywhere after %v; it sent %d Alives", took, bySender[nm.Name])
	if bySender[nm.Name] < len(ms)-1 {
		t.Errorf("the newcomer announced itself to %d of %d", bySender[nm.Name], len(ms))
	}
}

// TestHealthPassedAliveVouchesForNoMore: an Alive passed on by a member is
// taken as a Fail passed on is, and no further: it never moves this
// proxy's own incarnation, and it never makes a joining member alive (only
// its own first word does); news it carries is passed on once.
func TestHealthPassedAliveVouchesForNoMore(t *testing.T) {
	n, ms := newHealthNet(t, bigClusters...)
	n.run(time.Second)
	h := n.node(ms[0].Name).health()
	rogue := ms[150] // another cluster's
	h.handle(rogue.Addr, 0, &Alive{Name: ms[0].Name, Incarnation: 1 << 30})
	if inc := h.incarnation(); inc != 100 {
		t.Errorf("a passed-on Alive about itself moved its incarnation to %d", inc)
	}
	nm := testMember(len(ms)+1, "ca")
	h.add(nm, 0, StateJoining, false)
	h.handle(rogue.Addr, 0, &Alive{Name: nm.Name, Incarnation: 7})
	if st, _, _ := h.state(nm.Name); st != StateJoining {
		t.Errorf("a passed-on Alive made a joining member %v", st)
	}
	// News for it (an incarnation above the one it knows), passed on from
	// another cluster: it tells its own cluster once, and only once.
	bySender, passed := countAlives(n)
	v := ms[77]
	h.handle(rogue.Addr, 0, &Alive{Name: v.Name, Incarnation: 500})
	h.handle(rogue.Addr, 0, &Alive{Name: v.Name, Incarnation: 500})
	n.settle()
	n.net.Trace(nil)
	if bySender[ms[0].Name] != 9 {
		t.Errorf("%s passed the news on %d times, want once to each of its 9 cluster peers", ms[0].Name, bySender[ms[0].Name])
	}
	t.Logf("%d Alives passed on in all", *passed)
}
