package lab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// defaultShape is the lab most tests use: three proxies in two clusters;
// t1 (p1) and t3 (p3) serve 100.65.0.1:80/tcp, t2 (p2) and t4 (p1) serve
// 100.65.0.1:53/udp; cl1 is attached to p2, cl2 to p3.
var defaultShape = Options{Proxies: 3, Clusters: 2, Targets: 4, Clients: 2, Groups: 2}

// A TCP connection stays on one target for its life, and under proximity
// a client's other connections reach that target too, as with native
// anycast.
func TestTCPFlowSticksToOneTarget(t *testing.T) {
	t.Parallel()
	// Two proxies: t1 and t3 serve group 0 (TCP), both joined through p1,
	// which gives each client one of them by a hash of its address. cl1
	// (p2) reaches them through p1 as JAP, cl2 is attached to p1 itself.
	h := startLab(t, Options{Proxies: 2, Clusters: 1, Targets: 4, Clients: 2, Groups: 2})
	ctx := testCtx(t)
	g := GroupN(0)
	targets := targetsOf(h, g)
	if len(targets) < 2 {
		t.Fatalf("group %s has targets %v, want at least 2", g, targets)
	}

	long, err := h.DialTCP(ctx, "cl1", g)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	longFrom := localAddrPort(t, long.Conn().LocalAddr())

	var first string
	others := map[string]map[string]int{} // client → target → short connections it answered
	clients := h.Names(config.RoleClient)
	for i := 0; i < 50; i++ {
		line := fmt.Sprintf("line %d", i)
		ans, err := long.Ask(ctx, line)
		if err != nil {
			t.Fatalf("long connection, %s: %v", line, err)
		}
		who := answeredBy(t, ans, line, targets)
		if first == "" {
			first = who
		} else if who != first {
			t.Fatalf("long connection moved from %s to %s at %s", first, who, line)
		}
		// Meanwhile, 20 new connections from both clients.
		if i < 20 {
			c := clients[i%len(clients)]
			msg := fmt.Sprintf("short %d from %s", i, c)
			ans, err := h.AskTCP(ctx, c, g, msg)
			if err != nil {
				t.Fatalf("short connection %d from %s: %v", i, c, err)
			}
			if others[c] == nil {
				others[c] = map[string]int{}
			}
			others[c][answeredBy(t, ans, msg, targets)]++
		}
	}
	t.Logf("long connection %s: all 50 lines answered by %s; 20 short connections: %v", longFrom, first, others)
	for c, by := range others {
		if len(by) != 1 {
			t.Errorf("%s's short connections reached %v; want one target", c, by)
		}
	}
	if by := others["cl1"]; by[first] == 0 {
		t.Errorf("cl1's short connections reached %v, its long one %s; want the same", by, first)
	}
	// The JAP's NAT flow of the long connection goes to the target that answered.
	jap := h.Home(first)
	f, ok := findFlow(jap, "jap", longFrom, g)
	if !ok {
		t.Fatalf("JAP %s has no flow for %s", jap.Name, longFrom)
	}
	if want := netip.AddrPortFrom(addr4Of(t, h, first), LocalPort(g)); f.Target != want || f.State != "established" {
		t.Errorf("JAP flow %+v: want target %s, established", f, want)
	}
}

