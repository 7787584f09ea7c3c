package edge

import (
	"net/netip"
	"testing"
	"time"
)

// testCands are three candidates p1, p2, p3 at 100.64.0.1-3.
func testCands() []Candidate {
	var cs []Candidate
	for i, n := range []string{"p1", "p2", "p3"} {
		cs = append(cs, Candidate{Name: n, Addr: netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)})})
	}
	return cs
}

// testStart is the clock's reading when a test starts.
const testStart = int64(1000 * time.Second)

func newTestSelector() (*Selector, int64) {
	// The rule the tests below are written for, whatever the defaults.
	cfg := AttachConfig{Interval: 200 * time.Millisecond, Misses: 3, Margin: 0.2, MinGain: time.Millisecond, Hold: 2 * time.Second, Alpha: 0.25}
	return NewSelector(testCands(), cfg), testStart
}

func TestSelectorOnlyOnFailure(t *testing.T) {
	s, now := newTestSelector()
	s.cfg.OnlyOnFailure = true
	ms := time.Millisecond
	for i := 0; i < 50; i++ {
		now += int64(200 * ms)
		if _, moved := round(s, now, 10*ms, 20*ms, 1*ms); moved {
			t.Fatal("moved for speed although only failures may move it")
		}
	}
	for i := 0; ; i++ {
		now += int64(200 * ms)
		cur, moved := round(s, now, 0, 20*ms, 1*ms)
		if moved {
			if cur != 2 {
				t.Fatalf("moved to %d, want the nearest live one (2)", cur)
			}
			break
		}
		if i > 5 {
			t.Fatal("did not leave a dead proxy")
		}
	}
}

// round feeds one probe result per candidate (rtt 0 = lost) and decides.
func round(s *Selector, now int64, rtts ...time.Duration) (int, bool) {
	for i, r := range rtts {
		s.Observe(i, r > 0, r, now)
	}
	return s.Decide(now)
}

func TestSelectorStaysOnEqualRTTs(t *testing.T) {
	s, now := newTestSelector()
	ms := time.Millisecond
	for i := 0; i < 100; i++ {
		now += int64(200 * ms)
		// Jitter around equal means: never clearly better for long.
		j := time.Duration(i%3) * ms / 2
		if cur, moved := round(s, now, 5*ms+j, 5*ms-j, 5*ms); moved || cur != 0 {
			t.Fatalf("round %d: moved to %d", i, cur)
		}
	}
	if st := s.Status(); st.Moves != 0 || st.Current != "p1" {
		t.Fatalf("status %+v", st)
	}
}

func TestSelectorLeavesDeadAtOnce(t *testing.T) {
	s, now := newTestSelector()
	ms := time.Millisecond
	round(s, now, 5*ms, 7*ms, 6*ms)
	// p1 stops answering: moves on its third miss, to the lowest RTT.
	for miss := 1; miss <= 3; miss++ {
		now += int64(200 * ms)
		cur, moved := round(s, now, 0, 7*ms, 6*ms)
		if miss < 3 && moved {
			t.Fatalf("moved after %d misses", miss)
		}
		if miss == 3 && (!moved || cur != 2) {
			t.Fatalf("after 3 misses: current %d moved %v, want p3", cur, moved)
		}
	}
	st := s.Status()
	if st.Candidates[0].Live || !st.Candidates[2].Current {
		t.Fatalf("status %+v", st)
	}
}

