package overlay

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// memberEvents lists, as "at kind name", the events about other proxies'
// health (dead, alive, unreachable, reachable) since event from.
func (h *harness) memberEvents(from int) []string {
	var out []string
	for _, e := range h.events[from:] {
		switch e.Kind {
		case EventDead, EventAlive, EventUnreachable, EventReachable:
			out = append(out, fmt.Sprintf("%s %s %s", e.Proxy, e.Kind, e.Name))
		}
	}
	return out
}

// TestKilledProxyLogsOnlyDead: a proxy that dies is dead to the others,
// and nothing else: no "unreachable" while its death is being confirmed,
// and no "reachable" once it is dead (it was logged as such when a dead
// member stopped counting as unreachable).
func TestKilledProxyLogsOnlyDead(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		t.Run(fmt.Sprint(n, " proxies"), func(t *testing.T) {
			h := newProxyNet(t, n, 0, nil)
			h.run(2 * time.Second)
			from := len(h.events)
			victim := fmt.Sprintf("p%d", n)
			h.kill(victim)
			h.until(5*time.Second, victim+" is dead everywhere", h.allSee(victim, StateDead))
			h.run(3 * time.Second) // and nothing more is said of it
			var want []string
			for i := 1; i < n; i++ {
				want = append(want, fmt.Sprintf("p%d dead %s", i, victim))
			}
			got := h.memberEvents(from)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("events after %s's death:\n  %s\nwant\n  %s", victim, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}

// TestCutLinkLogsUnreachableThenReachable: a link cut while both ends
// live for the others is "unreachable" at both ends, once, and when it
// heals, "reachable", once; nobody is declared dead.
func TestCutLinkLogsUnreachableThenReachable(t *testing.T) {
	h := newProxyNet(t, 4, 0, nil)
	h.run(2 * time.Second)
	from := len(h.events)
	h.net.Cut("p1", "p2")
	h.run(3 * time.Second)
	cut := []string{"p1 unreachable p2", "p2 unreachable p1"}
	got := h.memberEvents(from)
	slices.Sort(got)
	if !slices.Equal(got, cut) {
		t.Fatalf("events after the cut:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(cut, "\n  "))
	}
	for _, v := range []string{"p1", "p2"} {
		for _, m := range h.p(v).Members() {
			if want := m.Name == "p1" || m.Name == "p2"; m.Name != v && m.Unreachable != want {
				t.Errorf("%s sees %s unreachable=%v, want %v", v, m.Name, m.Unreachable, want)
			}
		}
	}
	h.net.Heal()
	h.run(3 * time.Second)
	want := append(cut, "p1 reachable p2", "p2 reachable p1")
	got = h.memberEvents(from)
	slices.Sort(got[2:])
	if !slices.Equal(got, want) {
		t.Fatalf("events after the cut and the heal:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestUnreachableThenDeadLogsNoReachable: a proxy cut off from p1 that
// then dies is unreachable, then dead, to p1; never reachable again.
func TestUnreachableThenDeadLogsNoReachable(t *testing.T) {
	h := newProxyNet(t, 4, 0, nil)
	h.run(2 * time.Second)
	from := len(h.events)
	h.net.Cut("p1", "p4")
	h.run(3 * time.Second)
	h.kill("p4")
	h.until(5*time.Second, "p4 is dead everywhere", h.allSee("p4", StateDead))
	h.run(3 * time.Second)
	var got []string
	for _, e := range h.memberEvents(from) {
		if strings.HasPrefix(e, "p1 ") {
			got = append(got, e)
		}
	}
	if want := []string{"p1 unreachable p4", "p1 dead p4"}; !slices.Equal(got, want) {
		t.Errorf("p1's events: %q, want %q", got, want)
	}
}

// redialTransport is a Transport that is a Redialer.
type redialTransport struct {
	Transport
	redial func([]SilentMember)
}

func (r redialTransport) Redial(s []SilentMember) { r.redial(s) }

// withRedialer gives a proxy a Redialer that does nothing.
func withRedialer(c *ProxyConfig) {
	c.Transport = redialTransport{c.Transport, func([]SilentMember) {}}
}

// TestNeverHeardIsUnreachableAndRedialed: the link between p1 and p2 is
// cut before they ever speak. Past the start grace each finds the other
// alive by the others' word and silent: unreachable (a path that never
// worked), and nobody is declared dead. Each hands the other to its
// Redialer as it becomes unreachable and every redialEvery after, silent
// since the clock's zero; after the heal, no more.
func TestNeverHeardIsUnreachableAndRedialed(t *testing.T) {
	type call struct {
		at     time.Duration // since the start
		by, of string
		silent time.Duration
	}
	var calls []call
	var h *harness
	var t0 int64
	h = newProxyNet(t, 4, 0, func(c *ProxyConfig) {
		by := c.Self.Name
		c.Transport = redialTransport{c.Transport, func(ss []SilentMember) {
			for _, s := range ss {
				calls = append(calls, call{time.Duration(h.clk.Now() - t0), by, s.Member.Name, s.Silent})
			}
		}}
	})
	t0 = h.clk.Now()
	h.net.Cut("p1", "p2")
	h.run(5 * time.Second)
	cut := []string{"p1 unreachable p2", "p2 unreachable p1"}
	got := h.memberEvents(0)
	slices.Sort(got)
	if !slices.Equal(got, cut) {
		t.Fatalf("events with the link cut from the start:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(cut, "\n  "))
	}
	per := map[string][]call{}
	for _, c := range calls {
		if pair := c.by + "→" + c.of; pair != "p1→p2" && pair != "p2→p1" {
			t.Fatalf("%s handed %s to its Redialer at %v; only p1 and p2 are cut off from each other", c.by, c.of, c.at)
		}
		if c.silent < time.Hour {
			t.Errorf("%s handed %s as silent for %v; it never heard it, so since the clock's zero (an hour before the start)", c.by, c.of, c.silent)
		}
		per[c.by] = append(per[c.by], c)
	}
	for _, by := range []string{"p1", "p2"} {
		cs := per[by]
		// Unreachable past the start grace (2 s), then every 2 s: twice in 5 s.
		if len(cs) != 2 || cs[0].at < startGrace || cs[1].at-cs[0].at < redialEvery {
			t.Errorf("%s's redials: %+v; want 2, the first past %v and the next %v later", by, cs, startGrace, redialEvery)
		}
	}
	h.net.Heal()
	h.run(time.Second)
	n := len(calls)
	h.run(5 * time.Second)
	if len(calls) != n {
		t.Errorf("redials after the heal: %+v", calls[n:])
	}
	want := append(cut, "p1 reachable p2", "p2 reachable p1")
	got = h.memberEvents(0)
	slices.Sort(got[2:])
	if !slices.Equal(got, want) {
		t.Fatalf("events after the heal:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestDeafProxyRedialsBeforeDeathsAreDeclared: nothing reaches p1 from the
// start, as when every session it has cannot carry its peers' packets (a
// helper's answer cannot come back either). Each member, never heard,
// is handed to p1's Redialer as it becomes a suspect, before p1 declares
// any death.
func TestDeafProxyRedialsBeforeDeathsAreDeclared(t *testing.T) {
	var h *harness
	var t0 int64
	redialed := map[string]time.Duration{}
	var firstDeath time.Duration
	h = newProxyNet(t, 4, 0, func(c *ProxyConfig) {
		if c.Self.Name != "p1" {
			return
		}
		c.Transport = redialTransport{c.Transport, func(ss []SilentMember) {
			for _, s := range ss {
				if _, ok := redialed[s.Member.Name]; !ok {
					redialed[s.Member.Name] = time.Duration(h.clk.Now() - t0)
				}
			}
		}}
		prev := c.OnEvent
		c.OnEvent = func(e Event) {
			if e.Kind == EventDead && firstDeath == 0 {
				firstDeath = time.Duration(h.clk.Now() - t0)
			}
			prev(e)
		}
	})
	t0 = h.clk.Now()
	h.net.DropIf(func(p overlaytest.Packet) bool { return p.To == "p1" })
	h.run(5 * time.Second)
	if firstDeath == 0 {
		t.Fatal("p1 declared no death: the test proves nothing about the order")
	}
	for _, name := range []string{"p2", "p3", "p4"} {
		at, ok := redialed[name]
		switch {
		case !ok:
			t.Errorf("p1 never handed %s to its Redialer", name)
		case at < startGrace || at >= firstDeath:
			t.Errorf("p1 handed %s to its Redialer at %v; want past the start grace (%v) and before its first death (%v)", name, at, startGrace, firstDeath)
		}
	}
}

// TestReachableAgainIsToldWhatItMissed: a JAP takes a target while cut off
// from one of the group's RAPs, so that RAP misses the registration. Once
// the link heals and each hears the other, the JAP registers again with
// it at once: the RAP has the JAP well before the refresh (RegisterTTL/3)
// would have told it. With a Redialer, which also marks the RAP as one
// that may have missed words, it does so once, not again at its answers.
func TestReachableAgainIsToldWhatItMissed(t *testing.T) {
	h := newProxyNet(t, 4, 1, withRedialer)
	h.run(2 * time.Second)
	jap, raps, has := japAndRAPs(h)
	rap, other := raps[0], raps[1]
	h.net.Cut(jap, rap)
	h.until(5*time.Second, rap+" unreachable from "+jap, func() bool { return h.p(jap).health.unreachableAddrs()[h.p(rap).cfg.Self.Addr] })
	if st := policyJoin(t, h, h.p(jap), 0, testGroup, router.Policy{}, 0); st != StatusOK {
		t.Fatalf("join at %s: %v", jap, st)
	}
	joined := h.clk.Now()
	h.until(time.Second, other+" has "+jap+" for the group", func() bool { return has(other) })
	if has(rap) {
		t.Fatalf("%s has %s for the group through a cut link: the test proves nothing", rap, jap)
	}
	from := len(h.events)
	h.net.Heal()
	h.until(3*time.Second, rap+" has "+jap+" for the group", func() bool { return has(rap) })
	// Once: reachable again, and then its answers, are one catch-up.
	h.run(time.Duration(joined + int64(h.p(jap).cfg.RegisterTTL/3-time.Second) - h.clk.Now()))
	if n := registers(h.events[from:], jap, testGroup); n != 1 {
		t.Errorf("%s registered the group %d times after the heal, before the refresh; want once", jap, n)
	}
}

// japAndRAPs picks the proxy of a 4-proxy net that is no RAP of testGroup
// (its JAP in these tests), the group's RAPs, and a check that a RAP holds
// that JAP for the group.
func japAndRAPs(h *harness) (jap string, raps []string, has func(rap string) bool) {
	raps = h.p("p1").RAPs(testGroup)
	for _, name := range []string{"p1", "p2", "p3", "p4"} {
		if !slices.Contains(raps, name) {
			jap = name
		}
	}
	addr := h.p(jap).cfg.Self.Addr
	return jap, raps, func(rap string) bool {
		return slices.ContainsFunc(h.p(rap).RAPTable()[testGroup], func(j router.JAP) bool { return j.Addr == addr })
	}
}

// registers counts the registrations of g by jap in events.
func registers(events []Event, jap string, g router.Group) int {
	n := 0
	for _, e := range events {
		if e.Kind == EventRegister && e.Proxy == jap && e.Group == g {
			n++
		}
	}
	return n
}

// TestRedialedIsToldWhatItMissed: with a Redialer, a JAP takes a target
// while one of the group's RAPs is silent to it (never heard), so the RAP
// misses the registration. The JAP hands the RAP to its Redialer as it
// becomes a suspect (a redial may drop more: node's does). At the RAP's
// next word, before it was ever unreachable, the JAP registers again with
// it: the RAP has it well before the refresh.
func TestRedialedIsToldWhatItMissed(t *testing.T) {
	var redialed []string
	h := newProxyNet(t, 4, 1, func(c *ProxyConfig) {
		by := c.Self.Name
		c.Transport = redialTransport{c.Transport, func(ss []SilentMember) {
			for _, s := range ss {
				redialed = append(redialed, by+"→"+s.Member.Name)
			}
		}}
	})
	jap, raps, holds := japAndRAPs(h)
	rap := raps[0]
	has := func() bool { return holds(rap) }
	h.net.Cut(jap, rap)
	if st := policyJoin(t, h, h.p(jap), 0, testGroup, router.Policy{}, 0); st != StatusOK {
		t.Fatalf("join at %s: %v", jap, st)
	}
	joined := h.clk.Now()
	h.until(5*time.Second, jap+" suspects "+rap+", not yet unreachable", func() bool {
		return h.state(jap, rap) == StateSuspect && !h.p(jap).health.unreachableAddrs()[h.p(rap).cfg.Self.Addr]
	})
	if has() || !slices.Contains(redialed, jap+"→"+rap) {
		t.Fatalf("%s has %s for the group: %v; redialed: %v; the test wants neither", rap, jap, has(), redialed)
	}
	from := len(h.events)
	h.net.Heal()
	// The RAP speaks at once, before the JAP's next tick finds it
	// unreachable.
	h.sendAs(rap, jap, wmsg{0, &Probe{From: rap, Incarnation: h.p(rap).Members()[0].Incarnation}})
	took := h.until(3*time.Second, rap+" has "+jap+" for the group", has)
	if since := time.Duration(h.clk.Now() - joined); since >= h.p(jap).cfg.RegisterTTL/3 {
		t.Fatalf("%s had %s %v after the join, %v after the heal: no sooner than the refresh", rap, jap, since, took)
	}
	for _, e := range h.memberEvents(from) {
		if strings.HasPrefix(e, jap+" ") {
			t.Errorf("%s: %q; the RAP was never unreachable, dead or back", jap, e)
		}
	}
}

// TestOneWayIsToldWhatItMissed: with a Redialer, nothing a JAP sends one
// of a group's RAPs arrives, while the RAP's own words reach the JAP (a
// session only one side can read, node's redial.go). The JAP keeps
// hearing the RAP, so the RAP is never silent to it, but its probes go
// unanswered: what it sends may be lost. It takes a target meanwhile; once
// the RAP answers a probe again, the JAP registers again with it, well
// before the refresh.
func TestOneWayIsToldWhatItMissed(t *testing.T) {
	h := newProxyNet(t, 4, 1, withRedialer)
	h.run(2 * time.Second)
	jap, raps, holds := japAndRAPs(h)
	rap := raps[0]
	has := func() bool { return holds(rap) }
	h.net.DropIf(func(p overlaytest.Packet) bool { return p.From == jap && p.To == rap })
	h.run(2 * time.Second)
	from := len(h.events)
	if st := policyJoin(t, h, h.p(jap), 0, testGroup, router.Policy{}, 0); st != StatusOK {
		t.Fatalf("join at %s: %v", jap, st)
	}
	h.run(100 * time.Millisecond)
	if has() {
		t.Fatalf("%s has %s for the group through a one-way link: the test proves nothing", rap, jap)
	}
	h.net.DropIf(nil)
	h.until(3*time.Second, rap+" has "+jap+" for the group", has)
	for _, e := range h.memberEvents(from) {
		if strings.HasPrefix(e, jap+" ") {
			t.Errorf("%s: %q; the RAP was never unreachable, dead or back to it", jap, e)
		}
	}
}
