package overlay

// Robustness tests: dynamic membership and group policies, over an in-memory
// mesh (tunnel and underlay) with a fake clock.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

type meshUDP struct {
	from, to netip.AddrPort
	pkt      []byte
}

// memberMesh is a set of proxies with a mesh key. Tunnel packets go to the
// proxy of their destination address; underlay datagrams to the proxy of
// their destination endpoint. drop, if set, loses tunnel messages.
type memberMesh struct {
	t      *testing.T
	mu     sync.Mutex
	now    int64
	byAddr map[netip.Addr]*Proxy
	byEP   map[netip.AddrPort]*Proxy
	down   map[netip.Addr]bool
	tq     [][]byte
	uq     []meshUDP
	drop   func(src, dst netip.Addr, m *Message) bool
	events []Event
}

func newMemberMesh(t *testing.T) *memberMesh {
	return &memberMesh{t: t, now: int64(time.Hour), byAddr: map[netip.Addr]*Proxy{}, byEP: map[netip.AddrPort]*Proxy{}, down: map[netip.Addr]bool{}}
}

func meshMember(name string, i int) Member {
	return Member{Name: name, Addr: netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}), Cluster: "c1",
		PublicKey: [32]byte{0: byte(i), 31: 1}, Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 51820)}
}

func (n *memberMesh) clock() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.now
}

// add starts a proxy self that knows members (its seeds, or a static mesh).
func (n *memberMesh) add(self Member, members ...Member) *Proxy {
	r, err := router.New(router.Config{Self: []netip.Addr{self.Addr}, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}, ControlPort: testCtrl})
	if err != nil {
		n.t.Fatal(err)
	}
	p, err := NewProxy(ProxyConfig{
		Self: self, Members: append([]Member{self}, members...), MeshKey: testMeshKey,
		AddPeer: func(Member, bool) error { return nil },
		SendUnderlay: func(to netip.AddrPort, pkt []byte) error {
			n.mu.Lock()
			n.uq = append(n.uq, meshUDP{self.Endpoint, to, append([]byte(nil), pkt...)})
			n.mu.Unlock()
			return nil
		},
		ControlPort: testCtrl, Router: r, Now: n.clock,
		Send: func(pkt []byte) error {
			n.mu.Lock()
			n.tq = append(n.tq, append([]byte(nil), pkt...))
			n.mu.Unlock()
			return nil
		},
		OnEvent: func(e Event) {
			n.mu.Lock()
			n.events = append(n.events, e)
			n.mu.Unlock()
		},
	})
	if err != nil {
		n.t.Fatal(err)
	}
	n.byAddr[self.Addr] = p
	n.byEP[self.Endpoint] = p
	return p
}

func (n *memberMesh) deliver() {
	for {
		n.mu.Lock()
		if len(n.uq) > 0 {
			u := n.uq[0]
			n.uq = n.uq[1:]
			n.mu.Unlock()
			if p := n.byEP[u.to]; p != nil && !n.down[p.cfg.Self.Addr] && !n.down[netip.AddrFrom4([4]byte{100, 64, 0, u.from.Addr().As4()[3]})] {
				p.HandleUnderlay(u.from, u.pkt)
			}
			continue
		}
		if len(n.tq) == 0 {
			n.mu.Unlock()
			return
		}
		pkt := n.tq[0]
		n.tq = n.tq[1:]
		n.mu.Unlock()
		ihl := int(pkt[0]&0xf) * 4
		src := netip.AddrFrom4([4]byte(pkt[12:16]))
		dst := netip.AddrFrom4([4]byte(pkt[16:20]))
		sp, dp := binary.BigEndian.Uint16(pkt[ihl:]), binary.BigEndian.Uint16(pkt[ihl+2:])
		var m Message
		if err := m.UnmarshalBinary(pkt[ihl+8:]); err != nil {
			n.t.Fatalf("undecodable control message: %v", err)
		}
		if n.down[src] || n.down[dst] || (n.drop != nil && n.drop(src, dst, &m)) {
			continue
		}
		if p := n.byAddr[dst]; p != nil {
			p.HandleControl(netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp), pkt[ihl+8:])
		}
	}
}

// run advances the clock by d in probe intervals, ticking every live proxy.
func (n *memberMesh) run(d time.Duration) {
	for t := time.Duration(0); t < d; t += 100 * time.Millisecond {
		n.mu.Lock()
		n.now += int64(100 * time.Millisecond)
		n.mu.Unlock()
		for a, p := range n.byAddr {
			if !n.down[a] {
				p.Tick()
				p.HealthTick()
			}
		}
		n.deliver()
	}
}

func knownNames(p *Proxy) []string {
	var out []string
	for _, m := range p.Known() {
		out = append(out, m.Name)
	}
	return out
}

