package edge

import (
	"math"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay"
)

// drainJAP answers as a JAP whose draining target has *flows live flows:
// ok with the count while there are any, unknown once it dropped the
// target; joins and keepalives as answerAll.
func drainJAP(flows *int, dropped *bool) func(s sent) *wire {
	return func(s sent) *wire {
		d, ok := s.m.(*overlay.Drain)
		if !ok {
			if _, join := s.m.(*overlay.Join); join {
				*dropped = false
			}
			return answerAll(s)
		}
		if *dropped {
			return &wire{s.seq, &overlay.DrainAck{Group: d.Group, Status: overlay.StatusUnknown}}
		}
		if *flows == 0 {
			*dropped = true
		}
		return &wire{s.seq, &overlay.DrainAck{Group: d.Group, Status: overlay.StatusOK, Flows: uint32(*flows)}}
	}
}

// TestTargetDrain: a drain goes out at once with its timeout, and again
// every keepalive interval in place of keepalives, reporting the JAP's
// flows; when they reach zero the group is drained and nothing more is
// sent for it, until Undrain joins it again.
func TestTargetDrain(t *testing.T) {
	flows, dropped := 3, false
	s := newTargetSim(t, TargetConfig{Keepalive: time.Second})
	s.jap = drainJAP(&flows, &dropped)
	s.run(at(1500 * time.Millisecond))
	if st := s.tg.Groups()[0].State; st != JoinJoined {
		t.Fatalf("state %v before the drain", st)
	}
	if _, err := s.tg.Drain(s.now, testGroup2, 0); err == nil {
		t.Error("drain of a group the target does not have: no error")
	}
	out, err := s.tg.Drain(s.now, testGroup, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := s.now
	s.deliver(out)
	drains := s.of(overlay.TypeDrain, start)
	if len(drains) != 1 || drains[0].m.(*overlay.Drain).Timeout != 10*time.Second || drains[0].to != grp1 {
		t.Fatalf("drains sent: %v", drains)
	}
	if g := s.tg.Groups()[0]; g.State != JoinDraining || g.Flows != 3 {
		t.Errorf("after the first drain: %+v, want draining with 3 flows", g)
	}
	flows = 1
	s.run(start + int64(2500*time.Millisecond))
	if n := len(s.of(overlay.TypeKeepalive, start)); n != 0 {
		t.Errorf("%d keepalives while draining: drains stand for them", n)
	}
	if g := s.tg.Groups()[0]; g.State != JoinDraining || g.Flows != 1 || len(s.of(overlay.TypeDrain, start)) != 3 {
		t.Errorf("draining: %+v after %d drains", g, len(s.of(overlay.TypeDrain, start)))
	}
	flows = 0
	s.run(start + int64(3500*time.Millisecond))
	if g := s.tg.Groups()[0]; g.State != JoinDrained || g.Flows != 0 || g.Reason != "its flows ended" {
		t.Errorf("after the flows ended: %+v", g)
	}
	if next := s.tg.Next(); next != math.MaxInt64 {
		t.Errorf("a drained target wants a tick at %v", time.Duration(next-start))
	}
	n := len(s.sent)
	s.run(s.now + int64(time.Minute))
	if len(s.sent) != n {
		t.Errorf("a drained group sent: %v", s.sent[n:])
	}
	out, _ = s.tg.Undrain(s.now, testGroup)
	s.deliver(out)
	if g := s.tg.Groups()[0]; g.State != JoinJoined || len(s.of(overlay.TypeJoin, s.now)) != 1 {
		t.Errorf("after undrain: %+v", g)
	}
}

// TestTargetDrainUnknownAndSilent: a JAP that no longer holds the target
// (unknown) or does not answer leaves the group drained; a group not joined
// yet drains at once; Stop leaves a draining group.
func TestTargetDrainUnknownAndSilent(t *testing.T) {
	for _, c := range []struct {
		name   string
		jap    func(s sent) *wire
		reason string
	}{
		{"unknown", func(s sent) *wire {
			if d, ok := s.m.(*overlay.Drain); ok {
				return &wire{s.seq, &overlay.DrainAck{Group: d.Group, Status: overlay.StatusUnknown}}
			}
			return answerAll(s)
		}, "its JAP holds it no more: its flows ended, or the drain timed out"},
		{"silent", func(s sent) *wire {
			if _, ok := s.m.(*overlay.Drain); ok {
				return nil
			}
			return answerAll(s)
		}, "its JAP stopped answering"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTargetSim(t, TargetConfig{Keepalive: time.Second})
			s.jap = c.jap
			s.run(at(1500 * time.Millisecond))
			out, _ := s.tg.Drain(s.now, testGroup, 0)
			s.deliver(out)
			s.run(s.now + int64(5*time.Second))
			if g := s.tg.Groups()[0]; g.State != JoinDrained || g.Reason != c.reason {
				t.Errorf("%+v, want drained: %q", g, c.reason)
			}
		})
	}
	t.Run("not joined", func(t *testing.T) {
		s := newTargetSim(t, TargetConfig{Keepalive: time.Second})
		s.jap = func(sent) *wire { return nil }
		s.run(at(100 * time.Millisecond))
		out, _ := s.tg.Drain(s.now, testGroup, 0)
		if len(out) != 0 || s.tg.Groups()[0].State != JoinDrained {
			t.Errorf("drain before the join: sent %d, state %v", len(out), s.tg.Groups()[0].State)
		}
	})
	t.Run("stop", func(t *testing.T) {
		s := newTargetSim(t, TargetConfig{Keepalive: time.Second})
		s.jap = func(x sent) *wire {
			if _, ok := x.m.(*overlay.Drain); ok {
				return nil
			}
			return answerAll(x)
		}
		s.run(at(1500 * time.Millisecond))
		out, _ := s.tg.Drain(s.now, testGroup, 0)
		s.deliver(out)
		stop := s.now
		s.deliver(s.tg.Stop(s.now))
		if len(s.of(overlay.TypeLeave, stop)) != 1 || !s.tg.Done() {
			t.Errorf("stop while draining: leaves %v, done %v", s.of(overlay.TypeLeave, stop), s.tg.Done())
		}
	})
}