// Two groups on one anycast IP (TCP port 80 and UDP port 53) reach their own
// targets; the same IP on another port/protocol reaches nobody.
func TestTwoGroupsOnOneAnycastIP(t *testing.T) {
	t.Parallel()
	h := startLab(t, defaultShape)
	ctx := testCtx(t)
	tcp, udp := GroupN(0), GroupN(1)
	if tcp.Addr != udp.Addr || tcp.Proto != router.ProtoTCP || udp.Proto != router.ProtoUDP {
		t.Fatalf("groups %s and %s are not TCP and UDP on one IP", tcp, udp)
	}
	tcpTargets, udpTargets := targetsOf(h, tcp), targetsOf(h, udp)
	for _, n := range tcpTargets {
		if slices.Contains(udpTargets, n) {
			t.Fatalf("target %s is in both groups", n)
		}
	}
	seen := map[router.Group]map[string]int{tcp: {}, udp: {}}
	for _, c := range h.Names(config.RoleClient) {
		for i := 0; i < 3; i++ {
			for _, g := range []router.Group{tcp, udp} {
				msg := fmt.Sprintf("%s %d to %s", c, i, g)
				ans, err := ask(ctx, h, c, g, msg)
				if err != nil {
					t.Fatalf("%s: %v", msg, err)
				}
				seen[g][answeredBy(t, ans, msg, targetsOf(h, g))]++
			}
		}
	}
	t.Logf("%s answered by %v, %s by %v", tcp, seen[tcp], udp, seen[udp])

	// 100.65.0.1:80/udp and 100.65.0.1:53/tcp are no groups.
	noUDP := router.Group{Addr: tcp.Addr, Port: tcp.Port, Proto: router.ProtoUDP}
	noTCP := router.Group{Addr: udp.Addr, Port: udp.Port, Proto: router.ProtoTCP}
	home := h.Home("cl1")
	before := home.Router.Stats()
	errs := make(chan error, 2)
	udpCtx, tcpCtx := shortCtx(t, 1500*time.Millisecond), shortCtx(t, 1500*time.Millisecond)
	go func() {
		ans, err := h.AskUDP(udpCtx, "cl1", noUDP, "anyone?")
		if err == nil {
			err = fmt.Errorf("%s answered %q", noUDP, ans)
		} else {
			err = nil
		}
		errs <- err
	}()
	go func() {
		ans, err := h.AskTCP(tcpCtx, "cl1", noTCP, "anyone?")
		if err == nil {
			err = fmt.Errorf("%s answered %q", noTCP, ans)
		} else {
			err = nil
		}
		errs <- err
	}()
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if err := waitDrops(ctx, home, before, router.DropNoGroup, 2); err != nil {
		t.Error(err)
	}
}