// TestNewcomerLearnsAProxyItsSyncLost: one TypeMember of the seed's sync
// to a newcomer is lost; the anti-entropy digests bring it in all the same,
// and every proxy ends up knowing and seeing every other alive.
func TestNewcomerLearnsAProxyItsSyncLost(t *testing.T) {
	n := newMemberMesh(t)
	p1, p2, p3 := meshMember("p1", 1), meshMember("p2", 2), meshMember("p3", 3)
	n.add(p1, p2)
	b := n.add(p2, p1)
	n.run(time.Second) // the static mesh is up
	lost := 0
	n.drop = func(src, dst netip.Addr, m *Message) bool {
		// One datagram lost: the sync's record of p2, seed p1 → newcomer.
		if src == p1.Addr && dst == p3.Addr && m.Type == TypeMember && m.Name == "p2" && lost == 0 {
			lost++
			return true
		}
		return false
	}
	c := n.add(p3, p1) // seeded by p1 only
	n.run(60 * time.Second)
	if lost != 1 {
		t.Fatalf("the sync record was not sent (%d)", lost)
	}
	t.Logf("p3 knows %v and sees live %v; p2 knows %v and sees live %v", knownNames(c), c.Live(), knownNames(b), b.Live())
	if !slices.Contains(knownNames(c), "p2") {
		t.Errorf("60 s after one lost sync datagram the newcomer p3 still does not know p2 (knows %v), "+
			"while p2 has it live: %v", knownNames(c), b.Live())
	}
}

// TestNewcomerWhoseSeedDiesMidJoin: the seed welcomes the newcomer and
// dies before its flood and sync leave, then comes back having forgotten
// it. The newcomer, alone, says hello again and learns everyone.
func TestNewcomerWhoseSeedDiesMidJoin(t *testing.T) {
	n := newMemberMesh(t)
	p1, p2, p3 := meshMember("p1", 1), meshMember("p2", 2), meshMember("p3", 3)
	n.add(p1, p2)
	n.add(p2, p1)
	n.run(time.Second)
	c := n.add(p3, p1)
	// Hello and welcome only; then p1 dies with its tunnel packets unsent.
	c.Tick()
	n.mu.Lock()
	uq := n.uq
	n.uq = nil
	n.mu.Unlock()
	for _, u := range uq {
		n.byEP[u.to].HandleUnderlay(u.from, u.pkt)
	}
	n.mu.Lock()
	uq = n.uq
	n.uq = nil
	n.tq = nil // p1 died: its flood and sync are lost
	n.mu.Unlock()
	for _, u := range uq {
		n.byEP[u.to].HandleUnderlay(u.from, u.pkt)
	}
	n.down[p1.Addr] = true
	n.run(5 * time.Second)
	// p1 restarts with its configuration (p2), having forgotten p3.
	delete(n.down, p1.Addr)
	n.add(p1, p2)
	n.run(60 * time.Second)
	if !slices.Contains(knownNames(c), "p2") {
		t.Errorf("newcomer p3, welcomed by a seed that died before its sync, never learns p2: it knows %v, live %v",
			knownNames(c), c.Live())
	}
}

// reviewJoin delivers a join of edge i for g with pol at jap and reports
// whether the JAP holds the target afterwards (StatusOK) or not
// (StatusRefused).
func policyJoin(t *testing.T, jap *Proxy, i int, g router.Group, pol router.Policy, ka time.Duration) Status {
	t.Helper()
	m := Message{Type: TypeJoin, Seq: 1, Group: g, Port: 8080, Name: fmt.Sprintf("t%d", i), Weight: 1, Policy: pol, Keepalive: ka, Incarnation: 1}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	jap.HandleControl(netip.AddrPortFrom(edgeAddr(i), 40000), netip.AddrPortFrom(g.Addr, testCtrl), b)
	jap.mu.Lock()
	defer jap.mu.Unlock()
	if jap.local[g][edgeAddr(i)] != nil {
		return StatusOK
	}
	return StatusRefused
}

func reviewTargets(p *Proxy, g router.Group) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.local[g])
}

