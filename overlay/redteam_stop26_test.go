package overlay

// Red-team tests of three changes to health.go: forwarders of a death by
// the victim's cluster (bf6ae65), the 32-byte probeRec that keeps one
// outstanding probe of a dead member (4733f04), and the radix sort of
// queued news (84af0a1). Its three findings are fixed (a dead member is
// asked with the number it has not answered, which the last direct probe
// hands over at its death; each declarer picks one forwarder per cluster
// itself); the other tests check what holds.

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
)

// TestRedteam26SlowDeadNeverSeenBack: finding 1 (4733f04). A dead member
// keeps one probe number (deadSeq), and each probe of it (once a
// DeadProbeInterval, 1 s) overwrites it. When the round trip to it is
// longer than DeadProbeInterval, every answer comes after the next probe
// replaced its number and matches nothing: a member that is alive but
// held dead by a proxy it does not probe itself is never seen back by
// that proxy. (The window of 8 probes matched answers up to 8 s late.)
func TestRedteam26SlowDeadNeverSeenBack(t *testing.T) {
	// Finding 1, fixed: a dead member is asked with the number it has not
	// answered yet.
	n, ms := newHealthNet(t, 10, 10, 10)
	n.run(time.Second)
	v := ms[0]
	w := rtUnwatched(t, n, v, ms[10:20]) // v never probes w
	x := ms[10]
	if x.Name == w.Name {
		x = ms[11]
	}
	// w alone holds v dead: a Fail from its own cluster is not passed on.
	// (A true death once, or a view that went wrong: deadTurnLocked is
	// what puts such a view right.)
	n.net.SetLink(v.Name, w.Name, overlaytest.Link{Delay: 600 * time.Millisecond})
	n.sendAs(x.Name, w.Name, failMsg(v.Name, 100))
	n.until(2*time.Second, w.Name+" holds "+v.Name+" dead", func() bool { return n.state(w.Name, v.Name) == StateDead })
	if k := rnHolding(n, ms, v.Name, StateDead); k != 1 {
		t.Fatalf("%d proxies hold %s dead, want %s alone", k, v.Name, w.Name)
	}
	count, stop := n.rtCount(TypeProbeAck, func(p overlaytest.Packet, m Msg) bool { return p.From == v.Name && p.To == w.Name })
	defer stop()
	n.run(10 * time.Second)
	if st := n.state(w.Name, v.Name); st == StateDead {
		t.Errorf("%s still holds %s dead after 10 s, with %d answers of it to its probes delivered (round trip 1.2 s, DeadProbeInterval 1 s)", w.Name, v.Name, count())
	}
}

// rt26Forwarders are the FailFanout members of cluster c (of ms) that a
// death of a member of cluster of is passed to, by the hash of bf6ae65
// (all live).
func rt26Forwarders(ms []Member, of, c string) []string {
	type fw struct {
		name string
		w    uint64
	}
	key := pairPrefix("forward/" + of)
	var all []fw
	for _, m := range ms {
		if m.Cluster == c {
			all = append(all, fw{m.Name, weight(key, m.Name)})
		}
	}
	slices.SortFunc(all, func(a, b fw) int {
		switch {
		case a.w > b.w:
			return -1
		case a.w < b.w:
			return 1
		}
		return 0
	})
	var out []string
	for _, f := range all[:3] {
		out = append(out, f.name)
	}
	return out
}

// TestRedteam26ThreeForwardersHideACluster: finding 2 (bf6ae65). The
// forwarders of a death into a cluster are picked by the victim's
// cluster, so the same three proxies of cluster c2 pass on every death of
// cluster c1, whoever declares it. Three proxies of c2 that answer probes
// but pass nothing on (a hostile admitted proxy, or a grey failure: a
// full send queue, an egress filter; the three are known to anyone, the
// hash is public) hide every death of c1 from the rest of c2 for good.
// Picked by the victim, the same three hid only the deaths whose own
// three they were.
func TestRedteam26ThreeForwardersHideACluster(t *testing.T) {
	// Finding 2, fixed: each declarer picks the last forwarder itself.
	for _, crash := range []bool{false, true} {
		name := "silent"
		if crash {
			name = "crashed"
		}
		t.Run(name, func(t *testing.T) { rt26HideCluster(t, crash) })
	}
}

