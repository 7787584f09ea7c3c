package overlay

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
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
