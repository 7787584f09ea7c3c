package lab

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/overlay"
)

// The demo's health-check scene, on a small lab of its own (2 proxies, a
// target at each in one TCP group, checks 200 ms apart): a target's
// service stops, pias does not; its check fails, the target drains the
// group and new connections go to the other target; the service comes
// back, the check passes, and the target serves again.

// demoCheckInterval is the scene's check interval; fall is the default 3.
const demoCheckInterval = 200 * time.Millisecond

func (n *narrator) serviceDies(ctx context.Context) {
	n.step("A service dies, pias does not: health checks (tcp, every 200 ms, fall 3, rise 2)")
	var telling atomic.Bool
	keep := func(e overlay.Event) bool {
		switch e.Kind {
		case overlay.EventCheckFailed, overlay.EventCheckOK, overlay.EventDrain, overlay.EventDrained:
			return telling.Load()
		}
		return false
	}
	keys := fmt.Sprintf(`check = { kind = "tcp", interval = "%v", timeout = "150ms" }`, demoCheckInterval)
	h, err := n.startPolicyLab(ctx, Options{Proxies: 2, Clusters: 1, Targets: 2, Clients: 2, Groups: 1}, keys, keep, nil)
	if err != nil {
		n.check(false, "start the lab: %v", err)
		return
	}
	defer n.closeLab(h)
	telling.Store(true)
	n.mu.Lock()
	n.checks = true
	n.mu.Unlock()
	g := GroupN(0)
	who, _, err := n.askNew(ctx, h, "cl1", g)
	if err != nil {
		n.check(false, "cl1 → %s: %v", g, err)
		return
	}
	other := "t1"
	if who == other {
		other = "t2"
	}
	n.printf("   cl1's new connections to %s reach %s", g, who)

	n.step(fmt.Sprintf("%s's service stops listening on port %d (pias keeps running)", who, LocalPort(g)))
	died := time.Now()
	if err := h.StopService(who, g); err != nil {
		n.check(false, "stop %s's service: %v", who, err)
		return
	}
	// New connections until 10 in a row reach other.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var failed int
	var lastFail time.Duration
	for inRow := 0; inRow < 10; {
		if wctx.Err() != nil {
			n.check(false, "new connections still reach %s %v after its service stopped", who, time.Since(died).Round(time.Millisecond))
			return
		}
		at := time.Since(died)
		target, _, err := n.askNew(wctx, h, "cl1", g)
		if err == nil && target == other {
			inRow++
			continue
		}
		inRow, failed, lastFail = 0, failed+1, at
		time.Sleep(20 * time.Millisecond)
	}
	window := 4*demoCheckInterval + time.Second // fall × interval, the probe under way, one update
	n.check(lastFail <= window, "%s's check failed and it drained %s: the last new connection to reach it left %v after the stop (%d refused before), within the detection window %v",
		who, g, lastFail.Round(time.Millisecond), failed, window)
	targets, _, err := n.askMany(ctx, h, "cl1", g, selectionAsks)
	n.check(err == nil && targets[other] == selectionAsks, "then every new connection reaches %s: %s%s", other, counts(targets), errSuffix(err))

	n.step(fmt.Sprintf("%s's service comes back", who))
	back := time.Now()
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.StartService(who, g); err != nil {
		n.check(false, "restart %s's service: %v", who, err)
		return
	}
	err = WaitFor(wctx, func() error {
		if st := demoGroupState(h, who); st != edge.JoinJoined {
			return fmt.Errorf("%s's %s is %s", who, g, st)
		}
		return nil
	})
	n.check(err == nil, "its check passed twice in a row and %s joined %s again, %v after the restart%s", who, g, time.Since(back).Round(time.Millisecond), errSuffix(err))
	err = WaitFor(wctx, func() error {
		for _, c := range h.Names(config.RoleClient) {
			if t, _, err := n.askNew(wctx, h, c, g); err != nil || t == who {
				return err
			}
		}
		return fmt.Errorf("no new connection reaches %s yet", who)
	})
	n.check(err == nil, "new connections reach %s again%s", who, errSuffix(err))
}

// demoGroupState is where target's (only) group stands.
func demoGroupState(h *Harness, target string) edge.JoinState {
	gs := h.Edges[target].Target.Groups()
	if len(gs) == 0 {
		return edge.JoinPending
	}
	return gs[0].State
}