// rt26HideCluster is finding 2: the forwarders of c1's deaths into c2
// pass nothing on (crash false), or die with the victims (crash true: a
// correlated failure, one power or network event in two clusters).
func rt26HideCluster(t *testing.T, crash bool) {
	n, ms := newHealthNet(t, 10, 10, 10, 10)
	n.run(time.Second)
	bad := rt26Forwarders(ms, "c1", "c2")
	badAddr := map[string]bool{}
	for _, m := range ms {
		if slices.Contains(bad, m.Name) {
			badAddr[m.Addr.String()] = true
		}
	}
	n.dropMsgs(func(src, dst netip.Addr, m Msg) bool {
		if crash {
			return false
		}
		switch m.(type) {
		case *Fail, *News:
			return badAddr[src.String()]
		}
		return false
	})
	// The victims: members of c1 that no proxy of c2 probes (one that
	// does declares the death itself and tells all of c2).
	var victims []Member
	for _, v := range ms[:10] {
		watched := false
		for _, m := range ms[10:20] {
			watched = watched || slices.Contains(n.node(m.Name).health().watchedNames(), v.Name)
		}
		if !watched {
			victims = append(victims, v)
		}
	}
	if len(victims) == 0 {
		t.Fatal("c2 probes every member of c1")
	}
	for _, v := range victims {
		n.kill(v.Name)
	}
	if crash {
		for _, b := range bad {
			n.kill(b)
		}
	}
	n.run(30 * time.Second)
	missed, pairs := 0, 0
	for _, m := range ms[10:20] {
		if slices.Contains(bad, m.Name) {
			continue
		}
		for _, v := range victims {
			pairs++
			if n.state(m.Name, v.Name) != StateDead {
				missed++
			}
		}
	}
	t.Logf("forwarders %v of c2 (crashed: %v); (proxy of c2, victim) pairs held alive 30 s after the deaths: %d of %d", bad, crash, missed, pairs)
	if missed > 0 {
		t.Errorf("%d of %d (proxy of c2, dead member of c1) pairs still held alive 30 s after the deaths: the three forwarders hide c1's deaths", missed, pairs)
	}
}

// TestRedteam26LateAnswerAfterDeath: finding 3 (4733f04), finding 1
// reached by the declarer's own verdict. A member whose round trip to a
// watcher is 1.2 s is declared dead by it (3 misses and ConfirmTimeout
// take about 1 s). Its answers to the probes sent while it was alive or
// suspect arrive after the death: those probes were in the liveRec that
// the death dropped, so they match nothing (before, they matched and the
// declarer told it it was held dead, and it refuted); and each probe of
// the dead replaces the one before it (finding 1). Here the declarer
// passes its verdict on to nobody but the member (as when it alone holds
// the member dead: a lost Alive, a stale dead list); it never sees it
// back. (With DeadProbeInterval 1 s and a death in about 1 s, no round
// trip lets a death happen and a probe of the dead match.)
func TestRedteam26LateAnswerAfterDeath(t *testing.T) {
	// Finding 3, fixed: the last direct probe's number carries over to the
	// dead.
	n, ms := newHealthNet(t, 10, 10, 10)
	n.run(time.Second)
	var w, v Member
	for _, a := range ms {
		for _, b := range n.node(a.Name).health().watchedNames() {
			bm := ms[slices.IndexFunc(ms, func(m Member) bool { return m.Name == b })]
			if bm.Cluster != a.Cluster && !slices.Contains(n.node(b).health().watchedNames(), a.Name) && w.Name == "" {
				w, v = a, bm
			}
		}
	}
	if w.Name == "" {
		t.Fatal("no proxy watches one of another cluster that does not watch it")
	}
	n.dropMsgs(func(src, dst netip.Addr, m Msg) bool {
		switch m.(type) {
		case *Fail, *News:
			return src == w.Addr && dst != v.Addr // w alone holds v dead (and tells it)
		case *ProbeReq:
			return src == w.Addr // and asks no helper
		}
		return false
	})
	n.net.SetLink(v.Name, w.Name, overlaytest.Link{Delay: 600 * time.Millisecond})
	n.until(2*time.Second, w.Name+" declares "+v.Name+" dead", func() bool { return n.state(w.Name, v.Name) == StateDead })
	back := n.until(10*time.Second, w.Name+" sees "+v.Name+" back", func() bool { return n.state(w.Name, v.Name) == StateAlive })
	t.Logf("%s held %s dead for %v (round trip 1.2 s)", w.Name, v.Name, back)
	if back > 2500*time.Millisecond {
		t.Errorf("%s held the live %s dead for %v, want at most 2.5 s (two round trips and a tick)", w.Name, v.Name, back)
	}
}

