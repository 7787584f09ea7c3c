package lab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// failoverShape: group 0 has targets behind p1 and p3, group 1 behind p2
// and p4; p5 has no target, and clients sit on p2..p5.
var failoverShape = Options{Proxies: 5, Clusters: 2, Targets: 4, Groups: 2, Clients: 4}

func waitCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// japsOf names the proxies targets of g are attached to.
func japsOf(h *Harness, g router.Group) []string {
	var out []string
	for _, tn := range h.TargetsOf(g) {
		if p := h.Home(tn).Name; !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// waitState waits until every running proxy sees name in state st.
func waitState(t *testing.T, h *Harness, name string, st overlay.MemberState, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	err := WaitFor(waitCtx(t, d), func() error {
		for _, p := range h.Proxies {
			for _, m := range p.Overlay.Members() {
				if m.Name == name && m.State != st {
					return fmt.Errorf("%s sees %s %v", p.Name, name, m.State)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// waitConsistent waits until the lab's control plane is consistent.
func waitConsistent(t *testing.T, h *Harness, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := WaitFor(waitCtx(t, d), h.Consistent); err != nil {
		t.Fatalf("not consistent: %v", err)
	}
	return time.Since(start)
}

// askUntil asks g from client (new connections) until ok accepts the
// answering target, and returns how long it took.
func askUntil(t *testing.T, h *Harness, client string, g router.Group, d time.Duration, ok func(target string) bool) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	ctx := waitCtx(t, d)
	var last string
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		ans, err := ask(actx, h, client, g, "hi")
		cancel()
		if err == nil {
			name, _, _ := strings.Cut(ans, ": ")
			if ok(name) {
				return name, time.Since(start)
			}
			last = "answered by " + name
		} else {
			last = err.Error()
		}
	}
	t.Fatalf("%s → %s: no acceptable answer within %v (last: %s)", client, g, d, last)
	return "", 0
}

// pickRAPCase finds a group, a client whose home proxy is not a JAP of the
// group (so it must resolve), and the group's RAPs, such that killing the
// RAPs leaves the client's home and some JAP of the group alive.
func pickRAPCase(t *testing.T, h *Harness, all bool) (router.Group, string, []string) {
	live := slices.Sorted(func(yield func(string) bool) {
		for n := range h.Proxies {
			if !yield(n) {
				return
			}
		}
	})
	for _, g := range h.groups() {
		raps := overlay.RAPs(g, live, 2)
		victims := raps
		if !all {
			victims = raps[:1]
		}
		japs := japsOf(h, g)
		if !slices.ContainsFunc(japs, func(j string) bool { return !slices.Contains(victims, j) }) {
			continue
		}
		for _, c := range h.Names(config.RoleClient) {
			home := h.Home(c).Name
			if !slices.Contains(japs, home) && !slices.Contains(victims, home) {
				return g, c, victims
			}
		}
	}
	t.Skip("no group/client combination fits this lab")
	return router.Group{}, "", nil
}

// A CA lab: the target moves to a proxy that admits it by its certificate.
func TestFailoverJAPDies(t *testing.T) {
	shape := failoverShape
	shape.CA = true
	h := startLab(t, shape)
	g := GroupN(0)
	// A client on a proxy with no target of g: every flow goes to a remote
	// JAP. (In a CA lab an edge whose home is slow to admit it, on a busy
	// host, attaches to another that did: look.)
	japs, client := japsOf(h, g), ""
	for _, c := range h.Names(config.RoleClient) {
		if !slices.Contains(japs, h.Home(c).Name) {
			client = c
			break
		}
	}
	if client == "" {
		t.Skipf("every client is attached to a JAP of %s (%v)", g, japs)
	}
	// Find a flow of the client that its IAP sent to a remote JAP (edges
	// may have moved, so look at the flow tables rather than the config).
	var first, victim, iap string
	for try := 0; victim == "" && try < 20; try++ {
		first, _ = askUntil(t, h, client, g, 5*time.Second, func(string) bool { return true })
		victim, iap = remoteJAP(h, client, g)
	}
	if victim == "" {
		t.Skipf("%s's flows to %s are all served by its IAP itself", client, g)
	}
	t.Logf("%s → %s answered by %s via IAP %s and JAP %s; killing %s", client, g, first, iap, victim, victim)

	killed := time.Now()
	if err := h.KillProxy(victim); err != nil {
		t.Fatal(err)
	}
	waitState(t, h, victim, overlay.StateDead, 5*time.Second)
	t.Logf("all proxies marked %s dead %v after the kill", victim, time.Since(killed))
	who, _ := askUntil(t, h, client, g, 10*time.Second, func(string) bool { return true })
	took := time.Since(killed)
	t.Logf("first good answer (from %s) %v after the kill", who, took)
	// The goal is ≤ 2 s (logged); the bound only tells failover from
	// the fallbacks (the IAP's 10 s cache, the JAP's 15 s target timeout).
	if took > 5*time.Second {
		t.Errorf("failover took %v: not failover but a fallback timer", took)
	}
	t.Logf("consistent %v after that", waitConsistent(t, h, 20*time.Second))
}

func testRAPsDie(t *testing.T, all bool) {
	h := startLab(t, failoverShape)
	g, client, victims := pickRAPCase(t, h, all)
	t.Logf("group %s RAPs %v; client %s on %s; killing %v", g, h.Home(client).Overlay.RAPs(g), client, h.Home(client).Name, victims)
	if _, err := ask(testCtx(t), h, client, g, "warm"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for _, v := range victims {
		if err := h.KillProxy(v); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range victims {
		waitState(t, h, v, overlay.StateDead, 5*time.Second)
	}
	t.Logf("all proxies marked %v dead %v after the kill", victims, time.Since(killed))
	waitConsistent(t, h, 20*time.Second)
	newRAPs := h.Home(client).Overlay.RAPs(g)
	t.Logf("consistent (JAPs re-registered at new RAPs %v) %v after the kill", newRAPs, time.Since(killed))
	for _, v := range victims {
		if slices.Contains(newRAPs, v) {
			t.Fatalf("dead %s still a RAP of %s: %v", v, g, newRAPs)
		}
	}
	// A cold IAP: forget what the client's home knows of g.
	h.Home(client).Router.Invalidate(g)
	resolved := time.Now()
	who, _ := askUntil(t, h, client, g, 5*time.Second, func(string) bool { return true })
	t.Logf("cold IAP %s resolved %s via new RAPs and got an answer from %s in %v (%v after the kill)",
		h.Home(client).Name, g, who, time.Since(resolved), time.Since(killed))
}

func TestFailoverOneRAPDies(t *testing.T) { testRAPsDie(t, false) }
func TestFailoverAllRAPsDie(t *testing.T) { testRAPsDie(t, true) }

func TestFailoverProxyRestarts(t *testing.T) {
	h := startLab(t, failoverShape)
	g, client, victims := pickRAPCase(t, h, false)
	victim := victims[0]
	t.Logf("group %s RAPs %v, JAPs %v; restarting %s", g, h.Home(client).Overlay.RAPs(g), japsOf(h, g), victim)
	killThenRestart(t, h, victim)
	if !slices.Contains(h.Home(client).Overlay.RAPs(g), victim) {
		t.Fatalf("%s is not a RAP of %s again", victim, g)
	}
	if !slices.ContainsFunc(h.Proxies[victim].Overlay.RAPTable()[g], func(j router.JAP) bool { return true }) {
		t.Fatalf("restarted RAP %s knows no JAP of %s", victim, g)
	}
	h.Home(client).Router.Invalidate(g)
	who, d := askUntil(t, h, client, g, 5*time.Second, func(string) bool { return true })
	t.Logf("cold IAP resolved again, answered by %s in %v", who, d)
}

func TestControlMessagesAtRest(t *testing.T) {
	h := startLab(t, Options{Proxies: 3, Clusters: 2, Targets: 2, Groups: 1})
	time.Sleep(500 * time.Millisecond) // let start-up traffic settle
	before := map[string]uint64{}
	for n, p := range h.Proxies {
		before[n] = p.Overlay.Stats().ControlSent
	}
	const window = 2 * time.Second
	time.Sleep(window)
	var total float64
	for n, p := range h.Proxies {
		rate := float64(p.Overlay.Stats().ControlSent-before[n]) / window.Seconds()
		total += rate
		t.Logf("%s sends %.1f control messages/s at rest", n, rate)
	}
	per := total / float64(len(h.Proxies))
	t.Logf("3 proxies: %.1f control messages per second per proxy at rest", per)
	if per > 50 {
		t.Errorf("%.1f messages/s per proxy at rest is too many", per)
	}
}

func TestFailoverJAPRestarts(t *testing.T) {
	h := startLab(t, failoverShape)
	g := GroupN(0)
	client := "cl4"
	victim := "p1" // t1 of group 0 is attached there
	killThenRestart(t, h, victim)
	// Its own targets may have moved to another proxy while it was dead
	// (emulated anycast at the edges); any target joined there now must be
	// reachable through it as JAP.
	if len(h.Proxies[victim].Router.Targets(g)) == 0 {
		t.Logf("no target of %s is attached to %s after its restart (its edges stayed where they moved)", g, victim)
		return
	}
	who, d := askUntil(t, h, client, g, 10*time.Second, func(tn string) bool {
		return slices.ContainsFunc(h.Proxies[victim].Router.Targets(g), func(a netip.AddrPort) bool {
			return slices.Contains(h.Edges[tn].Config.Address, a.Addr())
		})
	})
	t.Logf("%s used as JAP again: %s answered by %s (%v of asking)", victim, client, who, d)
}

// remoteJAP finds the client's latest IAP flow for g and returns its JAP
// and IAP, or "" when the IAP served it itself.
func remoteJAP(h *Harness, client string, g router.Group) (jap, iap string) {
	addrs := h.Edges[client].Config.Address
	var last int64
	for _, p := range h.Proxies {
		for _, f := range p.Router.Flows() {
			if f.Kind != "iap" || f.Group != g || !slices.Contains(addrs, f.Client.Addr()) || f.LastSeen < last {
				continue
			}
			last, jap, iap = f.LastSeen, "", p.Name
			if j := h.ProxyByAddr(f.JAP); j != nil && j != p {
				jap = j.Name
			}
		}
	}
	if jap == "" {
		iap = ""
	}
	return jap, iap
}

// killThenRestart kills a proxy without warning, waits until every proxy
// sees it dead and the lab is consistent, restarts it with empty state and
// waits until it is alive everywhere and the lab consistent again: a RAP
// again for its groups, holding their JAPs, its targets joined where they
// are (which waits on the edges' WireGuard sessions to the new process).
func killThenRestart(t *testing.T, h *Harness, victim string) {
	t.Helper()
	killed := time.Now()
	if err := h.KillProxy(victim); err != nil {
		t.Fatal(err)
	}
	waitState(t, h, victim, overlay.StateDead, 5*time.Second)
	t.Logf("%s marked dead everywhere %v after the kill", victim, time.Since(killed))
	waitConsistent(t, h, 20*time.Second)
	restarted := time.Now()
	if err := h.RestartProxy(victim); err != nil {
		t.Fatal(err)
	}
	waitState(t, h, victim, overlay.StateAlive, 10*time.Second)
	t.Logf("%s alive again everywhere %v after its restart", victim, time.Since(restarted))
	// Before the JAPs' slow refresh (every 10 s): the restarted proxy must
	// learn every registration from their re-registration when it came back.
	waitConsistent(t, h, 5*time.Second)
	t.Logf("consistent again %v after its restart", time.Since(restarted))
}
