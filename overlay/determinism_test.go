package overlay

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// TestSameSeedSameRun runs one scenario of six proxies (joins through
// seeds, a target in two groups, resolves, a kill, a partition) twice with
// one seed and finds the very same packets and events; with another seed
// and some loss, it finds others, so the comparison can fail.
func TestSameSeedSameRun(t *testing.T) {
	a := sixProxies(t, 1, 0)
	b := sixProxies(t, 1, 0)
	if d := diffRuns(a, b); d != "" {
		t.Fatalf("two runs with seed 1 differ: %s", d)
	}
	c := sixProxies(t, 2, 0.01)
	if diffRuns(a, c) == "" {
		t.Fatal("a run with seed 2 and 1% loss is the same as with seed 1: the comparison cannot fail")
	}
	t.Logf("%d packets and %d events, the same twice; seed 2 with loss: %d packets", len(a.packets), len(a.events), len(c.packets))
}

type runLog struct {
	packets []overlaytest.Packet
	events  []Event
}

// diffRuns describes the first difference between two runs, or "".
func diffRuns(a, b runLog) string {
	for i := range min(len(a.packets), len(b.packets)) {
		p, q := a.packets[i], b.packets[i]
		if p.Sent != q.Sent || p.At != q.At || p.Src != q.Src || p.Dst != q.Dst || p.Fate != q.Fate || !bytes.Equal(p.Payload, q.Payload) {
			return fmt.Sprintf("packet %d: %v, then %v", i, p, q)
		}
	}
	if len(a.packets) != len(b.packets) {
		return fmt.Sprintf("%d packets, then %d", len(a.packets), len(b.packets))
	}
	for i := range min(len(a.events), len(b.events)) {
		if e, f := fmt.Sprintf("%+v", a.events[i]), fmt.Sprintf("%+v", b.events[i]); e != f {
			return fmt.Sprintf("event %d: %s, then %s", i, e, f)
		}
	}
	if len(a.events) != len(b.events) {
		return fmt.Sprintf("%d events, then %d", len(a.events), len(b.events))
	}
	return ""
}

