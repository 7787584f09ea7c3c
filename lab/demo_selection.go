package lab

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// The demo's selection scene: target selection policies, each on a small
// lab of its own (3 proxies in 3 clusters, a target at each in one TCP
// group), so that the other scenes stay as they are.
//
//   - proximity: p2 ↔ p3 is delayed; the client on p2 reaches p2's own
//     target, and when that one leaves, p1's (the nearer cluster), not p3's;
//   - affinity: every new connection of a client reaches the same target.

// selectionDelay is the delay added each way between p2 and p3.
const selectionDelay = 20 * time.Millisecond

// selectionAsks is how many new connections a step opens to show that a
// choice is not luck.
const selectionAsks = 5

func (n *narrator) selection(ctx context.Context) {
	n.proximity(ctx)
	n.affinity(ctx)
}

// proximityEvents keeps the events that tell the proximity scene:
// resolutions (the IAP's ranking of JAPs, nearest first) and anything going
// wrong. Joins and registrations were told in the first lab.
func proximityEvents(e overlay.Event) bool {
	return e.Kind != "join" && e.Kind != "register"
}

// affinityEvents keeps what goes wrong only: under affinity the IAP's
// ranking does not matter.
func affinityEvents(e overlay.Event) bool {
	return e.Kind != "join" && e.Kind != "register" && e.Kind != "resolve" && e.Kind != "resolved"
}

// closeLab stops telling a scene's lab, then closes it.
func (n *narrator) closeLab(h *Harness) {
	n.hush()
	h.Close()
}