func TestSelectorNeedsClearAndLastingGain(t *testing.T) {
	s, now := newTestSelector()
	ms := time.Millisecond
	round(s, now, 10*ms, 20*ms, 20*ms)
	// p2 becomes 15 % better: not clearly, never moves.
	for i := 0; i < 30; i++ {
		now += int64(200 * ms)
		if _, moved := round(s, now, 10*ms, 8500*time.Microsecond, 20*ms); moved {
			t.Fatalf("moved for a 15%% gain")
		}
	}
	// Gains below MinGain do not count either, whatever the percentage.
	s2, now2 := newTestSelector()
	for i := 0; i < 30; i++ {
		now2 += int64(200 * ms)
		if _, moved := round(s2, now2, 800*time.Microsecond, 100*time.Microsecond, 0); moved {
			t.Fatalf("moved for a gain under 1 ms")
		}
	}
	// p3 becomes 50 % better: moves after Hold, not before.
	start := int64(-1)
	for i := 0; ; i++ {
		now += int64(200 * ms)
		cur, moved := round(s, now, 10*ms, 20*ms, 5*ms)
		if i == 0 {
			// The EWMA needs a few samples; count from when it is clear.
			continue
		}
		if start < 0 && s.better == 2 {
			start = s.since
		}
		if moved {
			if cur != 2 {
				t.Fatalf("moved to %d", cur)
			}
			if held := time.Duration(now - start); held < 2*time.Second {
				t.Fatalf("moved after %v, want ≥ 2s", held)
			}
			break
		}
		if i > 50 {
			t.Fatal("never moved to a clearly better proxy")
		}
	}
}

func TestSelectorBriefGainResetsHold(t *testing.T) {
	s, now := newTestSelector()
	ms := time.Millisecond
	round(s, now, 10*ms, 20*ms, 20*ms)
	for i := 0; i < 40; i++ {
		now += int64(200 * ms)
		p2 := 2 * ms
		if i%8 == 7 {
			p2 = 200 * ms // a spike: the gain is not lasting
		}
		// Reset the estimate so each spike counts (as a comeback would).
		if _, moved := round(s, now, 10*ms, p2, 20*ms); moved {
			if i%8 < 7 && time.Duration(now-s.since) < 2*time.Second {
				t.Fatalf("moved at round %d before the gain lasted", i)
			}
		}
	}
}

func TestSelectorNowhereToGo(t *testing.T) {
	s, now := newTestSelector()
	for i := 0; i < DefaultAttachConfig().StartMisses; i++ {
		now += int64(200 * time.Millisecond)
		if cur, moved := round(s, now, 0, 0, 0); moved || cur != 0 {
			t.Fatalf("moved to %d with every proxy silent", cur)
		}
	}
	// The first to answer takes the prefix at once.
	now += int64(200 * time.Millisecond)
	if cur, moved := round(s, now, 0, 0, 3*time.Millisecond); !moved || cur != 2 {
		t.Fatalf("current %d moved %v, want p3", cur, moved)
	}
	// A dead proxy that comes back is not clearly better at equal RTT.
	for i := 0; i < 20; i++ {
		now += int64(200 * time.Millisecond)
		if _, moved := round(s, now, 3*time.Millisecond, 0, 3*time.Millisecond); moved {
			t.Fatal("moved back at equal RTT")
		}
	}
}

// TestSelectorStartGrace: a preferred proxy that has not answered yet (its
// first handshake may be slow) is given StartMisses probes, not Misses,
// before the edge moves away; once it has answered, Misses again.
func TestSelectorStartGrace(t *testing.T) {
	s, now := newTestSelector()
	ms := time.Millisecond
	start := DefaultAttachConfig().StartMisses
	for i := 1; i < start; i++ {
		now += int64(200 * ms)
		if _, moved := round(s, now, 0, 5*ms, 5*ms); moved {
			t.Fatalf("moved after %d misses of a proxy not heard yet, want %d", i, start)
		}
	}
	now += int64(200 * ms)
	if cur, moved := round(s, now, 0, 5*ms, 6*ms); !moved || cur != 1 {
		t.Fatalf("after %d misses: current %d moved %v, want p2", start, cur, moved)
	}
	// p2 has answered: three misses are enough now.
	for i := 1; ; i++ {
		now += int64(200 * ms)
		cur, moved := round(s, now, 0, 0, 6*ms)
		if moved {
			if i != 3 || cur != 2 {
				t.Fatalf("left p2 for %d after %d misses, want p3 after 3", cur, i)
			}
			break
		}
		if i > 3 {
			t.Fatal("did not leave p2 after 3 misses")
		}
	}
}

