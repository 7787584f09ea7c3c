package lab

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/router"
)

// The demo's admission scenes, in its first lab (a CA lab, as pias lab gen
// makes by default): a target signed while the overlay runs joins and
// answers; a target whose certificate lacks its group is refused; a
// revoked target is cut off by every proxy.

// admission runs the three scenes; client asks the new target's group.
// The revoked target stops in the background (its goodbye goes unanswered
// for a while): wait for it before the lab closes.
func (n *narrator) admission(ctx context.Context, h *Harness, client string) (wait func()) {
	g := GroupN(2) // a group no target of the lab has
	n.newTarget(ctx, h, client, g)
	n.lackingRight(ctx, h, g, GroupN(3))
	n.revoked(ctx, h, client, "t4", g)
	done := make(chan struct{})
	e := h.forgetEdge("t4") // now: the scenes that follow read the lab's edges
	go func() {
		defer close(done)
		if e != nil {
			e.Close()
		}
	}()
	return func() { <-done }
}

// newTarget signs t4 into the running lab and waits for its first answer.
func (n *narrator) newTarget(ctx context.Context, h *Harness, client string, g router.Group) {
	n.step(fmt.Sprintf("A new target, signed while the overlay runs: t4 for %s; its file lists one proxy's endpoint, and no proxy's file changes", g))
	nd, err := h.AddNode(NewNode{Name: "t4", Role: config.RoleTarget, Groups: []router.Group{g}, Proxies: []string{"p2"}})
	if err != nil {
		n.check(false, "sign t4: %v", err)
		return
	}
	n.printf("   t4  target  overlay %s  certificate %s, signed by the lab's CA (as pias cert sign does): may join %s", nd.Address[0], nd.Cert, g)
	start := time.Now()
	if err := h.StartNode("t4"); err != nil {
		n.check(false, "start t4: %v", err)
		return
	}
	if err := h.ServeTargets(); err != nil {
		n.check(false, "serve t4: %v", err)
		return
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var ans string
	err = WaitFor(actx, func() error {
		qctx, cancel := context.WithTimeout(actx, 300*time.Millisecond)
		defer cancel()
		var err error
		ans, err = h.AskTCP(qctx, client, g, "hello t4 from "+client)
		return err
	})
	took := time.Since(start)
	if n.reply(h, client, g, "hello t4 from "+client, ans, err) != "" {
		n.printf("   (t4 answered %v after it started)", took.Round(time.Millisecond))
	}
}

// lackingRight shows a target whose certificate grants has but whose file
// asks for lacks: pias refuses the file, and a node that skips that check
// is refused by its JAP, which tells it why.
func (n *narrator) lackingRight(ctx context.Context, h *Harness, has, lacks router.Group) {
	n.step(fmt.Sprintf("A target whose certificate lacks its group: t5, signed for %s, asks for %s", has, lacks))
	if _, err := h.AddNode(NewNode{Name: "t5", Role: config.RoleTarget, Groups: []router.Group{lacks},
		Rights: []cert.GroupRight{cert.GroupRightOf(has)}, Proxies: []string{"p1"}}); err != nil {
		n.check(false, "sign t5: %v", err)
		return
	}
	err := h.StartNode("t5")
	msg := "it started"
	if err != nil {
		msg = strings.TrimPrefix(err.Error(), h.Dir+"/")
	}
	n.check(err != nil, "pias target refuses t5's file: %s", msg)
	if err == nil {
		return
	}
	n.printf("   t5 started anyway, past that check (as a modified pias would): its JAP checks again")
	if err := h.StartForged("t5"); err != nil {
		n.check(false, "start t5: %v", err)
		return
	}
	defer h.CloseEdge("t5") // it would ask again every keepalive
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var reason string
	err = WaitFor(wctx, func() error {
		for _, s := range h.Edges["t5"].Target.Groups() {
			if s.State == edge.JoinRefused {
				reason = s.Reason
				return nil
			}
		}
		return fmt.Errorf("t5 has not been refused")
	})
	n.check(err == nil, "t5 was told why: %q%s", reason, errSuffix(err))
	var at []string
	for _, name := range h.Names(config.RoleProxy) {
		if p := h.Proxies[name]; p != nil && len(p.Router.Targets(lacks)) > 0 {
			at = append(at, name)
		}
	}
	n.check(len(at) == 0, "no proxy has a target of %s%s", lacks, listSuffix(at))
}

// revoked revokes target at p1 and waits until every proxy removed it.
func (n *narrator) revoked(ctx context.Context, h *Harness, client, target string, g router.Group) {
	n.step(fmt.Sprintf("A node is revoked: pias cert revoke %s.crt writes revoked.pem (serial 2); p1 reads it (SIGHUP) and passes it on", target))
	rl, err := h.Lab.Revoke(time.Now(), target)
	if err != nil {
		n.check(false, "revoke %s: %v", target, err)
		return
	}
	start := time.Now()
	changes, err := h.ReloadProxy("p1")
	if err != nil {
		n.check(false, "p1 reloads its file: %v", err)
		return
	}
	n.printf("   p1  reloaded its file: %s", strings.Join(changes, "; "))
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = WaitFor(wctx, func() error {
		for name, p := range h.Proxies {
			switch {
			case p.Overlay.RevocationSerial() != rl.Serial:
				return fmt.Errorf("%s holds list %d", name, p.Overlay.RevocationSerial())
			case slices.Contains(p.Overlay.CertEdges(), target):
				return fmt.Errorf("%s still admits %s", name, target)
			case len(p.Router.Targets(g)) > 0:
				return fmt.Errorf("%s still has a target of %s", name, g)
			}
		}
		return nil
	})
	n.check(err == nil, "every proxy holds list %d and removed %s (its WireGuard peer, its join), %v after p1's reload%s",
		rl.Serial, target, time.Since(start).Round(time.Millisecond), errSuffix(err))
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ans, err := h.AskTCP(actx, client, g, "anyone?")
	n.check(err != nil, "%s → %s: no answer%s", client, g, map[bool]string{true: "", false: fmt.Sprintf(", but got %q", ans)}[err != nil])
}

func listSuffix(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return ": " + strings.Join(s, ", ")
}