// sixProxies runs the scenario on a network seeded with seed whose links
// lose loss of their packets, checks its outcomes, and returns its trace.
func sixProxies(t *testing.T, seed uint64, loss float64) runLog {
	near := overlaytest.Link{Delay: 2 * time.Millisecond, Jitter: time.Millisecond, Loss: loss}
	far := overlaytest.Link{Delay: 30 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: loss}
	h := newHarness(t, seed, near)
	var rec overlaytest.Recorder
	h.net.Trace(rec.Record)

	groups := []router.Group{
		{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP},
		{Addr: netip.MustParseAddr("100.65.0.2"), Port: 53, Proto: router.ProtoUDP},
	}
	edges := map[netip.Addr]*EdgePolicy{edgeAddr(0): {Name: "e0", PublicKey: edgeKey(0), Groups: groups}}
	mod := func(c *ProxyConfig) { c.MeshKey, c.Edges = testMeshKey, edges }
	var ms []Member
	var c1, c2, all []string
	for i := 1; i <= 6; i++ {
		m := testMember(i, "c1")
		if i > 3 {
			m.Cluster = "c2"
			c2 = append(c2, m.Name)
		} else {
			c1 = append(c1, m.Name)
		}
		ms = append(ms, m)
		all = append(all, m.Name)
	}
	// p1 and p4 are configured with each other; the others join through
	// a seed, p6 through one of the other cluster.
	for i, seed := range []int{3, 0, 0, 0, 3, 0} {
		h.start(ms[i], []Member{ms[i], ms[seed]}, mod)
	}
	for _, a := range c1 {
		for _, b := range c2 {
			h.net.SetLink(a, b, far)
		}
	}

	// agree: every proxy of live knows all six, sees exactly live alive
	// and the others dead.
	agree := func(live []string) func() bool {
		return func() bool {
			for _, v := range live {
				p := h.p(v)
				if len(p.Known()) != len(all) || !slices.Equal(p.Live(), live) {
					return false
				}
				for _, m := range p.Members() {
					if slices.Contains(live, m.Name) != (m.State == StateAlive) || !slices.Contains(live, m.Name) && m.State != StateDead {
						return false
					}
				}
			}
			return true
		}
	}
	h.until(30*time.Second, "the six proxies know each other and agree", agree(all))

	// Target t0 joins both groups at p2, and keeps alive.
	e := h.edge(0)
	for _, g := range groups {
		join := func() { h.anycast(0, "p2", g.Addr, joinMsg(0, g, router.Policy{}, 3*time.Second)) }
		join()
		retry := h.clk.Every(500*time.Millisecond, join)
		h.until(5*time.Second, fmt.Sprintf("t0 joins %v at p2", g), func() bool {
			return slices.ContainsFunc(e.inbox, func(w wmsg) bool {
				ack, ok := w.m.(*JoinAck)
				return ok && ack.Group == g && ack.Status == StatusOK
			})
		})
		retry.Stop()
	}
	h.clk.Every(3*time.Second, func() {
		for _, g := range groups {
			h.anycast(0, "p2", g.Addr, edgeMsg(TypeKeepalive, 0, g))
		}
	})

	// resolveAll has each client resolve both groups until each has
	// resolved them to p2, asking again every second.
	jap := h.p("p2").cfg.Self.Addr
	resolveAll := func(what string, clients []string) {
		t.Helper()
		mark := len(h.events)
		resolved := func(at string, g router.Group) bool {
			return slices.ContainsFunc(h.events[mark:], func(e Event) bool {
				return e.Proxy == at && e.Kind == EventResolved && e.Group == g &&
					slices.ContainsFunc(e.JAPs, func(j router.JAP) bool { return j.Addr == jap })
			})
		}
		ask := func() {
			for _, c := range clients {
				for _, g := range groups {
					if !resolved(c, g) {
						h.p(c).Resolve(g)
					}
				}
			}
		}
		ask()
		retry := h.clk.Every(time.Second, ask)
		d := h.until(15*time.Second, what, func() bool {
			for _, c := range clients {
				for _, g := range groups {
					if !resolved(c, g) {
						return false
					}
				}
			}
			return true
		})
		retry.Stop()
		t.Logf("seed %d: %s in %v", seed, what, d)
	}
	clients := []string{"p1", "p3", "p4", "p5", "p6"}
	resolveAll("the clients resolve both groups to p2", clients)

	// A RAP of the first group dies; everyone declares it dead, and the
	// groups are found at their new RAPs.
	victim := ""
	for _, r := range h.p("p2").RAPs(groups[0]) {
		if r != "p2" {
			victim = r
			break
		}
	}
	h.kill(victim)
	live := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == victim })
	h.until(10*time.Second, victim+" is declared dead everywhere", h.allSee(victim, StateDead))
	clients = slices.DeleteFunc(clients, func(n string) bool { return n == victim })
	resolveAll("the groups resolve after "+victim+" died", clients)

	// The clusters are cut apart long enough for deaths to be declared,
	// then healed: everyone alive comes back and agrees.
	h.net.Partition(c1, c2)
	h.run(3 * time.Second)
	for _, side := range [][]string{c1, c2} {
		for _, v := range side {
			if v == victim {
				continue
			}
			// The other side is dead (or cut off) to v, and nothing of its own.
			for _, m := range h.p(v).Members() {
				if mine := slices.Contains(side, m.Name); m.Name != victim && mine != (m.State == StateAlive && !m.Unreachable) {
					t.Fatalf("seed %d: after 3s of partition %s sees %s %v (unreachable %v)", seed, v, m.Name, m.State, m.Unreachable)
				}
			}
		}
	}
	h.net.Heal()
	h.until(60*time.Second, "the live proxies agree after the partition heals", agree(live))
	resolveAll("the groups resolve after the partition", clients)
	return runLog{packets: rec.Packets, events: h.events}
}
