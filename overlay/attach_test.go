package overlay

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func newTestSelector() (*Selector, time.Time) {
	names := []string{"p1", "p2", "p3"}
	addrs := []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.3")}
	// The rule the tests below are written for, whatever the defaults.
	cfg := AttachConfig{Interval: 200 * time.Millisecond, Misses: 3, Margin: 0.2, MinGain: time.Millisecond, Hold: 2 * time.Second, Alpha: 0.25}
	return NewSelector(names, addrs, cfg), time.Unix(1000, 0)
}

func TestSelectorOnlyOnFailure(t *testing.T) {
	s, now := newTestSelector()
	s.cfg.OnlyOnFailure = true
	ms := time.Millisecond
	for i := 0; i < 50; i++ {
		now = now.Add(200 * ms)
		if _, moved := round(s, now, 10*ms, 20*ms, 1*ms); moved {
			t.Fatal("moved for speed although only failures may move it")
		}
	}
	for i := 0; ; i++ {
		now = now.Add(200 * ms)
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
func round(s *Selector, now time.Time, rtts ...time.Duration) (int, bool) {
	for i, r := range rtts {
		s.Observe(i, r > 0, r, now)
	}
	return s.Decide(now)
}

func TestSelectorStaysOnEqualRTTs(t *testing.T) {
	s, now := newTestSelector()
	ms := time.Millisecond
	for i := 0; i < 100; i++ {
		now = now.Add(200 * ms)
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
		now = now.Add(200 * ms)
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
		now = now.Add(200 * ms)
		if _, moved := round(s, now, 10*ms, 8500*time.Microsecond, 20*ms); moved {
			t.Fatalf("moved for a 15%% gain")
		}
	}
	// Gains below MinGain do not count either, whatever the percentage.
	s2, now2 := newTestSelector()
	for i := 0; i < 30; i++ {
		now2 = now2.Add(200 * ms)
		if _, moved := round(s2, now2, 800*time.Microsecond, 100*time.Microsecond, 0); moved {
			t.Fatalf("moved for a gain under 1 ms")
		}
	}
	// p3 becomes 50 % better: moves after Hold, not before.
	var start time.Time
	for i := 0; ; i++ {
		now = now.Add(200 * ms)
		cur, moved := round(s, now, 10*ms, 20*ms, 5*ms)
		if i == 0 {
			// The EWMA needs a few samples; count from when it is clear.
			continue
		}
		if start.IsZero() && s.better == 2 {
			start = s.since
		}
		if moved {
			if cur != 2 {
				t.Fatalf("moved to %d", cur)
			}
			if held := now.Sub(start); held < 2*time.Second {
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
		now = now.Add(200 * ms)
		p2 := 2 * ms
		if i%8 == 7 {
			p2 = 200 * ms // a spike: the gain is not lasting
		}
		// Reset the estimate so each spike counts (as a comeback would).
		if _, moved := round(s, now, 10*ms, p2, 20*ms); moved {
			if i%8 < 7 && now.Sub(s.since) < 2*time.Second {
				t.Fatalf("moved at round %d before the gain lasted", i)
			}
		}
	}
}

func TestSelectorNowhereToGo(t *testing.T) {
	s, now := newTestSelector()
	for i := 0; i < DefaultAttachConfig.StartMisses; i++ {
		now = now.Add(200 * time.Millisecond)
		if cur, moved := round(s, now, 0, 0, 0); moved || cur != 0 {
			t.Fatalf("moved to %d with every proxy silent", cur)
		}
	}
	// The first to answer takes the prefix at once.
	now = now.Add(200 * time.Millisecond)
	if cur, moved := round(s, now, 0, 0, 3*time.Millisecond); !moved || cur != 2 {
		t.Fatalf("current %d moved %v, want p3", cur, moved)
	}
	// A dead proxy that comes back is not clearly better at equal RTT.
	for i := 0; i < 20; i++ {
		now = now.Add(200 * time.Millisecond)
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
	start := DefaultAttachConfig.StartMisses
	for i := 1; i < start; i++ {
		now = now.Add(200 * ms)
		if _, moved := round(s, now, 0, 5*ms, 5*ms); moved {
			t.Fatalf("moved after %d misses of a proxy not heard yet, want %d", i, start)
		}
	}
	now = now.Add(200 * ms)
	if cur, moved := round(s, now, 0, 5*ms, 6*ms); !moved || cur != 1 {
		t.Fatalf("after %d misses: current %d moved %v, want p2", start, cur, moved)
	}
	// p2 has answered: three misses are enough now.
	for i := 1; ; i++ {
		now = now.Add(200 * ms)
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

// TestAttacherAdd: a candidate added while the attacher runs is probed,
// and takes the prefix when the only configured proxy dies.
func TestAttacherAdd(t *testing.T) {
	p1, p2 := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	var mu sync.Mutex
	alive := map[netip.Addr]bool{p1: true, p2: true}
	probed := map[netip.Addr]int{}
	moves := make(chan [2]int, 4)
	a, err := StartAttacher(AttacherConfig{
		Names:        []string{"p1"},
		Addrs:        []netip.Addr{p1},
		AttachConfig: AttachConfig{Interval: 5 * time.Millisecond, OnlyOnFailure: true},
		Probe: func(ctx context.Context, addr netip.Addr) (time.Duration, error) {
			mu.Lock()
			probed[addr]++
			up := alive[addr]
			mu.Unlock()
			if !up {
				<-ctx.Done()
				return 0, ctx.Err()
			}
			return time.Millisecond, nil
		},
		Apply: func(from, to int) error {
			moves <- [2]int{from, to}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if i := a.Add("p2", p2); i != 1 {
		t.Fatalf("Add returned %d, want 1", i)
	}
	mu.Lock()
	alive[p1] = false
	mu.Unlock()
	select {
	case m := <-moves:
		if m != [2]int{0, 1} {
			t.Fatalf("moved %v, want p1 → p2", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never moved to the added candidate")
	}
	if st := a.Status(); st.Current != "p2" || len(st.Candidates) != 2 || !st.Candidates[1].Live {
		t.Errorf("status %+v", st)
	}
	a.Close()
	if i := a.Add("p3", netip.MustParseAddr("100.64.0.3")); i != -1 {
		t.Errorf("Add after Close returned %d, want -1", i)
	}
	mu.Lock()
	defer mu.Unlock()
	if probed[p2] == 0 {
		t.Error("p2 never probed")
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
		now = now.Add(200 * ms)
		s.Observe(0, false, 0, now)
		if i%3 == 0 { // the others' probes are lost less often: still "live"
			s.Observe(1, false, 0, now)
			s.Observe(2, false, 0, now)
		}
		if cur, moved := s.Decide(now); moved || cur != 0 {
			t.Fatalf("round %d: moved to %d though nobody answered since p1 fell silent", i, cur)
		}
	}
	if !s.dead(0) || !s.cands[1].Live {
		t.Fatalf("p1 dead %v, p2 live %v: the test does not test the rule", s.dead(0), s.cands[1].Live)
	}
	now = now.Add(200 * ms)
	s.Observe(2, true, 7*ms, now)
	if cur, moved := s.Decide(now); !moved || cur != 2 {
		t.Fatalf("current %d moved %v after p3 answered, want p3", cur, moved)
	}
}
