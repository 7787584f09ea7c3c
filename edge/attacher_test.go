package edge

import (
	"math"
	"net/netip"
	"slices"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

func dueIndexes(ps []Probe) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.Index)
	}
	return out
}

// TestAttacherProbeSchedule: every candidate is due at once, then
// Interval after its last probe left; one probe is out at a time, and one
// that came back late makes the next due at once.
func TestAttacherProbeSchedule(t *testing.T) {
	now := testStart
	a, err := NewAttacher(testCands(), AttachConfig{Interval: 200 * time.Millisecond, Timeout: 150 * time.Millisecond}, now)
	if err != nil {
		t.Fatal(err)
	}
	ps := a.Due(now)
	if got := dueIndexes(ps); !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("due at start: %v, want all", got)
	}
	if ps[1].Addr != netip.MustParseAddr("100.64.0.2") || ps[1].Timeout != 150*time.Millisecond {
		t.Errorf("probe %+v", ps[1])
	}
	if got := a.Due(now + 500*ms); len(got) != 0 {
		t.Fatalf("due while every probe is out: %v", dueIndexes(got))
	}
	if n := a.Next(); n != math.MaxInt64 {
		t.Errorf("Next with every probe out: %d", n)
	}
	a.Observe(0, true, time.Millisecond, now+10*ms)
	a.Observe(1, false, 0, now+150*ms)
	if n := a.Next(); n != now+200*ms {
		t.Errorf("Next %d, want start+200ms", n-now)
	}
	if got := dueIndexes(a.Due(now + 199*ms)); len(got) != 0 {
		t.Errorf("due before Interval: %v", got)
	}
	if got := dueIndexes(a.Due(now + 200*ms)); !slices.Equal(got, []int{0, 1}) {
		t.Errorf("due at Interval: %v, want 0 and 1 (2 is still out)", got)
	}
	// p3's probe comes back after 300 ms: its next is due at once.
	a.Observe(2, false, 0, now+300*ms)
	if got := dueIndexes(a.Due(now + 300*ms)); !slices.Equal(got, []int{2}) {
		t.Errorf("due after a late outcome: %v, want 2", got)
	}
}

