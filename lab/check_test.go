package lab

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/overlay"
)

// Quick checks for the lab: 200ms apart, so fall (3) fails take 600ms.
const (
	labCheckInterval = 200 * time.Millisecond
	labCheck         = `check = { kind = "tcp", interval = "200ms", timeout = "150ms" }`
)

// quickChecks gives every target's groups of lab l the quick check.
func quickChecks(t *testing.T, l *Lab) {
	for _, n := range l.Nodes {
		if n.Role != config.RoleTarget {
			continue
		}
		cfg, err := config.LoadTarget(l.Path(n.Config))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range cfg.Groups {
			port := fmt.Sprintf("port = %d\n", s.Port)
			rewrite(t, l.Path(n.Config), port, port+labCheck+"\n")
		}
	}
}

// TestServiceDiesGroupMoves: two targets of a TCP group at different
// proxies, over real tunnels. The service behind the one that answers stops
// (the service, not pias): within fall × interval plus one update, no new
// connection reaches that target, and every answer comes from the other,
// byte for byte. When the service is back, the check passes rise times and
// the target serves again.
func TestServiceDiesGroupMoves(t *testing.T) {
	t.Parallel()
	h, events := startLabWith(t, Options{Proxies: 2, Clusters: 1, Targets: 2, Clients: 2, Groups: 1},
		HarnessOptions{Generated: func(l *Lab) { quickChecks(t, l) }})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := GroupN(0)
	targets := targetsOf(h, g)
	if len(targets) != 2 || h.Home(targets[0]) == h.Home(targets[1]) {
		t.Fatalf("group %s has targets %v, want 2 at different proxies", g, targets)
	}
	const client = "cl1"
	ans, err := h.AskTCP(ctx, client, g, "before")
	if err != nil {
		t.Fatal(err)
	}
	who := answeredBy(t, ans, "before", targets)
	other := targets[0]
	if other == who {
		other = targets[1]
	}

	// A check may have failed already at the start, when the lab's nodes
	// came up before their services (ServeTargets starts those on the
	// targets' own stacks): the check-failed of the death is the first
	// after the stop.
	isFailed := func(e overlay.Event) bool { return e.Kind == overlay.EventCheckFailed && e.Name == who && e.Group == g }
	failedBefore := len(events.match(isFailed))
	died := time.Now()
	if err := h.StopService(who, g); err != nil {
		t.Fatal(err)
	}
	// Ask until a run of answers all come from other; the last new flow
	// that reached who is the last ask it answered or that failed (its
	// listener is gone: the connection is refused).
	var last time.Duration
	const run = 20
	for i, inRow := 0, 0; inRow < run; i++ {
		if ctx.Err() != nil {
			t.Fatalf("no run of %d answers from %s: %v", run, other, ctx.Err())
		}
		sent := time.Since(died)
		msg := fmt.Sprintf("after %d", i)
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		ans, err := h.AskTCP(actx, client, g, msg)
		acancel()
		if err == nil && answeredBy(t, ans, msg, targets) == other {
			inRow++
			continue
		}
		if err != nil && errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ask %d: %v", i, err)
		}
		inRow, last = 0, sent
		time.Sleep(10 * time.Millisecond) // pace the failures
	}
	// The detection window: fall × interval, plus one interval for the
	// probe under way at the death, plus one update and slack.
	window := 3*labCheckInterval + labCheckInterval + 2*time.Second
	t.Logf("service death → last new flow sent to %s: %v (fall × interval = %v)", who, last.Round(time.Millisecond), 3*labCheckInterval)
	if last > window {
		t.Errorf("new flows reached %s %v after its service died, want within %v", who, last, window)
	}
	if gs := groupState(h, who, g); gs.State != edge.JoinDraining && gs.State != edge.JoinDrained {
		t.Errorf("%s's %s: %+v, want draining or drained", who, g, gs)
	}
	failed := events.match(isFailed)[failedBefore:]
	if len(failed) != 1 || failed[0].Reason == "" {
		t.Errorf("check-failed events of %s: %+v, want one with a reason", who, failed)
	}
	st := h.Edges[who].Status()
	for _, js := range st.Edge.Groups {
		if js.Group == g.String() && (js.Check == nil || js.Check.State != "failing" || js.Check.LastOK || js.Check.Since.IsZero()) {
			t.Errorf("status of %s's %s: check %+v, want failing since a time", who, g, js.Check)
		}
	}

	// The service comes back: after rise passes, the target joins again
	// and answers new connections.
	if err := h.StartService(who, g); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	t.Logf("service restarted after %v", back.Sub(died).Round(time.Millisecond))
	err = WaitFor(ctx, func() error {
		if gs := groupState(h, who, g); gs.State != edge.JoinJoined {
			return fmt.Errorf("%s's %s: %+v, want joined", who, g, gs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("service back → joined again: %v", time.Since(back).Round(time.Millisecond))
	err = WaitFor(ctx, func() error {
		for _, c := range h.Names(config.RoleClient) {
			msg := "again from " + c
			ans, err := h.AskTCP(ctx, c, g, msg)
			if err != nil {
				return err
			}
			if answeredBy(t, ans, msg, targets) == who {
				return nil
			}
		}
		return fmt.Errorf("no client reaches %s again", who)
	})
	if err != nil {
		t.Fatal(err)
	}
	ok := events.match(func(e overlay.Event) bool { return e.Kind == overlay.EventCheckOK && e.Name == who && e.Group == g })
	if len(ok) < 2 { // the first pass at start, then the one after the failure
		t.Errorf("check-ok events of %s: %+v, want two", who, ok)
	}
}

// TestCheckFailureKeepsLiveConnection: the service behind a target stops
// taking connections (its listener closes) while a client holds a live
// TCP connection to it. The check fails and drains the group: new
// connections go to the other target, and the live one keeps exchanging
// bytes with the same target until it ends.
func TestCheckFailureKeepsLiveConnection(t *testing.T) {
	t.Parallel()
	h, _ := startLabWith(t, Options{Proxies: 2, Clusters: 1, Targets: 2, Clients: 2, Groups: 1},
		HarnessOptions{Generated: func(l *Lab) { quickChecks(t, l) }})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := GroupN(0)
	long, targets, who, other := liveConnection(t, ctx, h, "cl1", g)
	if err := h.StopService(who, g); err != nil {
		t.Fatal(err)
	}
	err := WaitFor(ctx, func() error {
		if gs := groupState(h, who, g); gs.State != edge.JoinDraining {
			return fmt.Errorf("%s's %s: %+v, want draining after its check failed", who, g, gs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		line := fmt.Sprintf("line %d after the check failed", i)
		ans, err := long.Ask(ctx, line)
		if err != nil {
			t.Fatalf("the live connection to %s after its check failed, %d: %v", who, i, err)
		}
		if by := answeredBy(t, ans, line, targets); by != who {
			t.Fatalf("the live connection moved from %s to %s", who, by)
		}
		msg := fmt.Sprintf("new %d", i)
		ans, err = h.AskTCP(ctx, "cl2", g, msg)
		if err != nil {
			t.Fatalf("new connection %d while %s drains: %v", i, who, err)
		}
		if by := answeredBy(t, ans, msg, targets); by != other {
			t.Fatalf("new connection %d reached %s, whose check failed", i, by)
		}
	}
}