// A target joining through proxy P makes P its JAP, and the group's RAPs,
// and only they, list P.
func TestJoinMakesJAPAndRegistersWithRAPs(t *testing.T) {
	t.Parallel()
	h, events := startLabEvents(t, defaultShape)
	ctx := testCtx(t)
	proxies := h.Names(config.RoleProxy)
	for _, tname := range h.Names(config.RoleTarget) {
		jap := h.Home(tname)
		taddr := addr4Of(t, h, tname)
		for _, s := range h.Node(tname).Groups {
			g, err := router.ParseGroup(s.Group)
			if err != nil {
				t.Fatal(err)
			}
			want := netip.AddrPortFrom(taddr, s.Port)
			if !slices.Contains(jap.Router.Targets(g), want) {
				t.Errorf("%s joined %s through %s, whose targets are %v", tname, g, jap.Name, jap.Router.Targets(g))
			}
			joins := events.match(func(e overlay.Event) bool {
				return e.Kind == "join" && e.Group == g && e.Target == want
			})
			if len(joins) != 1 || joins[0].Proxy != jap.Name || joins[0].Name != tname {
				t.Errorf("join events for %s in %s: %+v, want one at %s", tname, g, joins, jap.Name)
			}
			for _, pn := range proxies {
				if p := h.Proxies[pn]; p != jap && slices.ContainsFunc(p.Router.Targets(g), func(ap netip.AddrPort) bool { return ap.Addr() == taddr }) {
					t.Errorf("%s lists %s as a target of %s too", pn, tname, g)
				}
			}

			raps := jap.Overlay.RAPs(g)
			if len(raps) != config.DefaultRAPReplicas {
				t.Fatalf("RAPs of %s: %v", g, raps)
			}
			for _, pn := range proxies {
				if other := h.Proxies[pn].Overlay.RAPs(g); !slices.Equal(other, raps) {
					t.Errorf("%s thinks the RAPs of %s are %v, %s thinks %v", pn, g, other, jap.Name, raps)
				}
			}
			regs := events.match(func(e overlay.Event) bool {
				return e.Kind == "register" && e.Proxy == jap.Name && e.Group == g
			})
			if len(regs) == 0 || !slices.Equal(regs[0].RAPs, raps) {
				t.Errorf("register events of %s for %s: %+v, want RAPs %v", jap.Name, g, regs, raps)
			}
			// Every RAP lists the JAP with its number of targets; no other proxy lists it.
			wantJAP := router.JAP{Addr: jap.Config.Addr4(), Targets: len(jap.Router.Targets(g)), Weight: len(jap.Router.Targets(g))}
			err = WaitFor(ctx, func() error {
				for _, pn := range proxies {
					listed := slices.ContainsFunc(h.Proxies[pn].Overlay.RAPTable()[g], func(j router.JAP) bool { return j.Addr == wantJAP.Addr })
					isRAP := slices.Contains(raps, pn)
					switch {
					case isRAP && !slices.Contains(h.Proxies[pn].Overlay.RAPTable()[g], wantJAP):
						return fmt.Errorf("RAP %s of %s: table %v, want %+v", pn, g, h.Proxies[pn].Overlay.RAPTable()[g], wantJAP)
					case !isRAP && listed:
						return fmt.Errorf("%s is no RAP of %s but lists JAP %s", pn, g, jap.Name)
					}
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
			// The JAP registers the echo pseudo-group of the group's IP too.
			echo := router.EchoGroup(g.Addr)
			err = WaitFor(ctx, func() error {
				for _, pn := range jap.Overlay.RAPs(echo) {
					if !slices.ContainsFunc(h.Proxies[pn].Overlay.RAPTable()[echo], func(j router.JAP) bool { return j.Addr == wantJAP.Addr }) {
						return fmt.Errorf("RAP %s of %s does not list JAP %s", pn, echo, jap.Name)
					}
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}
	}
}

// An IAP with a cold cache asks a RAP once, then serves new flows of the
// group from its cache until the answer's TTL runs out.
func TestIAPResolvesOnceThenUsesCache(t *testing.T) {
	t.Parallel()
	h, events := startLabEvents(t, defaultShape)
	ctx := testCtx(t)
	for _, tc := range []struct {
		client string
		g      router.Group
	}{
		{"cl1", GroupN(0)}, // p2 → t1 (p1) or t3 (p3), over TCP
		{"cl2", GroupN(1)}, // p3 → t2 (p2) or t4 (p1), over UDP
	} {
		t.Run(tc.client+"-"+router.ProtoName(tc.g.Proto), func(t *testing.T) {
			iap := h.Home(tc.client)
			g := tc.g
			if n := len(iap.Router.Targets(g)); n != 0 {
				t.Fatalf("IAP %s has %d local targets of %s; the test needs it to resolve", iap.Name, n, g)
			}
			sent0 := iap.Overlay.Stats().ResolvesSent
			answered0 := map[string]uint64{}
			for name, p := range h.Proxies {
				answered0[name] = p.Overlay.Stats().ResolvesAnswered
			}
			// japOf maps a JAP's address to the targets joined through it.
			japOf := map[netip.Addr][]string{}
			for _, tn := range targetsOf(h, g) {
				a := h.Home(tn).Config.Addr4()
				japOf[a] = append(japOf[a], tn)
			}

			// exchange does one request on a new flow and checks the IAP's flow of it.
			exchange := func(i int) {
				t.Helper()
				msg := fmt.Sprintf("%s flow %d", tc.client, i)
				var ans string
				var from netip.AddrPort
				var err error
				if g.Proto == router.ProtoTCP {
					var cv *Conversation
					if cv, err = h.DialTCP(ctx, tc.client, g); err != nil {
						t.Fatal(err)
					}
					defer cv.Close()
					from = localAddrPort(t, cv.Conn().LocalAddr())
					ans, err = cv.Ask(ctx, msg)
				} else {
					u := dialUDP(t, h, tc.client, g)
					from = u.local
					ans, err = u.ask(ctx, msg)
				}
				if err != nil {
					t.Fatalf("%s: %v", msg, err)
				}
				who := answeredBy(t, ans, msg, targetsOf(h, g))
				f, ok := findFlow(iap, "iap", from, g)
				if !ok {
					t.Fatalf("IAP %s has no flow for %s → %s", iap.Name, from, g)
				}
				if !slices.Contains(japOf[f.JAP], who) {
					t.Errorf("IAP flow %s → %s sticks to JAP %s, but %s (JAP %s) answered", from, g, f.JAP, who, h.Home(who).Config.Addr4())
				}
			}

			exchange(0)
			resolvedAt := time.Now()
			if d := iap.Overlay.Stats().ResolvesSent - sent0; d != 1 {
				t.Fatalf("first flow: IAP %s sent %d resolves, want 1", iap.Name, d)
			}
			asked := events.match(func(e overlay.Event) bool { return e.Kind == "resolve" && e.Proxy == iap.Name && e.Group == g })
			if len(asked) != 1 || len(asked[0].RAPs) != 1 || !slices.Contains(iap.Overlay.RAPs(g), asked[0].RAPs[0]) {
				t.Fatalf("resolve events of %s for %s: %+v, want one to a RAP of %v", iap.Name, g, asked, iap.Overlay.RAPs(g))
			}
			rap := asked[0].RAPs[0]
			if rap != iap.Name {
				if d := h.Proxies[rap].Overlay.Stats().ResolvesAnswered - answered0[rap]; d != 1 {
					t.Errorf("RAP %s answered %d resolves, want 1", rap, d)
				}
			}
			resolved := events.match(func(e overlay.Event) bool { return e.Kind == "resolved" && e.Proxy == iap.Name && e.Group == g })
			if len(resolved) != 1 || len(resolved[0].JAPs) != len(japOf) {
				t.Errorf("resolved events of %s for %s: %+v, want one with the %d JAPs", iap.Name, g, resolved, len(japOf))
			}
			t.Logf("%s asked RAP %s for %s (RAPs %v); JAPs %+v", iap.Name, rap, g, iap.Overlay.RAPs(g), resolved[0].JAPs)

			for i := 1; i <= 5; i++ {
				exchange(i)
			}
			if elapsed := time.Since(resolvedAt); elapsed > 9*time.Second {
				t.Skipf("the exchanges took %v, too close to the cache TTL to tell", elapsed)
			}
			if d := iap.Overlay.Stats().ResolvesSent - sent0; d != 1 {
				t.Errorf("after 6 flows within the cache TTL: IAP %s sent %d resolves, want 1", iap.Name, d)
			}
		})
	}
}

// IPv6 groups work like IPv4 ones: TCP, UDP and ping.
func TestIPv6Groups(t *testing.T) {
	t.Parallel()
	shape := defaultShape
	shape.IPv6 = true
	h := startLab(t, shape)
	ctx := testCtx(t)
	for _, c := range h.Names(config.RoleClient) {
		for i := 0; i < 2; i++ {
			g := GroupN6(i)
			targets := targetsOf(h, g)
			if len(targets) == 0 || !slices.Equal(targets, targetsOf(h, GroupN(i))) {
				t.Fatalf("%s has targets %v, its IPv4 twin %v", g, targets, targetsOf(h, GroupN(i)))
			}
			var from netip.AddrPort
			var ans string
			msg := fmt.Sprintf("v6 hello from %s", c)
			if g.Proto == router.ProtoTCP {
				cv, err := h.DialTCP(ctx, c, g)
				if err != nil {
					t.Fatal(err)
				}
				from = localAddrPort(t, cv.Conn().LocalAddr())
				ans, err = cv.Ask(ctx, msg)
				cv.Close()
				if err != nil {
					t.Fatalf("%s → %s: %v", c, g, err)
				}
			} else {
				u := dialUDP(t, h, c, g)
				from = u.local
				var err error
				if ans, err = u.ask(ctx, msg); err != nil {
					t.Fatalf("%s → %s: %v", c, g, err)
				}
			}
			who := answeredBy(t, ans, msg, targets)
			if !from.Addr().Is6() || from.Addr() != addrOfFamily(t, h, c, g.Addr) {
				t.Errorf("%s spoke to %s from %s", c, g, from)
			}
			f, ok := findFlow(h.Home(c), "iap", from, g)
			if !ok {
				t.Errorf("IAP %s has no IPv6 flow for %s → %s", h.Home(c).Name, from, g)
			}
			t.Logf("%s → %s answered by %s (JAP %s)", from, g, who, f.JAP)
		}
		if _, err := h.Ping(ctx, c, GroupN6(0).Addr); err != nil {
			t.Errorf("%s ping %s: %v", c, GroupN6(0).Addr, err)
		}
		// The IPv4 twins still work in the same lab.
		for i := 0; i < 2; i++ {
			msg := "v4 hello from " + c
			ans, err := ask(ctx, h, c, GroupN(i), msg)
			if err != nil {
				t.Fatalf("%s → %s: %v", c, GroupN(i), err)
			}
			answeredBy(t, ans, msg, targetsOf(h, GroupN(i)))
		}
	}
}

// Ping to an anycast IP answers while it has a live group, and is dropped
// (no group) when it has none.
func TestPingAnycast(t *testing.T) {
	t.Parallel()
	// Four groups: 100.65.0.1 (t1 at p1, t2 at p2) and 100.65.0.2 (t3 at p3,
	// t4 at p1). cl1's IAP p2 answers for 100.65.0.1 from its local target,
	// and for 100.65.0.2 after resolving the IP's echo group.
	h := startLab(t, Options{Proxies: 3, Clusters: 2, Targets: 4, Clients: 2, Groups: 4})
	ctx := testCtx(t)
	for _, c := range h.Names(config.RoleClient) {
		for _, a := range []netip.Addr{GroupN(0).Addr, GroupN(2).Addr} {
			rtt, err := h.Ping(ctx, c, a)
			if err != nil {
				dumpLab(t, h)
				t.Fatalf("%s ping %s: %v", c, a, err)
			}
			t.Logf("%s ping %s: %v", c, a, rtt)
		}
	}

	none := netip.MustParseAddr("100.65.0.200")
	home := h.Home("cl1")
	before := home.Router.Stats()
	if rtt, err := h.Ping(shortCtx(t, 2*time.Second), "cl1", none); err == nil {
		t.Fatalf("ping %s (no group) answered in %v", none, rtt)
	}
	if err := waitDrops(ctx, home, before, router.DropNoGroup, 1); err != nil {
		t.Errorf("after pinging %s: %v", none, err)
	}
	if d := dropsDelta(home, before); d[router.DropICMPUnsupported] != 0 {
		t.Errorf("IAP %s counted pings to %s as %s: %v", home.Name, none, router.DropICMPUnsupported, d)
	}
}

// A target sending to its own group reaches another target, never itself;
// the only target of a group reaches nobody.
func TestTargetNeverReachesItself(t *testing.T) {
	t.Parallel()
	t.Run("several", func(t *testing.T) {
		t.Parallel()
		// Group 1 (UDP): t2 and t8 at p2, t4 at p1, t6 at p3.
		h := startLab(t, Options{Proxies: 3, Clusters: 2, Targets: 8, Clients: 0, Groups: 2})
		ctx := testCtx(t)
		g := GroupN(1)
		targets := targetsOf(h, g)
		if len(targets) < 3 {
			t.Fatalf("targets of %s: %v", g, targets)
		}
		for _, tn := range targets {
			seen := map[string]int{}
			for i := 0; i < 10; i++ {
				msg := fmt.Sprintf("%s to own group, %d", tn, i)
				ans, err := h.AskUDP(ctx, tn, g, msg) // a fresh socket each time
				if err != nil {
					t.Fatalf("%s: %v", msg, err)
				}
				who := answeredBy(t, ans, msg, targets)
				if who == tn {
					t.Fatalf("%s reached itself: %q", tn, ans)
				}
				seen[who]++
			}
			t.Logf("%s (JAP %s) → %s reached %v", tn, h.Home(tn).Name, g, seen)
		}
	})
	t.Run("alone", func(t *testing.T) {
		t.Parallel()
		// Group 1 (UDP) has t2 (at p2) only.
		h := startLab(t, Options{Proxies: 2, Clusters: 1, Targets: 2, Clients: 1, Groups: 2})
		ctx := testCtx(t)
		g := GroupN(1)
		if targets := targetsOf(h, g); !slices.Equal(targets, []string{"t2"}) {
			t.Fatalf("targets of %s: %v", g, targets)
		}
		// The group works for others.
		ans, err := h.AskUDP(ctx, "cl1", g, "hi")
		if err != nil {
			t.Fatal(err)
		}
		answeredBy(t, ans, "hi", []string{"t2"})

		home := h.Home("t2")
		before := home.Router.Stats()
		if ans, err := h.AskUDP(shortCtx(t, 2*time.Second), "t2", g, "me?"); err == nil {
			t.Fatalf("t2 reached its own group, answered %q", ans)
		}
		if err := waitDrops(ctx, home, before, router.DropNoTarget, 1); err != nil {
			t.Error(err)
		}
	})
}

// Clients whose IAP is not the JAP and clients whose IAP is the JAP both
// reach the group, over TCP and UDP; the IAP's flow says which case it was.
func TestIAPIsOrIsNotJAP(t *testing.T) {
	t.Parallel()
	// t1 serves group 0 (TCP) at p1, t2 group 1 (UDP) at p2; cl1 is
	// attached to p2, cl2 to p1.
	h := startLab(t, Options{Proxies: 2, Clusters: 1, Targets: 2, Clients: 2, Groups: 2})
	ctx := testCtx(t)
	for _, tc := range []struct {
		client, target string
		g              router.Group
		same           bool
	}{
		{"cl2", "t1", GroupN(0), true},
		{"cl1", "t1", GroupN(0), false},
		{"cl1", "t2", GroupN(1), true},
		{"cl2", "t2", GroupN(1), false},
	} {
		iap, jap := h.Home(tc.client), h.Home(tc.target)
		if (iap == jap) != tc.same {
			t.Fatalf("%s is attached to %s, %s to %s: the lab is not the expected shape", tc.client, iap.Name, tc.target, jap.Name)
		}
		msg := fmt.Sprintf("%s via %s to %s", tc.client, iap.Name, tc.g)
		var from netip.AddrPort
		var ans string
		var err error
		if tc.g.Proto == router.ProtoTCP {
			cv, derr := h.DialTCP(ctx, tc.client, tc.g)
			if derr != nil {
				t.Fatal(derr)
			}
			from = localAddrPort(t, cv.Conn().LocalAddr())
			ans, err = cv.Ask(ctx, msg)
			defer cv.Close()
		} else {
			u := dialUDP(t, h, tc.client, tc.g)
			from = u.local
			ans, err = u.ask(ctx, msg)
		}
		if err != nil {
			t.Fatalf("%s: %v", msg, err)
		}
		answeredBy(t, ans, msg, []string{tc.target})

		fi, ok := findFlow(iap, "iap", from, tc.g)
		if !ok {
			t.Fatalf("%s: IAP %s has no flow for %s", msg, iap.Name, from)
		}
		if fi.JAP != jap.Config.Addr4() {
			t.Errorf("%s: IAP flow's JAP is %s, want %s (%s)", msg, fi.JAP, jap.Config.Addr4(), jap.Name)
		}
		fj, ok := findFlow(jap, "jap", from, tc.g)
		if !ok {
			t.Fatalf("%s: JAP %s has no flow for %s", msg, jap.Name, from)
		}
		if fj.IAP != iap.Config.Addr4() || fj.Target != netip.AddrPortFrom(addr4Of(t, h, tc.target), LocalPort(tc.g)) {
			t.Errorf("%s: JAP flow %+v: want IAP %s, target %s", msg, fj, iap.Name, tc.target)
		}
		if tc.same {
			if _, ok := findFlow(iap, "jap", from, tc.g); !ok {
				t.Errorf("%s: IAP == JAP %s has no NAT flow of its own", msg, iap.Name)
			}
		} else if _, ok := findFlow(jap, "iap", from, tc.g); ok {
			t.Errorf("%s: JAP %s has an IAP flow for a client of %s", msg, jap.Name, iap.Name)
		}
		t.Logf("%s: IAP %s, JAP %s (iap == jap: %v)", msg, iap.Name, jap.Name, fi.JAP == iap.Config.Addr4())
	}
}

// Right after start, two proxies whose first control messages to each other
// cross (each resolving at the other) reach each other at once: a proxy
// warms its WireGuard sessions with the mesh when it starts, so crossing
// handshake initiations (which cancel out and leave both sides waiting for
// WireGuard's 5 s retry) do not happen on first contact.
func TestProxiesFirstContactBothWays(t *testing.T) {
	t.Parallel()
	h, err := Start(Options{Proxies: 2, Clusters: 1}, HarnessOptions{Dir: t.TempDir(), Logf: t.Logf, Attach: labAttach, Generated: withRaceTimers(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	p1, p2 := h.Proxies["p1"], h.Proxies["p2"]
	// g12's first RAP is p2, g21's is p1: resolving them sends p1 → p2 and p2 → p1.
	var g12, g21 router.Group
	for i := 1; !g12.Addr.IsValid() || !g21.Addr.IsValid(); i++ {
		g := router.Group{Addr: netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)}), Port: 80, Proto: router.ProtoTCP}
		switch p1.Overlay.RAPs(g)[0] {
		case "p2":
			g12 = g
		case "p1":
			g21 = g
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p1.Overlay.Resolve(g12) }()
	go func() { defer wg.Done(); p2.Overlay.Resolve(g21) }()
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = WaitFor(ctx, func() error {
		if a, b := p2.Overlay.Stats().ResolvesAnswered, p1.Overlay.Stats().ResolvesAnswered; a == 0 || b == 0 {
			return fmt.Errorf("resolves answered: p2 %d, p1 %d", a, b)
		}
		return nil
	})
	elapsed := time.Since(start)
	t.Logf("both resolves reached the other proxy after %v", elapsed)
	if err != nil || elapsed > 4*time.Second {
		t.Errorf("first messages between p1 and p2 took %v (%v); want well under WireGuard's 5 s handshake retry", elapsed, err)
	}
}

// An edge speaks first: a proxy has nothing to send to an edge before the
// edge speaks, so it must not try to handshake with one. (An edge itself
// handshakes with every candidate proxy of its config: emulated anycast
// probes them all, see TestEdgeProbesEveryCandidate.)
func TestEdgesHandshakeWithTheirHomeOnly(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var noEndpoint []string
	logf := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if strings.Contains(msg, "no known endpoint") {
			mu.Lock()
			noEndpoint = append(noEndpoint, msg)
			mu.Unlock()
		}
	}
	// Many edges: whether a device is up before it is configured is a race.
	h, err := Start(Options{Proxies: 3, Clusters: 1, Targets: 2, Clients: 10, Groups: 2}, HarnessOptions{Dir: t.TempDir(), Logf: logf, Attach: labAttach, Generated: withRaceTimers(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	// A target joins once its service answers its check.
	if err := h.ServeTargets(); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(noEndpoint) > 0 {
		t.Errorf("proxies tried to handshake with edges that never spoke to them, %d times; first: %s", len(noEndpoint), noEndpoint[0])
	}
}
