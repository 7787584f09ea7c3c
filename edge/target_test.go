package edge

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

const testCtrl = 4789

var (
	testGroup  = router.Group{Addr: netip.MustParseAddr("100.96.0.1"), Proto: router.ProtoTCP, Port: 80}
	testGroup2 = router.Group{Addr: netip.MustParseAddr("100.96.0.2"), Proto: router.ProtoUDP, Port: 53}
	oldJAP     = netip.MustParseAddr("100.64.0.9")
)

// wire is a message with the seq it travels with.
type wire struct {
	seq uint32
	m   overlay.Msg
}

// encode encodes w, failing t if it cannot.
func (w wire) encode(t *testing.T) []byte {
	t.Helper()
	b, err := overlay.AppendMsg(nil, w.seq, w.m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sent is a message the target sent, and when.
type sent struct {
	at int64
	to netip.AddrPort
	wire
}

func (s sent) String() string {
	return fmt.Sprintf("%v %v seq %d to %v", time.Duration(s.at-testStart), s.m.Type(), s.seq, s.to)
}

// group is the group s is about.
func (s sent) group() router.Group {
	g, _ := overlay.GroupOf(s.m)
	return g
}

// join is s, a JOIN.
func (s sent) join() *overlay.Join { return s.m.(*overlay.Join) }

// targetSim drives a Target on virtual time against a JAP that answers at
// once: jap returns its answer to a message, or nil to lose it.
type targetSim struct {
	t      *testing.T
	tg     *Target
	now    int64
	jap    func(s sent) *wire
	sent   []sent
	events []overlay.Event
}

func newTargetSim(t *testing.T, cfg TargetConfig) *targetSim {
	s := &targetSim{t: t, now: testStart, jap: answerAll}
	cfg.Name, cfg.ControlPort, cfg.Epoch = "t1", testCtrl, 5000
	if cfg.Groups == nil {
		cfg.Groups = []Membership{{Group: testGroup, Port: 8080}}
	}
	cfg.OnEvent = func(e overlay.Event) { s.events = append(s.events, e) }
	s.tg = NewTarget(cfg)
	return s
}

// answerAll is a JAP that answers everything, as overlay's does. (deliver
// checks that the target sends nothing else.)
func answerAll(s sent) *wire {
	switch s.m.(type) {
	case *overlay.Join, *overlay.Leave:
		return &wire{s.seq, &overlay.JoinAck{Group: s.group(), Status: overlay.StatusOK}}
	default:
		return &wire{s.seq, &overlay.KeepaliveAck{Group: s.group(), Status: overlay.StatusOK}}
	}
}

// setStatus sets the status and reason of w, an answer.
func setStatus(w *wire, st overlay.Status, reason string) {
	switch a := w.m.(type) {
	case *overlay.JoinAck:
		a.Status, a.Reason = st, reason
	case *overlay.KeepaliveAck:
		a.Status, a.Reason = st, reason
	default:
		panic(fmt.Sprintf("%v is no answer", w.m.Type()))
	}
}

// grp1 is where testGroup's JAP answers from: the group's address.
var grp1 = netip.AddrPortFrom(testGroup.Addr, testCtrl)

// deliver records pkts and feeds the JAP's answers back.
func (s *targetSim) deliver(pkts []Packet) {
	s.t.Helper()
	for _, p := range pkts {
		seq, m, err := overlay.ParseMsg(p.Data)
		if err != nil {
			s.t.Fatalf("the target sent a message that does not decode: %v", err)
		}
		switch m.(type) {
		case *overlay.Join, *overlay.Leave, *overlay.Keepalive, *overlay.Drain:
		default:
			s.t.Fatalf("the target sent a %v", m.Type())
		}
		x := sent{at: s.now, to: p.To, wire: wire{seq, m}}
		s.sent = append(s.sent, x)
		if a := s.jap(x); a != nil {
			_, more := s.tg.Handle(s.now, x.to, a.encode(s.t))
			s.deliver(more)
		}
	}
}

// run advances the clock to until, ticking the target whenever it asks.
func (s *targetSim) run(until int64) {
	s.t.Helper()
	for ticks := 0; ; ticks++ {
		next := s.tg.Next()
		if next > until {
			break
		}
		if ticks > 10000 {
			s.t.Fatalf("the target asks for %d ticks by %v: a busy loop", ticks, time.Duration(s.now-testStart))
		}
		s.now = max(s.now, next)
		s.deliver(s.tg.Tick(s.now))
	}
	s.now = until
}

// of is what the target sent of type typ, after from.
func (s *targetSim) of(typ overlay.Type, from int64) []sent {
	var out []sent
	for _, x := range s.sent {
		if x.m.Type() == typ && x.at >= from {
			out = append(out, x)
		}
	}
	return out
}

func (s *targetSim) kinds() []string {
	var out []string
	for _, e := range s.events {
		out = append(out, string(e.Kind)+":"+e.Reason)
	}
	return out
}

func at(d time.Duration) int64 { return testStart + int64(d) }

func TestTargetJoins(t *testing.T) {
	s := newTargetSim(t, TargetConfig{Keepalive: time.Second,
		Groups: []Membership{{Group: testGroup, Port: 8080, Policy: router.Policy{Select: router.SelectLoad}}, {Group: testGroup2, Port: 5353, Weight: 3}}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.tg.WaitJoined(ctx); err == nil || s.tg.Joined() {
		t.Fatal("joined before anything was sent")
	}
	s.run(at(3500 * time.Millisecond))
	joins := s.of(overlay.TypeJoin, 0)
	if len(joins) != 2 {
		t.Fatalf("joins %v, want one per group", joins)
	}
	j0, j := joins[0].join(), joins[1].join()
	if joins[0].to != netip.AddrPortFrom(testGroup.Addr, testCtrl) || joins[1].to != netip.AddrPortFrom(testGroup2.Addr, testCtrl) {
		t.Errorf("joins go to %v and %v, want the groups' anycast control ports", joins[0].to, joins[1].to)
	}
	if j0.Epoch != 5001 || j.Epoch != 5002 || j.Name != "t1" || j.Port != 5353 || j.Weight != 3 || j0.Weight != 1 ||
		j.Keepalive != time.Second || j0.Policy.Select != router.SelectLoad {
		t.Errorf("joins %+v and %+v", j0, j)
	}
	if joins[0].seq == joins[1].seq {
		t.Error("two requests with one seq: their answers cannot be told apart")
	}
	if !s.tg.Joined() || s.tg.WaitJoined(context.Background()) != nil {
		t.Error("not joined")
	}
	if got := s.kinds(); !slices.Equal(got, []string{"joined:", "joined:"}) {
		t.Errorf("events %v", got)
	}
	var kas []time.Duration
	for _, x := range s.of(overlay.TypeKeepalive, 0) {
		if x.group() == testGroup {
			kas = append(kas, time.Duration(x.at-testStart))
		}
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !slices.Equal(kas, want) {
		t.Errorf("keepalives at %v, want %v", kas, want)
	}
}

// TestTargetJoinRetried: a JOIN unanswered (the tunnel still coming up) is
// sent again every 500 ms, each with a new epoch.
func TestTargetJoinRetried(t *testing.T) {
	s := newTargetSim(t, TargetConfig{})
	up := at(1200 * time.Millisecond)
	s.jap = func(x sent) *wire {
		if x.at < up {
			return nil
		}
		return answerAll(x)
	}
	s.run(at(2 * time.Second))
	var times []time.Duration
	var epochs []uint32
	for _, x := range s.of(overlay.TypeJoin, 0) {
		times = append(times, time.Duration(x.at-testStart))
		epochs = append(epochs, x.join().Epoch)
	}
	if want := []time.Duration{0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond}; !slices.Equal(times, want) {
		t.Errorf("joins at %v, want %v", times, want)
	}
	if want := []uint32{5001, 5002, 5003, 5004}; !slices.Equal(epochs, want) {
		t.Errorf("epochs %v, want %v", epochs, want)
	}
	if !s.tg.Joined() {
		t.Error("not joined once the JAP answers")
	}
}

// TestTargetRefused: a refused join is an event, an error for WaitJoined,
// and a new try a keepalive interval later.
func TestTargetRefused(t *testing.T) {
	s := newTargetSim(t, TargetConfig{Keepalive: 2 * time.Second})
	s.jap = func(x sent) *wire {
		a := answerAll(x)
		setStatus(a, overlay.StatusRefused, "policy \"load\" conflicts")
		return a
	}
	s.run(at(3 * time.Second))
	if got := s.kinds(); !slices.Equal(got, []string{"join-refused:policy \"load\" conflicts", "join-refused:policy \"load\" conflicts"}) {
		t.Errorf("events %v", got)
	}
	var times []time.Duration
	for _, x := range s.of(overlay.TypeJoin, 0) {
		times = append(times, time.Duration(x.at-testStart))
	}
	if want := []time.Duration{0, 2 * time.Second}; !slices.Equal(times, want) {
		t.Errorf("joins at %v, want %v", times, want)
	}
	if err := s.tg.WaitJoined(context.Background()); err == nil || !strings.Contains(err.Error(), "conflicts") {
		t.Errorf("WaitJoined: %v", err)
	}
	if n := len(s.of(overlay.TypeKeepalive, 0)); n != 0 {
		t.Errorf("%d keepalives while refused", n)
	}
}

// TestUnsendableJoinDoesNotSpin: a keepalive beyond what a JOIN carries
// (about 49.7 days of milliseconds) makes every JOIN fail to encode; the
// target says so (refused) and retries a second later, never in a busy
// loop.
func TestUnsendableJoinDoesNotSpin(t *testing.T) {
	s := newTargetSim(t, TargetConfig{Keepalive: 50 * 24 * time.Hour})
	s.run(at(0))
	if len(s.sent) != 0 {
		t.Fatalf("sent %v", s.sent)
	}
	if got := s.kinds(); len(got) != 1 || !strings.HasPrefix(got[0], "join-refused:") {
		t.Fatalf("events %v, want one refusal", got)
	}
	if next := s.tg.Next(); next != at(unsendableWait) {
		t.Fatalf("next try at %v, want %v", time.Duration(next-testStart), unsendableWait)
	}
	// Ticks at the same time do nothing more.
	for range 100 {
		s.tg.Tick(s.now)
	}
	s.run(at(10*time.Second - 1))
	if n := len(s.events); n != 10 {
		t.Errorf("%d refusals in 10 s, want one a second", n)
	}
	if err := s.tg.WaitJoined(context.Background()); err == nil {
		t.Error("WaitJoined does not say the join cannot be sent")
	}
}

// TestTwoLostKeepalivesKeepTarget: two keepalives in a row go unanswered;
// the target sends the next one an interval after the last lost one left
// (not two), so that its JAP, which allows three missed keepalives and a
// little, hears it in time; the target stays joined and does not join
// again. A third loss in a row makes it join again.
func TestTwoLostKeepalivesKeepTarget(t *testing.T) {
	const ka = 100 * time.Millisecond
	for _, lost := range []int{2, 3} {
		t.Run(fmt.Sprint(lost, " lost"), func(t *testing.T) {
			s := newTargetSim(t, TargetConfig{Keepalive: ka})
			kas := 0
			var heard []int64 // keepalives the JAP answered
			s.jap = func(x sent) *wire {
				if _, ok := x.m.(*overlay.Keepalive); ok {
					if kas++; kas >= 3 && kas < 3+lost {
						return nil
					}
					heard = append(heard, x.at)
				}
				return answerAll(x)
			}
			for s.now < at(15*ka) {
				s.run(s.now + int64(ka/10))
				if lost == 2 && !s.tg.Joined() {
					t.Fatalf("not joined at %v", time.Duration(s.now-testStart))
				}
			}
			var times []time.Duration
			for _, x := range s.of(overlay.TypeKeepalive, 0)[:6] {
				times = append(times, time.Duration(x.at-testStart))
			}
			want := []time.Duration{ka, 2 * ka, 3 * ka, 4 * ka, 5 * ka, 6 * ka}
			if !slices.Equal(times, want) {
				t.Errorf("keepalives at %v, want %v", times, want)
			}
			joins := len(s.of(overlay.TypeJoin, 0))
			switch lost {
			case 2:
				if joins != 1 {
					t.Errorf("%d joins, want 1", joins)
				}
				var gap int64
				for i := 1; i < len(heard); i++ {
					gap = max(gap, heard[i]-heard[i-1])
				}
				if time.Duration(gap) > 3*ka {
					t.Errorf("the JAP heard no keepalive for %v (interval %v)", time.Duration(gap), ka)
				}
			case 3:
				if j := s.of(overlay.TypeJoin, at(6*ka)); joins != 2 || len(j) != 1 || j[0].at != at(6*ka) {
					t.Errorf("joins %v, want one again at %v, when the third keepalive in a row went unanswered", s.of(overlay.TypeJoin, 0), 6*ka)
				}
				// The JOIN answered, the next keepalive goes at once: the
				// JAP has heard nothing for a while.
				if k := s.of(overlay.TypeKeepalive, at(6*ka)); len(k) == 0 || k[0].at != at(6*ka) {
					t.Errorf("keepalives after the join again: %v", k)
				}
			}
		})
	}
}

// TestTargetUnknownJoinsAgain: a keepalive answered "unknown" (the proxy
// that heard it does not know the target) makes it join again at once.
func TestTargetUnknownJoinsAgain(t *testing.T) {
	s := newTargetSim(t, TargetConfig{Keepalive: time.Second})
	s.jap = func(x sent) *wire {
		a := answerAll(x)
		if _, ok := x.m.(*overlay.Keepalive); ok && x.at == at(2*time.Second) {
			setStatus(a, overlay.StatusUnknown, "")
		}
		return a
	}
	s.run(at(2500 * time.Millisecond))
	joins := s.of(overlay.TypeJoin, 0)
	if len(joins) != 2 || joins[1].at != at(2*time.Second) || joins[1].join().Epoch != joins[0].join().Epoch+1 {
		t.Errorf("joins %v, want a second one at 2s with the next epoch", joins)
	}
	if got := s.kinds(); !slices.Equal(got, []string{"joined:", "rejoin:", "joined:"}) {
		t.Errorf("events %v", got)
	}
	if !s.tg.Joined() {
		t.Error("not joined again")
	}
}

// TestTargetMoved: after a move, the old proxy gets a LEAVE at its own
// address, and every group joins again at once through the new one, in
// whatever exchange it was.
func TestTargetMoved(t *testing.T) {
	s := newTargetSim(t, TargetConfig{Keepalive: time.Second,
		Groups: []Membership{{Group: testGroup, Port: 8080}, {Group: testGroup2, Port: 5353}}})
	s.jap = func(x sent) *wire {
		if _, ok := x.m.(*overlay.Keepalive); ok && x.group() == testGroup2 {
			return nil // group 2 waits for a keepalive's answer
		}
		return answerAll(x)
	}
	s.run(at(1500 * time.Millisecond))
	s.deliver(s.tg.Moved(s.now, oldJAP))
	leaves := s.of(overlay.TypeLeave, s.now)
	if len(leaves) != 2 || leaves[0].to != netip.AddrPortFrom(oldJAP, testCtrl) || leaves[0].group() != testGroup || leaves[1].group() != testGroup2 {
		t.Errorf("leaves %v, want one per group to the old proxy", leaves)
	}
	joins := s.of(overlay.TypeJoin, s.now)
	if len(joins) != 2 || joins[0].to.Addr() != testGroup.Addr || joins[1].to.Addr() != testGroup2.Addr {
		t.Errorf("joins after the move %v, want one per group at once", joins)
	}
	if got := s.kinds(); !slices.Equal(got[2:], []string{"rejoin:moved", "rejoin:moved", "joined:", "joined:"}) {
		t.Errorf("events %v", got)
	}
	// The answer to the unnumbered leave is no answer to anything else.
	b := wire{0, &overlay.JoinAck{Group: testGroup}}.encode(t)
	if ok, _ := s.tg.Handle(s.now, grp1, b); ok {
		t.Error("an answer with seq 0 taken")
	}
}

// TestLeaveRetried: a target that stops sends its leave again, 300 ms
// apart, while its JAP does not confirm it (the first may not get out of a
// busy host before the device closes), up to three times; only once when
// the JAP answers; and none for a group it has not joined.
func TestLeaveRetried(t *testing.T) {
	for _, answer := range []bool{false, true} {
		t.Run(fmt.Sprint("answer ", answer), func(t *testing.T) {
			s := newTargetSim(t, TargetConfig{Keepalive: time.Second,
				Groups: []Membership{{Group: testGroup, Port: 8080}, {Group: testGroup2, Port: 5353}}})
			s.jap = func(x sent) *wire {
				if _, ok := x.m.(*overlay.Join); ok && x.group() == testGroup2 {
					return nil // never joined
				}
				if _, ok := x.m.(*overlay.Leave); ok && !answer {
					return nil
				}
				return answerAll(x)
			}
			s.run(at(1200 * time.Millisecond))
			stop := s.now
			s.deliver(s.tg.Stop(s.now))
			s.run(at(10 * time.Second))
			var times []time.Duration
			for _, x := range s.of(overlay.TypeLeave, 0) {
				if x.group() != testGroup || x.to.Addr() != testGroup.Addr {
					t.Errorf("leave %v", x)
				}
				times = append(times, time.Duration(x.at-stop))
			}
			want := []time.Duration{0}
			if !answer {
				want = []time.Duration{0, leaveWait, 2 * leaveWait}
			}
			if !slices.Equal(times, want) {
				t.Errorf("leaves at %v after Stop, want %v", times, want)
			}
			if !s.tg.Done() {
				t.Error("not done")
			}
			if n := len(s.of(overlay.TypeJoin, stop+1)) + len(s.of(overlay.TypeKeepalive, stop+1)); n != 0 {
				t.Errorf("%d joins or keepalives after Stop", n)
			}
		})
	}
}

// TestTargetIgnoresStrangers: datagrams that are not the answer awaited
// (garbage, another type, a stale seq, another group's answer) change
// nothing.
func TestTargetIgnoresStrangers(t *testing.T) {
	s := newTargetSim(t, TargetConfig{})
	s.jap = func(sent) *wire { return nil }
	s.run(at(0))
	join := s.sent[0]
	for name, w := range map[string]wire{
		"keepalive answer": {join.seq, &overlay.KeepaliveAck{Group: testGroup}},
		"stale seq":        {join.seq + 7, &overlay.JoinAck{Group: testGroup}},
		"another group":    {join.seq, &overlay.JoinAck{Group: testGroup2}},
		"proxies":          {join.seq, &overlay.Proxies{}},
	} {
		if ok, out := s.tg.Handle(s.now, grp1, w.encode(t)); ok || len(out) > 0 {
			t.Errorf("%s: taken (%d to send)", name, len(out))
		}
	}
	// The awaited answer, from anywhere but the group's address.
	right := wire{join.seq, &overlay.JoinAck{Group: testGroup}}.encode(t)
	for _, from := range []netip.AddrPort{netip.AddrPortFrom(testGroup2.Addr, testCtrl), netip.AddrPortFrom(testGroup.Addr, testCtrl+1), netip.MustParseAddrPort("100.64.0.9:4000")} {
		if ok, out := s.tg.Handle(s.now, from, right); ok || len(out) > 0 {
			t.Errorf("the answer from %v taken", from)
		}
	}
	// A valid header with the awaited seq, then garbage.
	bad := wire{join.seq, &overlay.JoinAck{Group: testGroup}}.encode(t)[:overlay.HeaderLen]
	bad = append(bad, "garbage"...)
	if _, _, err := overlay.ParseMsg(bad); err == nil {
		t.Fatal("the garbage parses")
	}
	for _, b := range [][]byte{nil, {'P'}, bad} {
		if ok, _ := s.tg.Handle(s.now, grp1, b); ok {
			t.Errorf("%q taken", b)
		}
	}
	if s.tg.Joined() {
		t.Error("joined by a stranger")
	}
}

// TestTargetKeepaliveAckOfAnotherGroup: a keepalive's answer must be about
// the group it asked about, or a "not known" for another group would make
// it join again.
func TestTargetKeepaliveAckOfAnotherGroup(t *testing.T) {
	s := newTargetSim(t, TargetConfig{Keepalive: time.Second})
	s.jap = func(x sent) *wire {
		if _, ok := x.m.(*overlay.Keepalive); ok {
			return nil
		}
		return answerAll(x)
	}
	s.run(at(time.Second))
	kas := s.of(overlay.TypeKeepalive, 0)
	if len(kas) != 1 {
		t.Fatalf("keepalives %v, want one", kas)
	}
	b := wire{kas[0].seq, &overlay.KeepaliveAck{Group: testGroup2, Status: overlay.StatusUnknown}}.encode(t)
	if ok, out := s.tg.Handle(s.now, netip.AddrPortFrom(testGroup2.Addr, testCtrl), b); ok || len(out) > 0 {
		t.Errorf("another group's answer taken (%d to send)", len(out))
	}
	b = wire{kas[0].seq, &overlay.KeepaliveAck{Group: testGroup, Status: overlay.StatusUnknown}}.encode(t)
	if ok, out := s.tg.Handle(s.now, grp1, b); !ok || len(out) != 1 {
		t.Errorf("the answer: taken %v, %d to send, want a join again", ok, len(out))
	}
}

// TestTargetGroupStatus: each group's state as status shows it: pending
// until answered, then joined at the proxy the edge is attached to, or
// refused with the proxy's reason (since the first of a run of equal
// refusals); pending again after a move, and joined at the new proxy.
func TestTargetGroupStatus(t *testing.T) {
	jap := "p1"
	s := newTargetSim(t, TargetConfig{Keepalive: time.Second, JAP: func() string { return jap },
		Groups: []Membership{{Group: testGroup, Port: 8080}, {Group: testGroup2, Port: 5353}}})
	refuse := "group 100.96.0.2:53/udp has policy select=load replicate=1 scope=any here; this join asks for select=random replicate=1 scope=any"
	s.jap = func(x sent) *wire {
		a := answerAll(x)
		if x.group() == testGroup2 && x.at < at(3*time.Second) {
			setStatus(a, overlay.StatusRefused, refuse)
		}
		return a
	}
	want := []GroupStatus{{Group: testGroup, State: JoinPending}, {Group: testGroup2, State: JoinPending}}
	if got := s.tg.Groups(); !slices.Equal(got, want) {
		t.Fatalf("before the first tick: %+v, want %+v", got, want)
	}
	s.run(at(2500 * time.Millisecond))
	want = []GroupStatus{
		{Group: testGroup, State: JoinJoined, JAP: "p1", Since: at(0), Tried: true},
		// Refused at 0, 1 s and 2 s: since the first.
		{Group: testGroup2, State: JoinRefused, JAP: "p1", Reason: refuse, Since: at(0), Tried: true},
	}
	if got := s.tg.Groups(); !slices.Equal(got, want) {
		t.Fatalf("after 2.5 s:\n %+v\nwant\n %+v", got, want)
	}
	// The group 2 join at 3 s is accepted.
	s.run(at(3500 * time.Millisecond))
	if got := s.tg.Groups()[1]; got != (GroupStatus{Group: testGroup2, State: JoinJoined, JAP: "p1", Since: at(3 * time.Second), Tried: true}) {
		t.Fatalf("after the accepted join: %+v", got)
	}
	// A move: pending while the joins are under way, then joined at p2.
	jap = "p2"
	s.jap = func(x sent) *wire {
		if _, ok := x.m.(*overlay.Join); ok {
			return nil
		}
		return answerAll(x)
	}
	s.deliver(s.tg.Moved(s.now, oldJAP))
	moved := s.now
	for _, g := range s.tg.Groups() {
		if g.State != JoinPending || g.Reason != "moved" || g.JAP != "" || g.Since != moved {
			t.Errorf("after the move: %+v, want pending (moved) since %v", g, time.Duration(moved-testStart))
		}
	}
	s.jap = answerAll
	s.run(s.now + int64(time.Second))
	for _, g := range s.tg.Groups() {
		if g.State != JoinJoined || g.JAP != "p2" || g.Since != moved+int64(joinWait) {
			t.Errorf("after the move and the joins: %+v, want joined at p2 since %v", g, time.Duration(moved+int64(joinWait)-testStart))
		}
	}
}