// TestRedteam26SortNewsShared: holds. sortNewsByMember's scratch comes
// from a pool shared by the proxies of a process, each sorting under its
// own lock: sorts at once on many goroutines, over member numbers up to
// 2³¹−1 (four passes) and queues of up to 5,000 items, each give what
// a stable sort gives, and leave no item behind in another's queue.
func TestRedteam26SortNewsShared(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 26))
			for round := range 12 {
				hi := []int32{1, 255, 256, 65536, 1 << 24, 1<<31 - 1}[round%6]
				q := make([]queuedNews, rng.IntN(5000))
				for k := range q {
					q[k] = queuedNews{to: rng.Int32N(hi), news: NewsItem{Name: fmt.Sprint(g, "/", k)}}
				}
				if len(q) > 0 {
					q[0].to = hi - 1 // the top byte is used
				}
				want := slices.Clone(q)
				slices.SortStableFunc(want, func(a, b queuedNews) int { return cmp.Compare(a.to, b.to) })
				sortNewsByMember(q)
				if !slices.Equal(q, want) {
					errs <- fmt.Sprintf("goroutine %d round %d: %d items below %d sorted wrong", g, round, len(q), hi)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestRedteam26ForgedAckOfDeadSeq: holds. A dead member's one
// outstanding probe number (deadSeq) answers as a direct probe; an
// answer with it, or with seq 0, sent by another proxy in the dead
// member's name (a relay that was never asked for, or a forgery) neither
// revives it (even at a higher incarnation) nor gets its holder to tell
// it anything. (It does use the number up, so that v's own answer then
// matches nothing: older than these changes, the window's numbers were
// used up alike, and nonces count up, so an admitted proxy probed by the
// holder can guess them.)
func TestRedteam26ForgedAckOfDeadSeq(t *testing.T) {
	n, ms := newHealthNet(t, 10, 10, 10)
	n.run(time.Second)
	v, evil := ms[0], ms[20]
	n.kill(v.Name)
	n.until(3*time.Second, v.Name+" dead everywhere", n.allSee(v.Name, StateDead))
	w := ms[1]
	n.until(3*time.Second, w.Name+" probes the dead "+v.Name, func() bool {
		hw := n.node(w.Name).health()
		hw.mu.Lock()
		defer hw.mu.Unlock()
		return hw.rec(hw.byName(v.Name)).deadSeq != 0
	})
	hw := n.node(w.Name).health()
	hw.mu.Lock()
	seq := hw.rec(hw.byName(v.Name)).deadSeq
	hw.mu.Unlock()
	count, stop := n.rtCount(TypeFail, func(p overlaytest.Packet, m Msg) bool { return p.From == w.Name })
	defer stop()
	for _, s := range []uint32{seq, 0} {
		n.sendAs(evil.Name, w.Name, wmsg{s, &ProbeAck{From: v.Name, Incarnation: 500}})
		n.sendAs(evil.Name, w.Name, wmsg{s, &ProbeAck{From: v.Name, Incarnation: 100}})
	}
	n.settle()
	if st := n.state(w.Name, v.Name); st != StateDead {
		t.Errorf("%s holds the dead %s %v after forged answers to its probe", w.Name, v.Name, st)
	}
	if c := count(); c != 0 {
		t.Errorf("%s sent %d Fails after forged answers", w.Name, c)
	}
}

// TestRedteam26PartitionThroughACluster: a partition that cuts a cluster
// in two, k members on one side. The deaths (as seen from one side) of
// each cluster of the other side are passed into the cut cluster by the
// same three forwarders; when they are on the far side, the near side of
// the cut cluster hears those deaths only from its own verdicts.
func TestRedteam26PartitionThroughACluster(t *testing.T) {
	for _, k := range []int{12, 15, 18} {
		t.Run(fmt.Sprint(k), func(t *testing.T) {
			n, ms := newHealthNet(t, 10, 10, 10, 10)
			n.run(time.Second)
			t0 := n.clk.Now()
			rtPartition(n, ms, k) // fails the test unless every view is right within 10 s
			t.Logf("cut at %d: every view across the partition dead after %v", k, time.Duration(n.clk.Now()-t0))
		})
	}
}
