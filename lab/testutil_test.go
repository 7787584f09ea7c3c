package lab

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/tunnel"
)

// eventLog records what the control planes of a lab did.
type eventLog struct {
	mu     sync.Mutex
	start  time.Time
	events []overlay.Event
	at     []time.Duration // since start, one per event
}

func (l *eventLog) add(e overlay.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.at = append(l.at, time.Since(l.start))
	l.mu.Unlock()
}

// dump logs every event with its time, for a test that failed: on a busy
// machine the order of moves, deaths and joins is what explains it.
func (l *eventLog) dump(t *testing.T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, e := range l.events {
		t.Logf("event +%v %s %s %s %s %v %q", l.at[i].Round(time.Millisecond), e.Proxy, e.Kind, e.Name, e.Group, e.Target, e.Reason)
	}
}

// match returns the recorded events for which keep is true.
func (l *eventLog) match(keep func(overlay.Event) bool) []overlay.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []overlay.Event
	for _, e := range l.events {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// startLabEvents is startLab that also records every control-plane event.
func startLabEvents(t *testing.T, shape Options) (*Harness, *eventLog) {
	t.Helper()
	return startLabWith(t, shape, HarnessOptions{})
}

// startLabWith starts a lab with extra harness options (nodes held back,
// files edited before the start) in a temporary directory, serves every
// started target, waits until it is ready, and records every event.
func startLabWith(t *testing.T, shape Options, hopts HarnessOptions) (*Harness, *eventLog) {
	t.Helper()
	log := &eventLog{start: time.Now()}
	hopts.Dir, hopts.Logf = t.TempDir(), t.Logf
	if on := hopts.OnEvent; on != nil {
		hopts.OnEvent = func(e overlay.Event) { log.add(e); on(e) }
	} else {
		hopts.OnEvent = log.add
	}
	if hopts.Attach == (edge.AttachConfig{}) {
		hopts.Attach = labAttach
	}
	hopts.Generated = withRaceTimers(t, hopts.Generated)
	h, err := Start(shape, hopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	// Cleanups run last first: the dump comes before the lab closes.
	t.Cleanup(func() {
		if t.Failed() {
			log.dump(t)
		}
	})
	if err := h.ServeTargets(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return h, log
}

// labRaceTimers are the proxies' health timers in a lab under -race.
// There the tests of this package and of others share 2 cores, and a
// node's answers stall for up to 1.3 s now and then (labAttach). At the
// defaults (a probe each 100 ms, suspected after 3 misses, dead 300 ms
// later unless a helper's relayed answer comes back), proxies declared
// each other dead and back within a second, across a cut link that a
// third cluster still bridged too, and tests saw joins, registrations
// and RAPs move under them. Here a silence is suspected after 800 ms,
// a helper has 600 ms to vouch, and a death takes about 1.4 s.
const labRaceTimers = "probe_interval = \"200ms\"\nprobe_misses = 4\n"

// withRaceTimers is gen followed, under -race, by labRaceTimers in every
// proxy's file.
func withRaceTimers(t *testing.T, gen func(*Lab)) func(*Lab) {
	return func(l *Lab) {
		if gen != nil {
			gen(l)
		}
		if !raceEnabled {
			return
		}
		for _, n := range l.Nodes {
			if n.Role == config.RoleProxy {
				rewrite(t, l.Path(n.Config), "\nrap_replicas =", "\n"+labRaceTimers+"rap_replicas =")
			}
		}
	}
}

// startTarget starts a held target, serves its groups, and waits until it
// has joined them.
func startTarget(t *testing.T, ctx context.Context, h *Harness, name string) {
	t.Helper()
	if err := h.StartNode(name); err != nil {
		t.Fatal(err)
	}
	if err := h.ServeTargets(); err != nil {
		t.Fatal(err)
	}
	if err := h.Edges[name].Target.WaitJoined(ctx); err != nil {
		t.Fatal(err)
	}
}

// shortCtx is a context for something that is expected to time out.
func shortCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ask sends one request to g from an edge over g's protocol (a fresh TCP
// connection or a fresh UDP socket) and returns the answer.
func ask(ctx context.Context, h *Harness, from string, g router.Group, msg string) (string, error) {
	if g.Proto == router.ProtoTCP {
		return h.AskTCP(ctx, from, g, msg)
	}
	return h.AskUDP(ctx, from, g, msg)
}

// addr4Of is an edge's or proxy's IPv4 overlay address, from lab.json.
func addr4Of(t *testing.T, h *Harness, name string) netip.Addr {
	t.Helper()
	n := h.Node(name)
	if n == nil {
		t.Fatalf("no node %q", name)
	}
	for _, a := range n.Address {
		if a.Is4() {
			return a
		}
	}
	t.Fatalf("%s has no IPv4 address", name)
	return netip.Addr{}
}

// addrOfFamily is a node's overlay address of the family of like.
func addrOfFamily(t *testing.T, h *Harness, name string, like netip.Addr) netip.Addr {
	t.Helper()
	for _, a := range h.Node(name).Address {
		if a.Is4() == like.Is4() {
			return a
		}
	}
	t.Fatalf("%s has no address of the family of %s", name, like)
	return netip.Addr{}
}

// homeOf is the proxy (name) an edge is attached to.
func homeOf(h *Harness, edge string) *node.Proxy {
	return h.Proxies[h.Node(edge).Home]
}

// findFlow returns the flow of kind at p whose client is c and group g.
func findFlow(p *node.Proxy, kind string, c netip.AddrPort, g router.Group) (router.Flow, bool) {
	for _, f := range p.Router.Flows() {
		if f.Kind == kind && f.Client == c && f.Group == g {
			return f, true
		}
	}
	return router.Flow{}, false
}

// localAddrPort is the local address of a connection as netip.
func localAddrPort(t *testing.T, a fmt.Stringer) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatalf("local address %s: %v", a, err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// udpAsker is a UDP socket of an edge connected to a group: one flow.
type udpAsker struct {
	c interface {
		Write([]byte) (int, error)
		Read([]byte) (int, error)
		SetReadDeadline(time.Time) error
		Close() error
	}
	local netip.AddrPort
}

func dialUDP(t *testing.T, h *Harness, from string, g router.Group) *udpAsker {
	t.Helper()
	e := h.Edges[from]
	la := addrOfFamily(t, h, from, g.Addr)
	c, err := e.Host.Net.DialUDPAddrPort(netip.AddrPortFrom(la, 0), netip.AddrPortFrom(g.Addr, g.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpAsker{c: c, local: localAddrPort(t, c.LocalAddr())}
}

// ask sends msg (again every second) until an answer comes or ctx ends.
func (u *udpAsker) ask(ctx context.Context, msg string) (string, error) {
	buf := make([]byte, 2048)
	for {
		if _, err := u.c.Write([]byte(msg)); err != nil {
			return "", err
		}
		u.c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := u.c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s: no answer: %w", u.local, ctx.Err())
		}
	}
}

// dropsDelta is how much each drop counter of p grew since before.
func dropsDelta(p *node.Proxy, before router.Stats) map[router.DropReason]uint64 {
	now := p.Router.Stats()
	out := map[router.DropReason]uint64{}
	for r := router.DropReason(0); r < router.NumDropReasons; r++ {
		if d := now.Drops[r] - before.Drops[r]; d > 0 {
			out[r] = d
		}
	}
	return out
}

// waitDrops waits until p counted at least n more drops for reason than in
// before.
func waitDrops(ctx context.Context, p *node.Proxy, before router.Stats, reason router.DropReason, n uint64) error {
	return WaitFor(ctx, func() error {
		if d := dropsDelta(p, before); d[reason] < n {
			return fmt.Errorf("%s drops %v: want at least %d %s", p.Name, d, n, reason)
		}
		return nil
	})
}

// checkAllWork asks every group of h from each of the given (netstack)
// clients, so that every proxy is seen forwarding as IAP or JAP.
func checkAllWork(t *testing.T, ctx context.Context, h *Harness, clients []string) {
	t.Helper()
	for _, c := range clients {
		for _, g := range h.groups() {
			ans, err := ask(ctx, h, c, g, "still there? "+c)
			if err != nil {
				t.Fatalf("%s → %s: %v", c, g, err)
			}
			answeredBy(t, ans, "still there? "+c, targetsOf(h, g))
		}
	}
}

// sortedKeys lists a set's members in order, for messages.
func sortedKeys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// dumpLab logs what every proxy knows, for a failing test: its WireGuard
// peers (handshake age, bytes), RAP table, control-plane and router counters.
func dumpLab(t *testing.T, h *Harness) {
	t.Helper()
	names := map[string]string{} // public key (hex) → node name
	for _, n := range h.Lab.Nodes {
		names[fmt.Sprintf("%x", n.PublicKey[:])] = n.Name
	}
	for _, pn := range h.Names("proxy") {
		p := h.Proxies[pn]
		if p == nil {
			continue // killed, or held back
		}
		s, err := p.Device.IpcGet()
		if err != nil {
			t.Logf("%s: %v", pn, err)
			continue
		}
		var peers []string
		var cur string
		for _, line := range strings.Split(s, "\n") {
			k, v, _ := strings.Cut(line, "=")
			switch k {
			case "public_key":
				cur = names[v]
			case "last_handshake_time_sec":
				if v == "0" {
					peers = append(peers, cur+":never")
				} else {
					var sec int64
					fmt.Sscan(v, &sec)
					peers = append(peers, fmt.Sprintf("%s:%ds", cur, time.Now().Unix()-sec))
				}
			case "rx_bytes", "tx_bytes":
				peers[len(peers)-1] += "/" + v
			}
		}
		st := p.Router.Stats()
		var drops []string
		for r := router.DropReason(1); r < router.NumDropReasons; r++ {
			if st.Drops[r] > 0 {
				drops = append(drops, fmt.Sprintf("%s=%d", r, st.Drops[r]))
			}
		}
		t.Logf("%s: peers (handshake age/tx/rx) %v\n\tRAP table %v\n\toverlay %+v\n\trouter fwd=%d ctl=%d queued=%d drops %v",
			pn, peers, p.Overlay.RAPTable(), p.Overlay.Stats(), st.Forwarded, st.Control, st.Queued, drops)
	}
}

// dumpViews logs how every proxy sees every other (state, incarnation,
// RTT, reachability).
func dumpViews(t *testing.T, h *Harness) {
	t.Helper()
	for _, pn := range h.Names("proxy") {
		p := h.Proxies[pn]
		if p == nil {
			continue
		}
		var views []string
		for _, m := range p.Overlay.Members() {
			v := fmt.Sprintf("%s:%v/%d/%v", m.Name, m.State, m.Incarnation, m.RTT.Round(time.Microsecond))
			if m.Unreachable {
				v += "/unreachable"
			}
			views = append(views, v)
		}
		t.Logf("%s sees %v", pn, views)
	}
}

// peerTraffic reads, for every peer of d, the bytes sent to and received
// from it and whether a handshake completed, keyed by the peer's node name.
func peerTraffic(t *testing.T, h *Harness, d *tunnel.Device) map[string]peerStats {
	t.Helper()
	names := map[string]string{}
	for _, n := range h.Lab.Nodes {
		names[hex.EncodeToString(n.PublicKey[:])] = n.Name
	}
	s, err := d.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]peerStats{}
	cur := ""
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "public_key":
			cur = names[v]
		case "tx_bytes", "rx_bytes", "last_handshake_time_sec":
			n, _ := strconv.ParseUint(v, 10, 64)
			ps := out[cur]
			switch k {
			case "tx_bytes":
				ps.tx = n
			case "rx_bytes":
				ps.rx = n
			default:
				ps.handshake = n != 0
			}
			out[cur] = ps
		}
	}
	return out
}

type peerStats struct {
	tx, rx    uint64
	handshake bool
}

// liveConnection opens a TCP connection from client to g, which must have
// two targets, and exchanges a first line on it. It returns the
// connection (closed when the test ends), g's targets, the one that
// answered and the other.
func liveConnection(t *testing.T, ctx context.Context, h *Harness, client string, g router.Group) (long *Conversation, targets []string, who, other string) {
	t.Helper()
	targets = targetsOf(h, g)
	if len(targets) != 2 {
		t.Fatalf("group %s has targets %v, want 2", g, targets)
	}
	long, err := h.DialTCP(ctx, client, g)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { long.Close() })
	ans, err := long.Ask(ctx, "line 0")
	if err != nil {
		t.Fatal(err)
	}
	who = answeredBy(t, ans, "line 0", targets)
	other = targets[0]
	if other == who {
		other = targets[1]
	}
	return long, targets, who, other
}