// TestPolicyConflictHasOneArbiter: two JAPs, each a RAP of the group, take
// targets with different policies at about the same time. Each RAP heard
// its own JAP first, but only the group's first RAP arbitrates, so one side
// keeps its targets.
func TestPolicyConflictHasOneArbiter(t *testing.T) {
	pn := newProxyNet(t, 2, 2, nil)
	p1, p2 := pn.p("p1"), pn.p("p2")
	if r := p1.RAPs(testGroup); len(r) != 2 {
		t.Fatalf("RAPs %v", r)
	}
	load := router.Policy{Select: router.SelectLoad}
	if st := policyJoin(t, p1, 0, testGroup, router.Policy{}, 0); st != StatusOK {
		t.Fatalf("join at p1: %v", st)
	}
	if st := policyJoin(t, p2, 1, testGroup, load, 0); st != StatusOK {
		t.Fatalf("join at p2: %v", st)
	}
	pn.deliver()
	time.Sleep(100 * time.Millisecond) // the RAPs' own handlePolicy runs on a goroutine
	pn.deliver()
	n1, n2 := reviewTargets(p1, testGroup), reviewTargets(p2, testGroup)
	t.Logf("targets left: p1 %d, p2 %d", n1, n2)
	if n1 == 0 && n2 == 0 {
		t.Errorf("a policy conflict between two JAPs dropped the targets of both (one policy should win)")
	}
	// And both refuse their own targets' rejoin for RegisterTTL.
	s1 := policyJoin(t, p1, 0, testGroup, router.Policy{}, 0)
	s2 := policyJoin(t, p2, 1, testGroup, load, 0)
	if s1 == StatusRefused && s2 == StatusRefused {
		t.Errorf("both JAPs refuse their own targets' rejoin (p1: %v, p2: %v): the group has no target anywhere for %v", s1, s2, p1.cfg.RegisterTTL)
	}
}

// TestReplicateOneIsNoReplication: "replicate = 1" and no replicate are the
// same policy, so neither join is refused.
func TestReplicateOneIsNoReplication(t *testing.T) {
	pn := newProxyNet(t, 1, 2, nil)
	p := pn.p("p1")
	g := router.Group{Addr: testGroup.Addr, Port: 53, Proto: router.ProtoUDP}
	p.cfg.Edges[edgeAddr(0)].Groups = append(p.cfg.Edges[edgeAddr(0)].Groups, g)
	if st := policyJoin(t, p, 0, g, router.Policy{}, 0); st != StatusOK {
		t.Fatalf("first join: %v", st)
	}
	if st := policyJoin(t, p, 1, g, router.Policy{Replicate: 1}, 0); st != StatusOK {
		t.Errorf("a target with replicate=1 (no replication) is refused (%v) beside one without replicate", st)
	}
}

// TestTargetKeepaliveAgainstTimeout: a target whose keepalive interval is
// above a third of the JAP's target_timeout would be dropped between
// keepalives: its join is refused (the reason says why); one at a third is
// kept through five intervals.
func TestTargetKeepaliveAgainstTimeout(t *testing.T) {
	pn := newProxyNet(t, 1, 1, nil) // TargetTimeout: the default 15 s
	p := pn.p("p1")
	if st := policyJoin(t, p, 0, testGroup, router.Policy{}, 20*time.Second); st != StatusRefused {
		t.Fatalf("join with keepalive 20s: %v, want refused", st)
	}
	ka := 5 * time.Second
	if st := policyJoin(t, p, 0, testGroup, router.Policy{}, ka); st != StatusOK {
		t.Fatalf("join: %v", st)
	}
	drops := 0
	for range 5 {
		for range int(ka / (500 * time.Millisecond)) {
			pn.advance(500 * time.Millisecond)
			p.Tick()
		}
		// The keepalive, on time.
		if !p.keepalive(edgeAddr(0), testGroup) {
			drops++
			policyJoin(t, p, 0, testGroup, router.Policy{}, ka) // "unknown": join again
		}
	}
	if drops > 0 {
		t.Errorf("a target keeping alive every %v, on time, was dropped %d times in 5 intervals (timeout %v)", ka, drops, p.targetTimeout(ka))
	}
}

// TestJoinDuringUndetectedPartition: a proxy cut off shortly before a
// newcomer joins, but not yet declared dead, misses the flood; the
// anti-entropy digests tell it of the newcomer once the cut heals.
func TestJoinDuringUndetectedPartition(t *testing.T) {
	n := newMemberMesh(t)
	p1, p2, p3, nm := meshMember("p1", 1), meshMember("p2", 2), meshMember("p3", 3), meshMember("n", 9)
	n.add(p1, p2, p3)
	b := n.add(p2, p1, p3)
	n.add(p3, p1, p2)
	n.run(3 * time.Second)
	cut := true
	n.drop = func(src, dst netip.Addr, m *Message) bool {
		return cut && (src == p2.Addr || dst == p2.Addr)
	}
	c := n.add(nm, p1)
	n.run(10 * time.Second) // n joins at once; p2 is declared dead later
	if st, _, _ := n.byAddr[p1.Addr].health.state("p2"); st != StateDead {
		t.Fatalf("p2 not dead at p1: %v", st)
	}
	cut = false
	n.run(60 * time.Second)
	t.Logf("p2 knows %v, live %v; n knows %v, live %v", knownNames(b), b.Live(), knownNames(c), c.Live())
	if !slices.Contains(knownNames(b), "n") {
		t.Errorf("p2, cut off while n joined and back since, never learns n: it knows %v", knownNames(b))
	}
}
