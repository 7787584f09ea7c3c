package lab

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// groupState is the target's state of g, from Target.Groups.
func groupState(h *Harness, target string, g router.Group) edge.GroupStatus {
	for _, gs := range h.Edges[target].Target.Groups() {
		if gs.Group == g {
			return gs
		}
	}
	return edge.GroupStatus{}
}

// TestDrainKeepsLiveConnection: a target drains while a client's TCP
// connection to it is live, over real tunnels. The connection keeps
// exchanging bytes with it, byte for byte, while every new connection goes
// to the group's other target; when the connection closes, its JAP drops
// the target ("its flows ended") and the target says drained. Undrain
// joins it again.
func TestDrainKeepsLiveConnection(t *testing.T) {
	t.Parallel()
	// t1 and t3 serve group 0 (TCP), both through p1.
	h, events := startLabEvents(t, Options{Proxies: 2, Clusters: 1, Targets: 4, Clients: 2, Groups: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := GroupN(0)
	long, targets, who, other := liveConnection(t, ctx, h, "cl1", g)
	jap := h.Home(who)

	if err := h.Edges[who].Drain(ctx, g, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	err := WaitFor(ctx, func() error {
		if gs := groupState(h, who, g); gs.State != edge.JoinDraining || gs.Flows < 1 {
			return fmt.Errorf("%s's %s: %+v, want draining with its flow", who, g, gs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	clients := h.Names(config.RoleClient)
	for i := 1; i <= 20; i++ {
		line := fmt.Sprintf("line %d %s", i, strings.Repeat("x", i*50))
		ans, err := long.Ask(ctx, line)
		if err != nil {
			t.Fatalf("the live connection while %s drains, %d: %v", who, i, err)
		}
		if by := answeredBy(t, ans, line, targets); by != who {
			t.Fatalf("the live connection moved from %s to %s", who, by)
		}
		c := clients[i%len(clients)]
		msg := fmt.Sprintf("new %d from %s", i, c)
		ans, err = h.AskTCP(ctx, c, g, msg)
		if err != nil {
			t.Fatalf("new connection %d from %s while %s drains: %v", i, c, who, err)
		}
		if by := answeredBy(t, ans, msg, targets); by != other {
			t.Fatalf("new connection %d from %s reached %s, which drains", i, c, by)
		}
	}
	// The live connection ends: once its flow is gone, the JAP drops the
	// target and the target is drained.
	long.Close()
	err = WaitFor(ctx, func() error {
		if gs := groupState(h, who, g); gs.State != edge.JoinDrained {
			return fmt.Errorf("%s's %s: %+v, want drained", who, g, gs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	drained := events.match(func(e overlay.Event) bool {
		return e.Kind == overlay.EventDrained && e.Proxy == jap.Name && e.Group == g && e.Name == who
	})
	if len(drained) != 1 || drained[0].Reason != "its flows ended" {
		t.Errorf("drained events at %s: %+v", jap.Name, drained)
	}
	for _, l := range jap.Router.Loads(g) {
		if l.Target.Addr() == addr4Of(t, h, who) {
			t.Errorf("%s still holds the drained %s: %+v", jap.Name, who, l)
		}
	}

	// Undrain: it joins again, and takes new flows.
	if err := h.Edges[who].Undrain(ctx, g); err != nil {
		t.Fatal(err)
	}
	err = WaitFor(ctx, func() error {
		if gs := groupState(h, who, g); gs.State != edge.JoinJoined {
			return fmt.Errorf("%s's %s: %+v, want joined", who, g, gs)
		}
		for _, l := range jap.Router.Loads(g) {
			if l.Target.Addr() == addr4Of(t, h, who) && !l.Draining {
				return nil
			}
		}
		return fmt.Errorf("%s does not list %s as a target of %s", jap.Name, who, g)
	})
	if err != nil {
		t.Fatal(err)
	}
}