// setGroupKeys adds TOML keys to every [[group]] of the named targets'
// files, after its port line.
func setGroupKeys(l *Lab, keys string, targets ...string) error {
	for _, name := range targets {
		path := l.Path(name + ".toml")
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var out []string
		for _, line := range strings.Split(string(b), "\n") {
			out = append(out, line)
			if strings.HasPrefix(line, "port = ") {
				out = append(out, keys)
			}
		}
		if err := os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startPolicyLab starts a lab of the given shape whose targets all state
// keys in their [[group]]; it calls started (if set) as soon as every node
// runs, then serves the targets and waits until they joined.
// It checks the layout the scene relies on: target tN and client cl1 at
// the proxies the generator puts them at (t1 at p1, …; cl1 at p2).
func (n *narrator) startPolicyLab(ctx context.Context, shape Options, keys string, keep func(overlay.Event) bool, started func(*Harness) error) (*Harness, error) {
	var genErr error
	h, err := Start(shape, HarnessOptions{OnEvent: n.on(keep), Generated: func(l *Lab) {
		var targets []string
		for _, t := range l.Role(config.RoleTarget) {
			targets = append(targets, t.Name)
		}
		genErr = setGroupKeys(l, keys, targets...)
	}})
	if err != nil {
		return nil, err
	}
	if genErr == nil && started != nil {
		genErr = started(h)
	}
	if genErr != nil {
		h.Close()
		return nil, genErr
	}
	if err := h.ServeTargets(); err != nil {
		h.Close()
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := h.WaitReady(rctx); err != nil {
		h.Close()
		return nil, err
	}
	var at []string
	for i, t := range h.Names(config.RoleTarget) {
		if home := h.Node(t).Home; home != fmt.Sprintf("p%d", i+1) {
			h.Close()
			return nil, fmt.Errorf("%s is attached to %s, the scene wants p%d", t, home, i+1)
		}
		at = append(at, fmt.Sprintf("%s at %s (%s)", t, h.Node(t).Home, h.Node(h.Node(t).Home).Cluster))
	}
	if home := h.Node("cl1").Home; home != "p2" {
		h.Close()
		return nil, fmt.Errorf("cl1 is attached to %s, the scene wants p2", home)
	}
	n.check(true, "%s joined %s with %s", strings.Join(at, ", "), GroupN(0), keys)
	return h, nil
}

// askNew opens a new connection from an edge to g and asks one line; it
// returns the target that answered and the JAP that carried the
// connection, as the IAP's flow table has it.
func (n *narrator) askNew(ctx context.Context, h *Harness, from string, g router.Group) (target, jap string, err error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cv, err := h.DialTCP(cctx, from, g)
	if err != nil {
		return "", "", err
	}
	defer cv.Close()
	line := "hello from " + from
	ans, err := cv.Ask(cctx, line)
	if err != nil {
		return "", "", fmt.Errorf("%s → %s: %w", from, g, err)
	}
	who, rest, _ := strings.Cut(ans, ": ")
	if rest != line || !contains(h.TargetsOf(g), who) {
		return "", "", fmt.Errorf("%s → %s: answered %q", from, g, ans)
	}
	jap = "?"
	local, _ := netip.ParseAddrPort(cv.Conn().LocalAddr().String())
	iap := h.Home(from)
	for _, f := range iap.Router.Flows() {
		if f.Group != g || f.Client != local {
			continue
		}
		switch f.Kind {
		case "iap":
			jap = n.names[f.JAP]
		case "jap":
			if jap == "?" {
				jap = iap.Name // its own target: no tunnel to another proxy
			}
		}
	}
	return who, jap, nil
}

// askMany opens count new connections from an edge to g and tells which
// targets answered, how many times each, and through which JAPs.
func (n *narrator) askMany(ctx context.Context, h *Harness, from string, g router.Group, count int) (targets, japs map[string]int, err error) {
	targets, japs = map[string]int{}, map[string]int{}
	for range count {
		t, j, err := n.askNew(ctx, h, from, g)
		if err != nil {
			return targets, japs, err
		}
		targets[t]++
		japs[j]++
	}
	return targets, japs, nil
}

// only returns the one key of m, or "" if m has not exactly one.
func only(m map[string]int) string {
	if len(m) != 1 {
		return ""
	}
	for k := range m {
		return k
	}
	return ""
}

func counts(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// rttOf is p's smoothed probe RTT to the member called name (0 if not
// measured).
func rttOf(h *Harness, p, name string) time.Duration {
	for _, m := range h.Proxies[p].Overlay.Members() {
		if m.Name == name {
			return m.RTT
		}
	}
	return 0
}

// want says what is wrong with a step whose every answer should have come
// from target: the error, or the wanted answers; "" if nothing.
func want(answers map[string]int, target string, err error) string {
	if err != nil {
		return errSuffix(err)
	}
	if only(answers) != target {
		return fmt.Sprintf(": want %s every time", target)
	}
	return ""
}

// round rounds an RTT for the narration.
func round(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// proximity: p2's own target first; when it leaves, the target of the
// nearer cluster (p1), not the one behind the delay (p3).
func (n *narrator) proximity(ctx context.Context) {
	g := GroupN(0)
	n.step(fmt.Sprintf("Proximity: a new lab, 3 proxies in 3 clusters, a target at each in %s, cl1 on p2; p2 ↔ p3 delayed by %v each way", g, selectionDelay))
	// The delay is set as soon as the nodes run, while the targets join:
	// p2's smoothed RTT to p3 starts climbing at once.
	var delayed time.Time
	delay := func(h *Harness) error {
		delayed = time.Now()
		for _, pair := range [][2]string{{"p2", "p3"}, {"p3", "p2"}} {
			if err := h.SetDelay(pair[0], pair[1], selectionDelay); err != nil {
				return fmt.Errorf("delay %s → %s: %v", pair[0], pair[1], err)
			}
		}
		return nil
	}
	h, err := n.startPolicyLab(ctx, Options{Proxies: 3, Clusters: 3, Targets: 3, Clients: 1, Groups: 1}, `select = "proximity"`, proximityEvents, delay)
	if err != nil {
		n.check(false, "proximity lab: %v", err)
		return
	}
	defer n.closeLab(h)

	// p2 ranks JAPs by these figures when it resolves the group: wait
	// until they tell p3 is behind the delay, farther than p1 by more than
	// the delay (the true difference is twice that: both ways).
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var near, far time.Duration
	measured := func() error {
		return WaitFor(wctx, func() error {
			near, far = rttOf(h, "p2", "p1"), rttOf(h, "p2", "p3")
			if near == 0 || far-near <= selectionDelay {
				return fmt.Errorf("p2 measures p1 at %v, p3 at %v", near, far)
			}
			return nil
		})
	}
	err = measured()
	n.check(err == nil, "p2 measures p1 at %v, p3 at %v (smoothed probe RTT), %v after the delay was set%s",
		round(near), round(far), time.Since(delayed).Round(time.Millisecond), errSuffix(err))
	if err != nil {
		return
	}
	ts, japs, err := n.askMany(wctx, h, "cl1", g, selectionAsks)
	n.check(err == nil && only(ts) == "t2", "cl1 → %s: %d new connections answered by %s: p2's own target  (IAP p2 → JAP %s)%s",
		g, selectionAsks, counts(ts), counts(japs), want(ts, "t2", err))

	n.step("t2 leaves (its edge closes): p2 has no target of the group left")
	// Measure again: the figures p2 will rank by are those of now.
	if err := measured(); err != nil {
		n.check(false, "p2 no longer measures p3 behind the delay: %v", err)
		return
	}
	h.Edges["t2"].Close()
	left := time.Now()
	// The first new connection may meet the change half-way (t2's leave,
	// p2's resolution): retry it; from then on every one must go to p1.
	var first, firstJAP string
	err = WaitFor(wctx, func() error {
		var err error
		first, firstJAP, err = n.askNew(wctx, h, "cl1", g)
		return err
	})
	took := time.Since(left)
	ts, japs = map[string]int{}, map[string]int{}
	if err == nil {
		ts[first]++
		japs[firstJAP]++
		var more, moreJAPs map[string]int
		more, moreJAPs, err = n.askMany(wctx, h, "cl1", g, selectionAsks-1)
		for k, v := range more {
			ts[k] += v
		}
		for k, v := range moreJAPs {
			japs[k] += v
		}
	}
	n.check(err == nil && only(ts) == "t1", "cl1 → %s: %d new connections answered by %s: p1 (%v away), not p3 (%v away), %v after t2 left  (IAP p2 → JAP %s)%s",
		g, selectionAsks, counts(ts), round(near), round(far), took.Round(time.Millisecond), counts(japs), want(ts, "t1", err))
}

// affinity: each client's new connections all reach one target, whatever
// its IAP's own targets.
func (n *narrator) affinity(ctx context.Context) {
	g := GroupN(0)
	n.step(fmt.Sprintf(`Affinity: a new lab like it, no delays, %s says select = "affinity"; cl1 on p2, cl2 on p3`, g))
	h, err := n.startPolicyLab(ctx, Options{Proxies: 3, Clusters: 3, Targets: 3, Clients: 2, Groups: 1}, `select = "affinity"`, affinityEvents, nil)
	if err != nil {
		n.check(false, "affinity lab: %v", err)
		return
	}
	defer n.closeLab(h)
	for _, c := range h.Names(config.RoleClient) {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ts, japs, err := n.askMany(actx, h, c, g, selectionAsks)
		cancel()
		if err == nil && only(ts) == "" {
			err = errors.New("want one target every time: no affinity")
		}
		iap := h.Home(c).Name
		// The IAP's own target, which proximity would pick, when it is not
		// the one affinity picks.
		note := ""
		if own := "t" + strings.TrimPrefix(iap, "p"); err == nil && only(ts) != own {
			note = fmt.Sprintf(", not %s's own %s", iap, own)
		}
		n.check(err == nil, "%s → %s: %d new connections answered by %s%s  (IAP %s → JAP %s)%s",
			c, g, selectionAsks, counts(ts), note, iap, counts(japs), errSuffix(err))
	}
}
