package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// narrator writes the demo's log: control-plane events as they happen and
// the steps with their verdicts.
type narrator struct {
	mu     sync.Mutex
	w      io.Writer
	start  time.Time
	failed []string
	seen   map[string]bool // register events are repeated by refreshes
	names  map[netip.Addr]string
	quiet  bool // set when the story is over: shutdown chatter is not part of it
	gen    int  // the lab whose events are told (on)
	// checks: health-check events are told (the check scene); other labs'
	// first passes are not part of their story.
	checks bool
	// pace: each step waits this long first, so that a person watching
	// the map sees it (DemoOptions.Pace); done ends the wait.
	pace  time.Duration
	steps int
	done  <-chan struct{}
}

func (n *narrator) printf(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.quiet {
		return
	}
	fmt.Fprintf(n.w, "%6.2fs  %s\n", time.Since(n.start).Seconds(), fmt.Sprintf(format, args...))
}

func (n *narrator) step(title string) {
	if n.pace > 0 && n.steps > 0 {
		select {
		case <-time.After(n.pace):
		case <-n.done:
		}
	}
	n.steps++
	n.printf("── %s", title)
}

func (n *narrator) check(ok bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if ok {
		n.printf("   ✓ %s", msg)
		return
	}
	n.printf("   ✗ %s", msg)
	n.mu.Lock()
	n.failed = append(n.failed, msg)
	n.mu.Unlock()
}

