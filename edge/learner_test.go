package edge

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
)

var a = netip.MustParseAddr

// testEdge is client cl1 at 100.64.2.1 with one proxy p1.
func testEdge() *config.Edge {
	return &config.Edge{Node: config.Node{
		Name:          "cl1",
		PublicKey:     config.Key{1},
		Address:       []netip.Addr{a("100.64.2.1")},
		OverlayPrefix: config.DefaultOverlayPrefix(),
		ControlPort:   testCtrl,
		Proxies:       []config.ProxyPeer{{Name: "p1", PublicKey: config.Key{2}, Address: []netip.Addr{a("100.64.0.1"), a("fd64::1")}}},
	}}
}

// testMember is proxy name, numbered i, as a proxy tells of it.
func testMember(name string, i byte) overlay.Member {
	return overlay.Member{Name: name, PublicKey: [32]byte{2 + i}, Addr: netip.AddrFrom4([4]byte{100, 64, 0, i}),
		Addr6: netip.AddrFrom16([16]byte{0xfd, 0x64, 15: i}), Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, i}), 51820)}
}

// TestLearnChecks: a proxy an edge is told of becomes a candidate only if
// it clashes with nothing the edge has and can be reached.
func TestLearnChecks(t *testing.T) {
	cfg := testEdge()
	cands := []Candidate{NewCandidate(cfg, cfg.Proxies[0], false)}
	ok := testMember("p2", 2)
	if err := Check(cfg, cands, ok); err != nil {
		t.Fatalf("p2: %v", err)
	}
	with := func(f func(*overlay.Member)) overlay.Member {
		m := ok
		f(&m)
		return m
	}
	for _, tc := range []struct {
		name string
		m    overlay.Member
		want string
	}{
		{"known", with(func(m *overlay.Member) { m.Name, m.PublicKey = "p1", [32]byte{2} }), "known"},
		{"name with another key", with(func(m *overlay.Member) { m.Name = "p1" }), "another key"},
		{"key of another", with(func(m *overlay.Member) { m.PublicKey = [32]byte{2} }), `key of "p1"`},
		{"address of another", with(func(m *overlay.Member) { m.Addr = a("100.64.0.1") }), `address of "p1"`},
		{"IPv6 address of another", with(func(m *overlay.Member) { m.Addr6 = a("fd64::1") }), `address of "p1"`},
		{"own key", with(func(m *overlay.Member) { m.PublicKey = [32]byte{1} }), "own key"},
		{"own address", with(func(m *overlay.Member) { m.Addr = a("100.64.2.1") }), "own key or address"},
		{"outside the overlay", with(func(m *overlay.Member) { m.Addr = a("10.0.0.2") }), "outside"},
		{"no endpoint", with(func(m *overlay.Member) { m.Endpoint = netip.MustParseAddrPort("0.0.0.0:51820") }), "no address to send to"},
	} {
		err := Check(cfg, cands, tc.m)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for i := len(cands); i < config.MaxCandidates; i++ {
		cands = append(cands, Candidate{Name: "x", Peer: config.ProxyPeer{Name: "x", PublicKey: config.Key{9, byte(i)}}})
	}
	if err := Check(cfg, cands, ok); !errors.Is(err, ErrFull) {
		t.Errorf("with %d candidates: %v, want ErrFull", len(cands), err)
	}
	// An IPv6-only edge cannot use a proxy with no IPv6 address.
	cfg.Address = []netip.Addr{a("fd64::2:1")}
	if err := Check(cfg, cands[:1], with(func(m *overlay.Member) { m.Addr6 = netip.Addr{} })); err == nil || !strings.Contains(err.Error(), "family") {
		t.Errorf("IPv6-only edge, IPv4-only proxy: %v", err)
	}
}

// learnSim drives a Learner on virtual time; proxies answers each question
// with a list (nil: no answer).
type learnSim struct {
	t       *testing.T
	l       *Learner
	now     int64
	cands   []Candidate
	addErr  error
	asked   []wire // each a *overlay.ProxiesReq
	askedAt []time.Duration
	answer  func(q wire) *wire
	events  []overlay.Event
	logs    []string
}

func newLearnSim(t *testing.T) *learnSim {
	cfg := testEdge()
	s := &learnSim{t: t, now: testStart, cands: []Candidate{NewCandidate(cfg, cfg.Proxies[0], false)}}
	s.l = NewLearner(LearnerConfig{Edge: cfg,
		OnEvent: func(e overlay.Event) { s.events = append(s.events, e) },
		Logf:    func(f string, args ...any) { s.logs = append(s.logs, fmt.Sprintf(f, args...)) }}, s.now)
	return s
}

func (s *learnSim) run(until int64) {
	s.t.Helper()
	for ticks := 0; s.l.Next() <= until; ticks++ {
		if ticks > 1000 {
			s.t.Fatal("busy loop")
		}
		s.now = max(s.now, s.l.Next())
		for _, p := range s.l.Tick(s.now, s.cands[0]) {
			seq, m, err := overlay.ParseMsg(p.Data)
			if err != nil {
				s.t.Fatal(err)
			}
			if _, ok := m.(*overlay.ProxiesReq); !ok {
				s.t.Fatalf("sent a %v, want a proxies-req", m.Type())
			}
			q := wire{seq, m}
			if p.To != netip.AddrPortFrom(a("100.64.0.1"), testCtrl) {
				s.t.Errorf("asked %v, want p1's IPv4 control port", p.To)
			}
			s.asked = append(s.asked, q)
			s.askedAt = append(s.askedAt, time.Duration(s.now-testStart))
			if s.answer == nil {
				continue
			}
			if ans := s.answer(q); ans != nil {
				b := ans.encode(s.t)
				s.now += 10 * ms
				if !s.l.Handle(s.now, p.To, b, s.cands, s.add) {
					s.t.Errorf("answer %+v (seq %d) not taken", ans.m, ans.seq)
				}
			}
		}
	}
	s.now = until
}

func (s *learnSim) add(c Candidate) error {
	if s.addErr != nil {
		return s.addErr
	}
	s.cands = append(s.cands, c)
	return nil
}

// digest is the digest the i-th question sent.
func (s *learnSim) digest(i int) uint32 { return s.asked[i].m.(*overlay.ProxiesReq).Digest }

func (s *learnSim) names() []string {
	var out []string
	for _, c := range s.cands {
		out = append(out, c.Name)
	}
	return out
}

// TestLearnerAsks: the first question goes 500 ms after the start; one
// unanswered is given up after 1 s and asked again 500 ms later; after an
// answer, every 2 s with the answer's digest.
func TestLearnerAsks(t *testing.T) {
	s := newLearnSim(t)
	s.run(at(2 * time.Second))
	if want := []time.Duration{500 * time.Millisecond, 2 * time.Second}; !slices.Equal(s.askedAt, want) {
		t.Fatalf("unanswered questions at %v, want %v", s.askedAt, want)
	}
	s.answer = func(q wire) *wire {
		return &wire{q.seq, &overlay.Proxies{Digest: 77, Peers: []overlay.Member{testMember("p1", 1), testMember("p2", 2)}}}
	}
	s.asked, s.askedAt = nil, nil
	s.run(at(9 * time.Second))
	if want := []time.Duration{3500 * time.Millisecond, 5510 * time.Millisecond, 7520 * time.Millisecond}; !slices.Equal(s.askedAt, want) {
		t.Errorf("questions at %v, want %v", s.askedAt, want)
	}
	if s.digest(0) != 0 || s.digest(1) != 77 {
		t.Errorf("digests %d then %d, want 0 then 77", s.digest(0), s.digest(1))
	}
	if got := s.names(); !slices.Equal(got, []string{"p1", "p2"}) {
		t.Fatalf("candidates %v", got)
	}
	c := s.cands[1]
	if !c.Learned || c.Addr != a("100.64.0.2") || c.Peer.PublicKey != (config.Key{4}) || c.Peer.Endpoint.Port() != 51820 || len(c.Peer.Address) != 2 {
		t.Errorf("learned candidate %+v", c)
	}
	if len(s.events) != 1 || s.events[0].Kind != "learned" || s.events[0].Proxy != "p2" || s.events[0].Name != "cl1" || s.events[0].Reason != "p2, told by p1" {
		t.Errorf("events %+v", s.events)
	}
}

// TestLearnerAddFails: a proxy that cannot be added makes the next
// question come after 500 ms and ask for the whole list.
func TestLearnerAddFails(t *testing.T) {
	s := newLearnSim(t)
	s.addErr = errors.New("device closed")
	s.answer = func(q wire) *wire {
		return &wire{q.seq, &overlay.Proxies{Digest: 77, Peers: []overlay.Member{testMember("p2", 2)}}}
	}
	s.run(at(1100 * time.Millisecond))
	if want := []time.Duration{500 * time.Millisecond, 1010 * time.Millisecond}; !slices.Equal(s.askedAt, want) {
		t.Errorf("questions at %v, want %v", s.askedAt, want)
	}
	if s.digest(1) != 0 {
		t.Errorf("asked with digest %d after a failure, want 0", s.digest(1))
	}
	if len(s.logs) == 0 || !strings.Contains(s.logs[0], "device closed") || len(s.events) != 0 {
		t.Errorf("logs %q, events %v", s.logs, s.events)
	}
}

// TestLearnerFull: an edge takes proxies up to MaxCandidates, and says how
// many it left out.
func TestLearnerFull(t *testing.T) {
	s := newLearnSim(t)
	var peers []overlay.Member
	for i := range overlay.MaxPeers {
		peers = append(peers, testMember(fmt.Sprint("q", i), byte(10+i)))
	}
	s.answer = func(q wire) *wire {
		return &wire{q.seq, &overlay.Proxies{Digest: 77, Peers: peers}}
	}
	s.run(at(600 * time.Millisecond))
	if len(s.cands) != config.MaxCandidates {
		t.Errorf("%d candidates, want %d", len(s.cands), config.MaxCandidates)
	}
	if len(s.logs) != 1 || !strings.Contains(s.logs[0], fmt.Sprintf("%d of the proxies \"p1\" told of not used", overlay.MaxPeers-config.MaxCandidates+1)) {
		t.Errorf("logs %q", s.logs)
	}
}

// TestLearnerIgnoresStrangers: only the answer to the question under way
// is taken.
func TestLearnerIgnoresStrangers(t *testing.T) {
	s := newLearnSim(t)
	s.run(at(500 * time.Millisecond))
	seq := s.asked[0].seq
	p1ctl := netip.AddrPortFrom(a("100.64.0.1"), testCtrl)
	for name, w := range map[string]wire{
		"stale":     {seq - 1, &overlay.Proxies{Peers: []overlay.Member{testMember("p2", 2)}}},
		"join ack":  {seq, &overlay.JoinAck{Group: testGroup}},
		"unbidden0": {0, &overlay.Proxies{Peers: []overlay.Member{testMember("p2", 2)}}},
	} {
		if s.l.Handle(s.now, p1ctl, w.encode(t), s.cands, s.add) {
			t.Errorf("%s taken", name)
		}
	}
	// The awaited answer, but from another address than the proxy asked.
	right := wire{seq, &overlay.Proxies{Digest: 5, Peers: []overlay.Member{testMember("p2", 2)}}}.encode(t)
	for _, from := range []netip.AddrPort{netip.AddrPortFrom(a("100.64.0.2"), testCtrl), netip.AddrPortFrom(a("100.64.0.1"), testCtrl+1)} {
		if s.l.Handle(s.now, from, right, s.cands, s.add) || len(s.cands) != 1 {
			t.Errorf("the answer from %v taken", from)
		}
	}
	// A valid header with the awaited seq, then garbage.
	bad := append(wire{seq, &overlay.Proxies{}}.encode(t)[:overlay.HeaderLen], "garbage"...)
	if _, _, err := overlay.ParseMsg(bad); err == nil {
		t.Fatal("the garbage parses")
	}
	if s.l.Handle(s.now, p1ctl, bad, s.cands, s.add) || len(s.cands) != 1 {
		t.Error("garbage taken")
	}
	s.l.Stop()
	b := wire{seq, &overlay.Proxies{}}.encode(t)
	if s.l.Handle(s.now, p1ctl, b, s.cands, s.add) {
		t.Error("answer taken after Stop")
	}
}