// TestAttacherMoveAndAdd: a candidate added while the attacher runs is due
// a probe at once, and takes the prefix when the only configured proxy
// dies; the move holds only once the driver applied it.
func TestAttacherMoveAndAdd(t *testing.T) {
	now := testStart
	cs := testCands()
	a, err := NewAttacher(cs[:1], AttachConfig{Interval: 200 * time.Millisecond, OnlyOnFailure: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	a.Due(now)
	a.Observe(0, true, time.Millisecond, now)
	if i := a.Add(cs[1], now+10*ms); i != 1 {
		t.Fatalf("Add returned %d, want 1", i)
	}
	if got := dueIndexes(a.Due(now + 10*ms)); !slices.Equal(got, []int{1}) {
		t.Fatalf("due after Add: %v, want the new one", got)
	}
	a.Observe(1, true, time.Millisecond, now+10*ms)
	var move *Move
	for i := 1; move == nil; i++ {
		now += 200 * ms
		if i > 3 {
			t.Fatal("did not leave p1 after 3 misses")
		}
		a.Due(now)
		a.Observe(1, true, time.Millisecond, now)
		move = a.Observe(0, false, 0, now).Move
	}
	if move.From.Name != "p1" || move.To.Name != "p2" || move.FromIdx != 0 || move.ToIdx != 1 || move.Reason != "dead" {
		t.Fatalf("move %+v, want p1 → p2 (dead)", move)
	}
	if ev := move.Event("cl1"); ev.Kind != "move" || ev.Proxy != "p2" || ev.Name != "cl1" || ev.Reason != "p1 → p2 (dead)" {
		t.Errorf("event %+v", ev)
	}
	// The driver could not apply it: the prefix is still on p1, and the
	// next outcome asks again.
	if cur := a.Current(); cur != "p1" {
		t.Fatalf("current %s before the move was applied", cur)
	}
	now += 200 * ms
	a.Due(now)
	again := a.Observe(1, true, time.Millisecond, now).Move
	if again == nil || again.ToIdx != 1 {
		t.Fatalf("an unapplied move is not asked again: %+v", again)
	}
	a.Applied(*again)
	st := a.Status()
	if st.Current != "p2" || a.Current() != "p2" || len(st.Candidates) != 2 || !st.Candidates[1].Current || st.Candidates[0].Current || st.Candidates[0].Live {
		t.Errorf("status %+v", st)
	}
	if c, i := a.Attached(); c.Name != "p2" || i != 1 {
		t.Errorf("attached %s (%d)", c.Name, i)
	}
}

// TestAttacherResets: a candidate's WireGuard session is reset when it is
// found dead and every ResetEvery misses after, and marked current when it
// carries the prefix.
func TestAttacherResets(t *testing.T) {
	now := testStart
	a, err := NewAttacher(testCands()[:2], AttachConfig{Misses: 3}, now)
	if err != nil {
		t.Fatal(err)
	}
	a.Observe(0, true, time.Millisecond, now) // heard: Misses, not StartMisses
	var resets []int
	for miss := 1; miss <= 3+2*ResetEvery; miss++ {
		now += 200 * ms
		if act := a.Observe(0, false, 0, now); act.Reset {
			if !act.Current {
				t.Errorf("reset of p1, which carries the prefix, not marked current")
			}
			resets = append(resets, miss)
		}
	}
	if want := []int{3, 3 + ResetEvery, 3 + 2*ResetEvery}; !slices.Equal(resets, want) {
		t.Errorf("reset at misses %v, want %v", resets, want)
	}
	// p2 never answered: it is dead after StartMisses.
	var first int
	for miss := 1; first == 0 && miss <= 20; miss++ {
		if act := a.Observe(1, false, 0, now); act.Reset {
			first = miss
			if act.Current {
				t.Error("reset of p2 marked current")
			}
		}
	}
	if want := DefaultAttachConfig().StartMisses; first != want {
		t.Errorf("p2, never heard, reset after %d misses, want %d", first, want)
	}
}

func TestAttacherNeedsAddresses(t *testing.T) {
	if _, err := NewAttacher(nil, AttachConfig{}, 0); err == nil {
		t.Error("an attacher with no candidate")
	}
	if _, err := NewAttacher([]Candidate{{Name: "p1"}}, AttachConfig{}, 0); err == nil {
		t.Error("an attacher with a candidate it cannot probe")
	}
}

// slowPath drives an attacher in steps of 10 ms from now for d: probe p
// sent at time at is answered after latency(p, at) (< 0: never), and
// counts as lost when that exceeds the probe's Timeout; an answer within
// its Late after that goes to Late, as the node's driver does. It returns
// the moves the attacher asked for (each applied at once), with their
// times.
func slowPath(a *Attacher, now int64, d time.Duration, latency func(p Probe, at int64) time.Duration) (moves []Move, at []int64) {
	type out struct {
		i        int
		at       int64
		ok, late bool
		rtt      time.Duration
	}
	var pending []out
	for end := now + int64(d); now < end; now += 10 * ms {
		var later []out
		for _, o := range pending {
			if o.at > now {
				later = append(later, o)
				continue
			}
			var act Action
			if o.late {
				act = a.Late(o.i, o.rtt, now)
			} else {
				act = a.Observe(o.i, o.ok, o.rtt, now)
			}
			if act.Move != nil {
				a.Applied(*act.Move)
				moves, at = append(moves, *act.Move), append(at, now)
			}
		}
		pending = later
		for _, p := range a.Due(now) {
			switch l := latency(p, now); {
			case l >= 0 && l <= p.Timeout:
				pending = append(pending, out{i: p.Index, at: now + int64(l), ok: true, rtt: l})
			case l > p.Timeout && l <= p.Timeout+p.Late:
				pending = append(pending, out{i: p.Index, at: now + int64(p.Timeout)},
					out{i: p.Index, at: now + int64(l), late: true, rtt: l})
			default:
				pending = append(pending, out{i: p.Index, at: now + int64(p.Timeout)})
			}
		}
	}
	return moves, at
}

// TestAttacherTimeoutFollowsRTT: a proxy whose answers take about as long
// as the configured timeout (a long path, or a host starved of CPU: the
// lab under -race on busy cores smoothed loopback RTTs to 50-190 ms) is
// slow, not dead: its probes wait its smoothed RTT plus four deviations,
// and the edge stays. A fast proxy's probes keep the configured timeout; a proxy
// that stops answering is still found dead, within Misses × MaxTimeout.
func TestAttacherTimeoutFollowsRTT(t *testing.T) {
	start := testStart
	cfg := AttachConfig{Interval: 200 * time.Millisecond, OnlyOnFailure: true}
	a, err := NewAttacher(testCands()[:2], cfg, start)
	if err != nil {
		t.Fatal(err)
	}
	// p1 (current) answers in 140-260 ms, three in a row over 200 ms
	// every few probes, until it dies at 20 s; p2 in 1 ms.
	died := start + int64(20*time.Second)
	slow := []time.Duration{150, 230, 250, 240, 170, 260, 220, 210, 140}
	var n int
	var waits [2]time.Duration // the longest wait of each one's probes
	moves, at := slowPath(a, start, 30*time.Second, func(p Probe, at int64) time.Duration {
		if at < died {
			waits[p.Index] = max(waits[p.Index], p.Timeout)
		}
		switch {
		case p.Index == 1:
			return time.Millisecond
		case at >= died:
			return -1
		}
		n++
		return slow[n%len(slow)] * time.Millisecond
	})
	if len(moves) != 1 || moves[0].To.Name != "p2" || at[0] < died {
		t.Fatalf("moves %+v at %v (p1 died at %v), want one to p2 after it died", moves, at, died)
	}
	if waits[0] <= 260*time.Millisecond || waits[0] > time.Second {
		t.Errorf("slow p1's probes waited up to %v, want more than its slowest answer (260 ms), at most MaxTimeout", waits[0])
	}
	if waits[1] != cfg.Interval {
		t.Errorf("fast p2's probes waited up to %v, want the configured %v", waits[1], cfg.Interval)
	}
	// The last answer came before the death; then Misses probes of at
	// most MaxTimeout each, and one interval to send the first.
	if took, bound := time.Duration(at[0]-died), 3*time.Second+cfg.Interval; took > bound {
		t.Errorf("found dead %v after it died, want within %v", took, bound)
	} else {
		t.Logf("found dead %v after it died", took)
	}
}

// TestAttacherFirstAnswersLate: on a busy host every answer is late, the
// first ones of the home proxy too. Until the home has answered once, its
// probes wait as long as those of the slowest candidate that has: the
// home's answers in 230 ms (past the 200 ms Timeout, within the RTO of a
// proxy that answers in 120-190 ms) count, and the edge stays home rather
// than give it up after StartMisses for the proxy that answered in time.
func TestAttacherFirstAnswersLate(t *testing.T) {
	cfg := AttachConfig{Interval: 200 * time.Millisecond, OnlyOnFailure: true}
	a, err := NewAttacher(testCands()[:2], cfg, testStart)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	moves, _ := slowPath(a, testStart, 10*time.Second, func(p Probe, at int64) time.Duration {
		if p.Index == 0 {
			return 230 * time.Millisecond
		}
		n++
		return []time.Duration{120, 190, 150, 180}[n%4] * time.Millisecond
	})
	if len(moves) != 0 {
		t.Fatalf("gave up the home, whose answers came in 230 ms: %+v", moves)
	}
	if st := a.Status(); !st.Candidates[0].Live {
		t.Errorf("home not live: %+v", st.Candidates[0])
	}
}

// TestAttacherBacksOffUntilFirstAnswer: on a host so busy that every
// answer takes 400 ms, twice the Timeout, from the start, no candidate
// would ever be heard: while none has answered, each miss doubles the
// wait, and all are live within a few probes.
func TestAttacherBacksOffUntilFirstAnswer(t *testing.T) {
	cfg := AttachConfig{Interval: 200 * time.Millisecond, OnlyOnFailure: true}
	a, err := NewAttacher(testCands(), cfg, testStart)
	if err != nil {
		t.Fatal(err)
	}
	moves, _ := slowPath(a, testStart, 3*time.Second, func(Probe, int64) time.Duration { return 400 * time.Millisecond })
	if len(moves) != 0 {
		t.Errorf("moves %+v", moves)
	}
	for _, c := range a.Status().Candidates {
		if !c.Live {
			t.Errorf("%s not live after 3 s of answers in 400 ms: %+v", c.Name, c)
		}
	}
}

// TestAttacherLateAnswersKeepSlowProxy: the current proxy answered in
// 1 ms, then its host (or this one) is starved of CPU and every answer
// takes 300-580 ms, past the 200 ms timeout that its fast answers set.
// The first probes are counted lost, but their answers still come, and a
// late answer shows the proxy lives: the edge stays, and the timeout
// widens to the new RTT. The other proxy answers in time all along, so
// losses alone would have moved the edge after three of them (600 ms).
// (An answer slower than those three timeouts after a sudden jump cannot
// be told from a death.) When the proxy dies, no late answers come, and
// it is found dead.
func TestAttacherLateAnswersKeepSlowProxy(t *testing.T) {
	cfg := AttachConfig{Interval: 200 * time.Millisecond, OnlyOnFailure: true}
	a, err := NewAttacher(testCands()[:2], cfg, testStart)
	if err != nil {
		t.Fatal(err)
	}
	slowFrom, died := testStart+int64(5*time.Second), testStart+int64(20*time.Second)
	slow := []time.Duration{300, 550, 450, 580, 500, 350, 520}
	var n int
	var lost, lateWait time.Duration
	moves, at := slowPath(a, testStart, 30*time.Second, func(p Probe, at int64) time.Duration {
		switch {
		case p.Index == 1 || at < slowFrom:
			return time.Millisecond
		case at >= died:
			return -1
		}
		n++
		l := slow[n%len(slow)] * time.Millisecond
		if l > p.Timeout {
			lost++
		}
		lateWait = max(lateWait, p.Timeout+p.Late)
		return l
	})
	if len(moves) != 1 || at[0] < died {
		t.Fatalf("moves %+v at %v (p1 slowed at %v, died at %v), want one, after it died", moves, at, slowFrom, died)
	}
	if lost < 3 {
		t.Errorf("%v probes of the slow p1 counted lost; the test needs its first answers past the timeout", lost)
	}
	if lateWait < 580*time.Millisecond {
		t.Errorf("probes listened for %v at most, want past the slowest answer (580 ms)", lateWait)
	}
	if took, bound := time.Duration(at[0]-died), 3*time.Second+cfg.Interval; took > bound {
		t.Errorf("found dead %v after it died, want within %v", took, bound)
	}
}