func (n *narrator) japList(japs []router.JAP) string {
	var parts []string
	for _, j := range japs {
		parts = append(parts, fmt.Sprintf("%s (%d)", n.names[j.Addr], j.Targets))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// on returns the OnEvent of a new lab: it narrates the events keep keeps
// (nil: all) until the next lab starts, so a closed lab's shutdown
// chatter is not told.
func (n *narrator) on(keep func(overlay.Event) bool) func(overlay.Event) {
	n.mu.Lock()
	n.gen++
	gen := n.gen
	n.seen = map[string]bool{}
	n.mu.Unlock()
	return func(e overlay.Event) {
		n.mu.Lock()
		current := n.gen == gen
		n.mu.Unlock()
		if current && (keep == nil || keep(e)) {
			n.event(e)
		}
	}
}

// hush stops telling the current lab's events: it is closing.
func (n *narrator) hush() {
	n.mu.Lock()
	n.gen++
	n.mu.Unlock()
}

func (n *narrator) event(e overlay.Event) {
	if e.Group.IsEcho() {
		return // the echo pseudo-group shadows every registration; skip it
	}
	switch e.Kind {
	case "join":
		n.printf("   %-3s JAP  %s (%s) joined %s", e.Proxy, e.Name, e.Target, e.Group)
	case "register":
		key := fmt.Sprintf("%s %s %v", e.Proxy, e.Group, e.JAPs)
		n.mu.Lock()
		dup := n.seen[key]
		n.seen[key] = true
		n.mu.Unlock()
		if !dup {
			n.printf("   %-3s JAP  registers %s with its RAPs %s: %s", e.Proxy, e.Group, strings.Join(e.RAPs, ", "), n.japList(e.JAPs))
		}
	case "resolve":
		self := ""
		if len(e.RAPs) == 1 && e.RAPs[0] == e.Proxy {
			self = " (itself)"
		}
		n.printf("   %-3s IAP  cache miss for %s: asks RAP %s%s", e.Proxy, e.Group, strings.Join(e.RAPs, ", "), self)
	case "resolved":
		n.printf("   %-3s IAP  %s is served by JAPs %s", e.Proxy, e.Group, n.japList(e.JAPs))
	case "refuse":
		n.printf("   %-3s JAP  refused %s for %s: %s", e.Proxy, e.Name, e.Group, e.Reason)
	case "dead", "alive":
		// Every proxy says so; the first one tells the story.
		key := string(e.Kind) + " " + e.Name
		n.mu.Lock()
		dup := n.seen[key]
		n.seen[key] = true
		n.mu.Unlock()
		if !dup {
			n.printf("   %-3s      health monitoring: %s is %s (told to every proxy)", e.Proxy, e.Name, e.Kind)
		}
	case "move":
		n.printf("   %-3s edge moves its anycast route: %s", e.Name, e.Reason)
	case "check-failed", "check-ok":
		n.mu.Lock()
		tell := n.checks
		n.mu.Unlock()
		if !tell {
			return
		}
		n.printf("   %-3s target  %s %s: %s", e.Name, e.Kind, e.Group, e.Reason)
	case "drain":
		n.printf("   %-3s JAP  %s takes no new flow of %s; its live flows go on", e.Proxy, e.Name, e.Group)
	case "drained":
		n.printf("   %-3s JAP  dropped %s from %s: %s", e.Proxy, e.Name, e.Group, e.Reason)
	case "edge-removed":
		n.printf("   %-3s      removed %s: %s", e.Proxy, e.Name, e.Reason)
	}
}

// RunDemo runs the whole overlay in this process, on userspace netstacks and
// loopback UDP, and narrates it to w: a CA lab of 3 proxies in 2 clusters,
// 3 targets in 2 groups on one anycast IP, 2 clients; a target signed into
// it while it runs, one refused, one revoked (demo_ca.go); then, on small
// labs of their own, target selection by proximity and by affinity
// (demo_selection.go) and health checks (demo_check.go). It returns an
// error unless every step really worked.
func RunDemo(ctx context.Context, w io.Writer) error { return RunDemoWith(ctx, w, DemoOptions{}) }

// DemoOptions let a person watch the demo (pias demo --web); the zero
// value is the plain demo, as fast and as silent as RunDemo.
type DemoOptions struct {
	// Pace is how long each step waits first.
	Pace time.Duration
	// Started hears of the main lab once its nodes run; OnEvent hears its
	// events.
	Started func(*Harness)
	OnEvent func(overlay.Event)
	// Stay, if set, is called with the main lab when its story is told,
	// before the lab closes, and the scenes on labs of their own are left
	// out: a map of the main lab stays up as long as Stay runs.
	Stay func(*Harness)
}

// RunDemoWith is RunDemo with options.
func RunDemoWith(ctx context.Context, w io.Writer, opts DemoOptions) error {
	n := &narrator{w: w, start: time.Now(), seen: map[string]bool{}, names: map[netip.Addr]string{}, pace: opts.Pace, done: ctx.Done()}
	shape := Options{Proxies: 3, Clusters: 2, Targets: 3, Clients: 2, Groups: 2, CA: true}
	n.step("Starting 3 proxies in 2 clusters, 3 targets and 2 clients, each its own wireguard-go device and certificate")
	// The lab is described, and proxy names are known to the event
	// narrator, before any node starts: targets join as soon as they run.
	described := func(l *Lab) {
		for _, nd := range l.Nodes {
			switch nd.Role {
			case config.RoleProxy:
				n.names[nd.Address[0]] = nd.Name
				n.printf("   %-3s proxy   cluster %s  overlay %s  WireGuard on %s", nd.Name, nd.Cluster, nd.Address[0], nd.Endpoint)
			case config.RoleTarget:
				n.printf("   %-3s target  overlay %s  home %s  serves %s on port %d", nd.Name, nd.Address[0], nd.Home, nd.Groups[0].Group, nd.Groups[0].Port)
			case config.RoleClient:
				n.printf("   %-3s client  overlay %s  home %s", nd.Name, nd.Address[0], nd.Home)
			}
		}
		n.printf("   no file holds another node's key: proxies and edges admit each other by certificates of the lab's CA")
		n.step("Edges attach to their home proxy (the first in their file) once it admits them; targets join their groups by sending JOIN to the group's anycast address")
	}
	onEvent := n.on(nil)
	if opts.OnEvent != nil {
		tell := onEvent
		onEvent = func(e overlay.Event) { tell(e); opts.OnEvent(e) }
	}
	h, err := Start(shape, HarnessOptions{OnEvent: onEvent, Generated: described})
	if err != nil {
		return err
	}
	if opts.Started != nil {
		opts.Started(h)
	}
	closeLab := sync.OnceFunc(func() { n.hush(); h.Close() })
	defer closeLab()
	if err := h.ServeTargets(); err != nil {
		return err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = h.WaitReady(readyCtx)
	cancel()
	n.check(err == nil, "every target joined through its proxy, and every group's RAPs know its JAPs%s", errSuffix(err))
	if err != nil {
		return errors.New("demo failed: targets did not join")
	}
	var attached []string
	for _, name := range append(h.Names(config.RoleTarget), h.Names(config.RoleClient)...) {
		attached = append(attached, name+" → "+h.Home(name).Name)
	}
	n.printf("   attached: %s", strings.Join(attached, ", "))
	tcpGroup, udpGroup := GroupN(0), GroupN(1)
	for _, g := range []router.Group{tcpGroup, udpGroup} {
		raps := h.Proxies[h.Names(config.RoleProxy)[0]].Overlay.RAPs(g)
		n.printf("   %s: RAPs %s (rendezvous hash, k=2); targets %s", g, strings.Join(raps, ", "), strings.Join(h.TargetsOf(g), ", "))
	}

	stepCtx := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 10*time.Second) }
	clients := h.Names(config.RoleClient)

	n.step(fmt.Sprintf("TCP: each client opens a connection to %s and sends a line", tcpGroup))
	for _, c := range clients {
		sctx, cancel := stepCtx()
		ans, err := h.AskTCP(sctx, c, tcpGroup, "hello from "+c)
		cancel()
		n.reply(h, c, tcpGroup, "hello from "+c, ans, err)
	}

	n.step(fmt.Sprintf("UDP: each client sends a datagram to %s", udpGroup))
	for _, c := range clients {
		sctx, cancel := stepCtx()
		ans, err := h.AskUDP(sctx, c, udpGroup, "query from "+c)
		cancel()
		n.reply(h, c, udpGroup, "query from "+c, ans, err)
	}

	n.step(fmt.Sprintf("ping %s: the IAP answers for an anycast IP that has a live group", tcpGroup.Addr))
	{
		sctx, cancel := stepCtx()
		rtt, err := h.Ping(sctx, clients[0], tcpGroup.Addr)
		cancel()
		n.check(err == nil, "%s got an echo reply from %s in %v%s", clients[0], tcpGroup.Addr, rtt.Round(time.Microsecond), errSuffix(err))
	}

	sender := h.TargetsOf(tcpGroup)[0]
	n.step(fmt.Sprintf("A target is a client of its own group: %s sends to %s", sender, tcpGroup))
	{
		sctx, cancel := stepCtx()
		ans, err := h.AskTCP(sctx, sender, tcpGroup, "hello from "+sender)
		cancel()
		who := n.reply(h, sender, tcpGroup, "hello from "+sender, ans, err)
		n.check(who != "" && who != sender, "%s was not handed its own packets", sender)
	}

	t4Closed := n.admission(ctx, h, clients[0])

	n.failover(ctx, h, tcpGroup, clients)

	n.step("Data-path counters")
	for _, name := range h.Names(config.RoleProxy) {
		p := h.Proxies[name]
		if p == nil {
			n.printf("   %-3s (killed)", name)
			continue
		}
		s := p.Router.Stats()
		n.printf("   %-3s forwarded %d, control %d, queued %d, dropped %d", name, s.Forwarded, s.Control, s.Queued, sumDrops(s))
	}
	t4Closed()
	if opts.Stay == nil {
		closeLab()
		n.selection(ctx)
		n.serviceDies(ctx)
	}

	defer func() { n.mu.Lock(); n.quiet = true; n.mu.Unlock() }()
	if len(n.failed) > 0 {
		n.printf("FAILED: %d step(s): %s", len(n.failed), strings.Join(n.failed, "; "))
		return fmt.Errorf("demo failed: %d step(s) did not work", len(n.failed))
	}
	n.printf("All steps worked.")
	if opts.Stay != nil {
		opts.Stay(h)
	}
	return nil
}

// failover kills the JAP of the group's first target without warning and
// shows the overlay healing: the death is detected and told to every proxy,
// the target moves to another proxy and joins again there, and clients are
// answered again.
func (n *narrator) failover(ctx context.Context, h *Harness, g router.Group, clients []string) {
	target := h.TargetsOf(g)[0]
	jap := h.Home(target).Name
	n.step(fmt.Sprintf("A proxy dies: %s, the JAP of %s, is killed without a word", jap, target))
	killed := time.Now()
	if err := h.KillProxy(jap); err != nil {
		n.check(false, "kill %s: %v", jap, err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := WaitFor(wctx, func() error {
		for name, p := range h.Proxies {
			for _, m := range p.Overlay.Members() {
				if m.Name == jap && m.State != overlay.StateDead {
					return fmt.Errorf("%s still sees %s %s", name, jap, m.State)
				}
			}
		}
		return nil
	})
	n.check(err == nil, "every live proxy knows %s is dead, %v after the kill%s", jap, time.Since(killed).Round(time.Millisecond), errSuffix(err))
	addr := h.Edges[target].Config.Addr4()
	var newJAP string
	err = WaitFor(wctx, func() error {
		for name, p := range h.Proxies {
			for _, t := range p.Router.Targets(g) {
				if t.Addr() == addr {
					newJAP = name
					return nil
				}
			}
		}
		return fmt.Errorf("%s has not joined again", target)
	})
	n.check(err == nil, "%s joined %s again through %s, %v after the kill%s", target, g, newJAP, time.Since(killed).Round(time.Millisecond), errSuffix(err))
	for _, c := range clients {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var ans string
		err := WaitFor(actx, func() error {
			var err error
			ans, err = h.AskTCP(actx, c, g, "still there? from "+c)
			return err
		})
		cancel()
		who := n.reply(h, c, g, "still there? from "+c, ans, err)
		if who != "" {
			n.printf("   (%s answered %v after the kill)", c, time.Since(killed).Round(time.Millisecond))
		}
	}
}

// reply checks an answer from a group and tells which target answered and
// which IAP and JAP carried it; it returns the answering target.
func (n *narrator) reply(h *Harness, from string, g router.Group, sent, ans string, err error) string {
	if err != nil {
		n.check(false, "%s → %s: %v", from, g, err)
		return ""
	}
	who, rest, _ := strings.Cut(ans, ": ")
	members := h.TargetsOf(g)
	ok := rest == sent && contains(members, who)
	iap := h.Home(from)
	jap := "?"
	for _, f := range iap.Router.Flows() {
		if f.Kind == "iap" && f.Group == g && contains(h.Edges[from].Config.Address, f.Client.Addr()) {
			jap = n.names[f.JAP]
		}
	}
	n.check(ok, "%s → %s answered %q  (IAP %s → JAP %s → target %s)", from, g, ans, iap.Name, jap, who)
	return who
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return ": " + err.Error()
}

func sumDrops(s router.Stats) uint64 {
	var t uint64
	for _, d := range s.Drops {
		t += d
	}
	return t
}
