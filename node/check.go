package node

import (
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/pias-net/pias/check"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/tunnel"
)

// groupCheck is the health check of one of a target's groups. run owns it,
// but for state, which Status reads under Edge.checkMu.
type groupCheck struct {
	group router.Group
	spec  check.Spec
	probe check.Probe
	dial  check.Dialer
	next  int64 // when the next probe starts, on the edge's clock
	busy  bool  // a probe is under way
	tries int   // probes before the first pass, for the backoff
	// drained: this check drained the group (an operator's drain is the
	// operator's to end).
	drained bool
	state   *check.State
}

// checked is the outcome of one probe of check c.
type checked struct {
	c *groupCheck
	r check.Result
}

// newChecks makes the checks of cfg's groups. A check reaches the service
// where the target delivers the group: with a netstack, the host's
// loopback (tunnel.Host.ServeFromHost relays there), or the netstack
// itself when onNetstack (the lab's services listen there); with a kernel
// TUN, the group family's overlay address, through the host's stack.
func newChecks(cfg *config.Edge, host *tunnel.Host, onNetstack bool) []*groupCheck {
	var out []*groupCheck
	for _, s := range cfg.Groups {
		spec, ok := cfg.Checks[s.Group]
		if !ok || spec.Kind == check.KindNone {
			continue
		}
		addr := cfg.AddrLike(s.Group.Addr)
		var dial check.Dialer = &net.Dialer{}
		switch {
		case host.Net != nil && onNetstack:
			dial = host.Net
		case host.Net != nil:
			addr = netip.MustParseAddr("127.0.0.1")
			if s.Group.Addr.Is6() {
				addr = netip.IPv6Loopback()
			}
		}
		p := spec.Probe(addr, s.Port)
		if p == nil {
			continue
		}
		out = append(out, &groupCheck{group: s.Group, spec: spec, probe: p, dial: dial, state: check.NewState(spec.Rise, spec.Fall)})
	}
	return out
}

// dueChecks starts the probes due at now, and returns when the next is due.
func (e *Edge) dueChecks(now int64) int64 {
	next := int64(1<<63 - 1)
	for _, c := range e.checks {
		if c.busy {
			continue
		}
		if c.next <= now {
			c.busy, c.next = true, now+int64(c.interval())
			e.startCheck(c)
			continue
		}
		next = min(next, c.next)
	}
	return next
}

// firstRetry is the wait after a check's first failure before it ever
// passed; it doubles up to the check's interval. A target does not serve a
// group until its check passes once, and its service may start a moment
// after pias: it should not wait a whole interval.
const firstRetry = 100 * time.Millisecond

// interval is the wait before c's next probe: its interval, or less before
// its first pass.
func (c *groupCheck) interval() time.Duration {
	e := c.spec.Interval
	if c.state.Status() == check.Unknown {
		c.tries++
		e = min(e, firstRetry<<min(c.tries-1, 10))
	}
	return e
}

// holdChecked keeps every group with a check out of service until its
// check passes once: it drains them before they join.
func (e *Edge) holdChecked(now int64) {
	for _, c := range e.checks {
		out, err := e.Target.Drain(now, c.group, 0)
		e.send(out)
		c.drained = err == nil
	}
}

// startCheck probes c's service in the background; the result comes back
// to run.
func (e *Edge) startCheck(c *groupCheck) {
	e.done.Add(1)
	go func() {
		defer e.done.Done()
		r := check.Run(e.ctx, c.probe, c.dial, c.spec.Timeout)
		select {
		case e.checkedc <- checked{c: c, r: r}:
		case <-e.ended:
		}
	}()
}

// checkResult feeds a probe's result to its check's state, and acts on a
// change: a failing group drains (new flows go to the group's other
// targets, live ones go on until drain_timeout), a healthy one that the
// check drained joins again.
func (e *Edge) checkResult(r checked) {
	now := e.now()
	c := r.c
	c.busy = false
	if !slices.Contains(e.checks, c) {
		return // its group went at a reload
	}
	e.checkMu.Lock()
	t, changed := c.state.Feed(r.r.OK, r.r.Detail, now)
	e.checkMu.Unlock()
	if !changed {
		return
	}
	kind := overlay.EventCheckOK
	if t.To == check.Failing {
		kind = overlay.EventCheckFailed
	}
	if e.opts.OnEvent != nil {
		e.opts.OnEvent(overlay.Event{Proxy: e.attached(), Kind: kind, Group: c.group, Name: e.Name, Reason: t.Reason})
	}
	switch {
	case t.To == check.Failing && !c.drained:
		if e.operatorDrained(c.group) {
			return
		}
		out, err := e.Target.Drain(now, c.group, e.cur.DrainTimeout)
		e.send(out)
		c.drained = err == nil
	case t.To == check.Healthy && c.drained:
		out, _ := e.Target.Undrain(now, c.group)
		e.send(out)
		c.drained = false
	}
}

// operatorDrained reports whether g drains, or has drained, already.
func (e *Edge) operatorDrained(g router.Group) bool {
	for _, gs := range e.Target.Groups() {
		if gs.Group == g {
			return gs.State == edge.JoinDraining || gs.State == edge.JoinDrained
		}
	}
	return false
}

// CheckStatus is a group's health check, as `pias status` shows it.
type CheckStatus struct {
	Kind  string `json:"kind"`
	State string `json:"state"` // "unknown", "healthy" or "failing"
	// Since: when it entered State (zero while unknown).
	Since time.Time `json:"since,omitzero"`
	// Last: the latest result, its time, and whether it passed.
	Last   string    `json:"last,omitempty"`
	LastOK bool      `json:"last_ok"`
	LastAt time.Time `json:"last_at,omitzero"`
}

// checkStatus is the status of g's check; nil if it has none.
func (e *Edge) checkStatus(g router.Group) *CheckStatus {
	e.checkMu.Lock()
	defer e.checkMu.Unlock()
	for _, c := range e.checks {
		if c.group != g {
			continue
		}
		cs := &CheckStatus{Kind: c.spec.Kind, State: c.state.Status().String()}
		if c.state.Status() != check.Unknown {
			cs.Since = e.epoch.Add(time.Duration(c.state.Since()))
		}
		if r, at, ok := c.state.Last(); ok {
			cs.Last, cs.LastOK, cs.LastAt = r.Detail, r.OK, e.epoch.Add(time.Duration(at))
		}
		return cs
	}
	return nil
}