// TestSelectorStaysWhenAllFallSilent: when the current proxy falls silent
// and no other candidate answers meanwhile either (a starved host, a lost
// uplink), the edge stays; it moves once another answers.
func TestSelectorStaysWhenAllFallSilent(t *testing.T) {
	s, now := newTestSelector()
	ms := time.Millisecond
	round(s, now, 5*ms, 6*ms, 7*ms)
	for i := 0; i < 6; i++ {
		now += int64(200 * ms)
		s.Observe(0, false, 0, now)
		if i%3 == 0 { // the others' probes are lost less often: still "live"
			s.Observe(1, false, 0, now)
			s.Observe(2, false, 0, now)
		}
		if cur, moved := s.Decide(now); moved || cur != 0 {
			t.Fatalf("round %d: moved to %d though nobody answered since p1 fell silent", i, cur)
		}
	}
	if !s.dead(0) || !s.cands[1].live {
		t.Fatalf("p1 dead %v, p2 live %v: the test does not test the rule", s.dead(0), s.cands[1].live)
	}
	now += int64(200 * ms)
	s.Observe(2, true, 7*ms, now)
	if cur, moved := s.Decide(now); !moved || cur != 2 {
		t.Fatalf("current %d moved %v after p3 answered, want p3", cur, moved)
	}
}

// Leaving a dead proxy, the edge goes to a candidate that answered its
// latest probe before a nearer one that is missing its own: that one may
// be about to die too, or be as starved, and the edge would move twice.
func TestSelectorLeavesDeadForOneThatAnswers(t *testing.T) {
	s, now := newTestSelector()
	ms := time.Millisecond
	round(s, now, 5*ms, 6*ms, 9*ms)
	// p1 falls silent; p2 (nearer than p3) answers once more, then misses
	// twice, still short of dead; p3 answers each time.
	for i, p2 := range []time.Duration{6 * ms, 0, 0} {
		now += int64(200 * ms)
		cur, moved := round(s, now, 0, p2, 9*ms)
		if i < 2 && moved {
			t.Fatalf("moved after %d misses", i+1)
		}
		if i == 2 && (!moved || cur != 2) {
			t.Fatalf("after 3 misses: current %d moved %v, want p3, whose last probe was answered", cur, moved)
		}
	}
	if !s.cands[1].live || s.cands[1].lastOK < s.cands[0].silentSince {
		t.Fatal("p2 is not a candidate by the older rule: the test does not test the new one")
	}
}

// TestSelectorLateAnswerCountsWhenSent: leaving a dead proxy needs a
// candidate that answered while it was silent. A late answer (its probe
// counted lost) counts from when its probe left: p2's answer to a probe
// sent before p1 fell silent, arriving after, shows nothing of p1, and
// the edge stays (its own host may be the one stalled); p2's late answer
// to a probe sent after does, and the edge moves to it.
func TestSelectorLateAnswerCountsWhenSent(t *testing.T) {
	ms := int64(time.Millisecond)
	for _, tc := range []struct {
		name string
		sent int64 // p2's probe left at testStart + sent
		move bool
	}{
		{"sent before p1 fell silent", 50 * ms, false},
		{"sent after", 250 * ms, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, now := newTestSelector()
			s.Observe(0, true, time.Millisecond, now)
			s.Observe(1, true, time.Millisecond, now)
			moved := false
			for k := int64(1); k <= 3; k++ {
				at := now + k*200*ms
				s.Observe(0, false, 0, at) // p1 falls silent at +200 ms
				if k == 3 {
					late := now + 550*ms
					s.ObserveLate(1, time.Duration(late-(now+tc.sent)), late)
				}
				_, m := s.Decide(at)
				moved = moved || m
			}
			if moved != tc.move {
				t.Errorf("moved %v, want %v (p1 silent since %d ms, p2's late answer sent at %d ms)", moved, tc.move,
					(s.cands[0].silentSince-now)/ms, tc.sent/ms)
			}
			if st := s.Status().Candidates[1]; st.Late != 1 || !st.Live {
				t.Errorf("p2: %+v, want live with one late answer", st)
			}
		})
	}
}
