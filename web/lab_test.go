package web

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/lab"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// webLab is a running in-process lab with an HTTP listener on every proxy.
type webLab struct {
	h       *lab.Harness
	mu      sync.Mutex
	servers map[string]*Server // by proxy name
	start   time.Time
	log     []string // events and node logs, shown if the test fails
}

func (l *webLab) event(e overlay.Event) {
	l.logf("event %s %s %s %s %s %q", e.Proxy, e.Kind, e.Name, e.Group, e.Target, e.Reason)
	if s := l.server(e.Proxy); s != nil {
		s.Event(e)
	}
}

// logf keeps a line of the lab's story, shown if the test fails.
func (l *webLab) logf(format string, args ...any) {
	line := fmt.Sprintf("%7.3fs ", time.Since(l.start).Seconds()) + fmt.Sprintf(format, args...)
	l.mu.Lock()
	l.log = append(l.log, line)
	l.mu.Unlock()
}

// server is the named proxy's listener.
func (l *webLab) server(name string) *Server {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.servers[name]
}

func startWebLab(t *testing.T, shape lab.Options) *webLab {
	t.Helper()
	l := &webLab{servers: map[string]*Server{}, start: time.Now()}
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Logf("the lab's events and logs:\n%s", strings.Join(l.log, "\n"))
		}
	})
	// Listeners first, so that no event of the start is lost.
	for i := 1; i <= shape.Proxies; i++ {
		name := fmt.Sprintf("p%d", i)
		l.servers[name] = listen(t, "127.0.0.1:0", "")
	}
	h, err := lab.Start(shape, lab.HarnessOptions{Dir: t.TempDir(), OnEvent: l.event, Logf: l.logf, Attach: edge.AttachConfig{MinGain: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	l.h = h
	for name, p := range h.Proxies {
		l.servers[name].Serve(ProxySource(p))
	}
	if err := h.ServeTargets(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return l
}

// scrape fetches and parses a proxy's /metrics with the official parser.
func scrape(t *testing.T, s *Server) (map[string]*dto.MetricFamily, int) {
	t.Helper()
	resp, err := http.Get(s.URL() + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s", resp.Status)
	}
	var body strings.Builder
	fams, err := new(expfmt.TextParser).TextToMetricFamilies(teeReader{resp.Body, &body})
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body.String())
	}
	return fams, body.Len()
}

type teeReader struct {
	r interface{ Read([]byte) (int, error) }
	w *strings.Builder
}

func (t teeReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.w.Write(p[:n])
	return n, err
}

// value is the value of the sample of fam whose labels include want
// (name, value pairs); ok false if there is none.
func value(fams map[string]*dto.MetricFamily, fam string, want ...string) (float64, bool) {
	f := fams[fam]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		default:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// Every proxy of a running lab answers a scrape the official parser
// reads, with the families of the list.
func TestScrapeLab(t *testing.T) {
	l := startWebLab(t, lab.Options{Proxies: 3, Clusters: 2, Targets: 3, Groups: 2, Clients: 1})
	// RTTs come after a few probes answered.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := lab.WaitFor(ctx, func() error {
		for name := range l.h.Proxies {
			if fams, _ := scrape(t, l.server(name)); len(fams["pias_member_rtt_seconds"].GetMetric()) != 2 {
				return fmt.Errorf("%s: RTTs %v", name, fams["pias_member_rtt_seconds"])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Traffic: a TCP and a UDP group asked from the client, an anycast
	// address pinged.
	home := l.h.Home("cl1")
	before, _ := scrape(t, l.server(home.Config.Name))
	tg, ug := lab.GroupN(0), lab.GroupN(1)
	if _, err := l.h.AskTCP(ctx, "cl1", tg, "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.h.AskUDP(ctx, "cl1", ug, "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.h.Ping(ctx, "cl1", tg.Addr); err != nil {
		t.Fatal(err)
	}
	checkTraffic(t, l, home, before, tg, ug)

	for name := range l.h.Proxies {
		fams, size := scrape(t, l.server(name))
		t.Logf("%s: %d bytes, %d families", name, size, len(fams))
		for _, f := range []string{
			"pias_forwarded_packets_total", "pias_forwarded_bytes_total", "pias_dropped_packets_total",
			"pias_flows", "pias_new_flows_total", "pias_rap_lookups_total", "pias_resolves_sent_total",
			"pias_control_messages_total", "pias_members", "pias_member_up", "pias_member_rtt_seconds",
			"pias_member_deaths_total", "pias_rap_groups", "pias_group_targets", "pias_build_info",
			"wireguard_peer_receive_bytes_total", "wireguard_peer_last_handshake_seconds", "pias_events_total",
		} {
			if fams[f] == nil {
				t.Errorf("%s: no %s", name, f)
			}
		}
		if v, _ := value(fams, "pias_members", "state", "alive"); v != 2 {
			t.Errorf("%s: %v others alive, want 2", name, v)
		}
		if v, _ := value(fams, "pias_control_messages_total", "type", "probe", "direction", "sent"); v == 0 {
			t.Errorf("%s: no probe sent", name)
		}
	}
	// The JAPs count every target of every group once.
	var got, want float64
	for name := range l.h.Proxies {
		fams, _ := scrape(t, l.server(name))
		for _, m := range fams["pias_group_targets"].GetMetric() {
			got += m.GetGauge().GetValue()
		}
	}
	for _, n := range l.h.Lab.Nodes {
		want += float64(len(n.Groups))
	}
	if got != want || want == 0 {
		t.Errorf("pias_group_targets sum to %v over the lab, want %v", got, want)
	}

	// The edges: a target and a client.
	exposed := map[string]bool{}
	for name := range l.h.Proxies {
		fams, _ := scrape(t, l.server(name))
		for f := range fams {
			exposed[f] = true
		}
	}
	for _, name := range []string{"t1", "cl1"} {
		s := listen(t, "127.0.0.1:0", "")
		s.Serve(EdgeSource(l.h.Edges[name]))
		fams, size := scrape(t, s)
		t.Logf("%s: %d bytes, %d families", name, size, len(fams))
		if v, ok := value(fams, "pias_edge_attached", "proxy", l.h.Edges[name].Config.Proxies[0].Name); !ok || v != 1 {
			t.Errorf("%s: pias_edge_attached %v %v", name, v, ok)
		}
		for f := range fams {
			exposed[f] = true
		}
	}
	if v, _ := value(exposedFams(t, l, "t1"), "pias_edge_groups", "state", "joined"); v != 1 {
		t.Errorf("t1: pias_edge_groups{state=joined} %v", v)
	}
	checkDashboard(t, exposed, false)
}

// caMetrics are the families only a proxy in CA mode writes.
var caMetrics = map[string]bool{
	"pias_cert_expiry_timestamp_seconds": true, "pias_revocation_serial": true,
	"pias_edges_admitted": true, "pias_cert_hellos_refused_total": true,
}

// checkDashboard checks that every metric the Grafana dashboard asks for
// is exposed: those of CA mode (ca) or the others.
func checkDashboard(t *testing.T, exposed map[string]bool, ca bool) {
	t.Helper()
	dash, err := os.ReadFile("../scripts/grafana-pias.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`\b(?:pias|wireguard)_[a-z_]+`).FindAllString(string(dash), -1) {
		if caMetrics[name] == ca && !exposed[name] {
			t.Errorf("scripts/grafana-pias.json asks for %s, which no node exposes", name)
		}
	}
}

// checkTraffic checks the router's counters after the client asked tg
// (TCP) and ug (UDP) once each and pinged tg's address: summed over the
// lab, packets forwarded by every role it took, with their bytes, and
// flows of both protocols; at the client's home, a cache lookup for each
// group that has no target there, which a miss starts (before is the
// home's scrape from before the traffic).
func checkTraffic(t *testing.T, l *webLab, home *node.Proxy, before map[string]*dto.MetricFamily, tg, ug router.Group) {
	t.Helper()
	sum := map[string]float64{}
	add := func(fams map[string]*dto.MetricFamily, fam, label, v string) {
		x, ok := value(fams, fam, label, v)
		if !ok {
			t.Errorf("no %s{%s=%q}", fam, label, v)
		}
		sum[fam+"/"+v] += x
	}
	for name := range l.h.Proxies {
		fams, _ := scrape(t, l.server(name))
		for _, r := range []string{"ingress", "join", "reply", "echo"} {
			add(fams, "pias_forwarded_packets_total", "role", r)
			add(fams, "pias_forwarded_bytes_total", "role", r)
		}
		for _, p := range []string{"tcp", "udp"} {
			for _, side := range []string{"iap", "jap"} {
				for _, fam := range []string{"pias_flows", "pias_new_flows_total"} {
					v, ok := value(fams, fam, "side", side, "proto", p)
					if !ok {
						t.Errorf("no %s{side=%q,proto=%q}", fam, side, p)
					}
					sum[fam+"/"+p] += v
				}
			}
		}
	}
	// Each role forwards at least one packet, each of at least an IP header.
	remote := len(home.Router.Targets(tg)) == 0 || len(home.Router.Targets(ug)) == 0
	for _, r := range []string{"join", "reply", "echo", "ingress"} {
		p, b := sum["pias_forwarded_packets_total/"+r], sum["pias_forwarded_bytes_total/"+r]
		if r == "ingress" && !remote {
			continue // the client's home has targets of both groups
		}
		if p == 0 || b < 20*p {
			t.Errorf("role %s: %v packets, %v bytes", r, p, b)
		}
	}
	if sum["pias_new_flows_total/tcp"] < 2 || sum["pias_new_flows_total/udp"] < 2 {
		t.Errorf("new flows: %v tcp, %v udp; want both sides of each", sum["pias_new_flows_total/tcp"], sum["pias_new_flows_total/udp"])
	}
	if sum["pias_flows/udp"] < 2 {
		t.Errorf("%v live UDP flows, want the IAP's and the JAP's", sum["pias_flows/udp"])
	}
	after, _ := scrape(t, l.server(home.Config.Name))
	lookups := func(fams map[string]*dto.MetricFamily, result string) float64 {
		v, _ := value(fams, "pias_rap_lookups_total", "result", result)
		return v
	}
	want := 0.0
	for _, g := range []router.Group{tg, ug} {
		if len(home.Router.Targets(g)) == 0 {
			want++
		}
	}
	if got := lookups(after, "miss") - lookups(before, "miss"); got < want {
		t.Errorf("%s: %v lookup misses, want at least %v (the groups with no target there)", home.Config.Name, got, want)
	}
	t.Logf("home %s, groups elsewhere: %v; forwarded over the lab: %v", home.Config.Name, want, sum)
}

// exposedFams scrapes a fresh listener on the named edge.
func exposedFams(t *testing.T, l *webLab, name string) map[string]*dto.MetricFamily {
	s := listen(t, "127.0.0.1:0", "")
	s.Serve(EdgeSource(l.h.Edges[name]))
	fams, _ := scrape(t, s)
	return fams
}

// A proxy killed: every other proxy's death counter goes up by one, and
// its member gauges show it dead.
func TestScrapeSeesDeath(t *testing.T) {
	l := startWebLab(t, lab.Options{Proxies: 4, Clusters: 2, Targets: 2, Groups: 1})
	before := map[string]float64{}
	for name := range l.h.Proxies {
		fams, _ := scrape(t, l.server(name))
		before[name], _ = value(fams, "pias_member_deaths_total")
		if v, _ := value(fams, "pias_members", "state", "dead"); v != 0 {
			t.Fatalf("%s: %v dead before the kill", name, v)
		}
	}
	const victim = "p2"
	killed := time.Now()
	if err := l.h.KillProxy(victim); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := lab.WaitFor(ctx, func() error {
		for name := range l.h.Proxies {
			fams, _ := scrape(t, l.server(name))
			if v, _ := value(fams, "pias_member_deaths_total"); v != before[name]+1 {
				return fmt.Errorf("%s: pias_member_deaths_total %v, was %v", name, v, before[name])
			}
			if v, _ := value(fams, "pias_members", "state", "dead"); v != 1 {
				return fmt.Errorf("%s: pias_members{state=dead} %v", name, v)
			}
			if v, ok := value(fams, "pias_member_up", "member", victim); !ok || v != 0 {
				return fmt.Errorf("%s: pias_member_up{member=%s} %v %v", name, victim, v, ok)
			}
			if v, _ := value(fams, "pias_member_death_detect_seconds_total"); v <= 0 || v > 10 {
				return fmt.Errorf("%s: detect time %v", name, v)
			}
			if v, _ := value(fams, "pias_events_total", "kind", "dead"); v != 1 {
				return fmt.Errorf("%s: pias_events_total{kind=dead} %v", name, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("every proxy's metrics show %s dead %v after the kill", victim, time.Since(killed).Round(time.Millisecond))
}

// A CA lab's proxies expose their certificate's expiry, the revocation
// list they hold, the edges they admitted, and the hellos they refused: a
// revoked target, started again, is refused.
func TestScrapeCA(t *testing.T) {
	l := startWebLab(t, lab.Options{Proxies: 3, Clusters: 2, Targets: 2, Clients: 1, Groups: 2, CA: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	edges := float64(len(l.h.Edges))
	admitted := func() (float64, error) {
		n := 0.0
		for name := range l.h.Proxies {
			fams, _ := scrape(t, l.server(name))
			v, ok := value(fams, "pias_edges_admitted", "mode", "certificate")
			if !ok {
				return 0, fmt.Errorf("%s: no pias_edges_admitted", name)
			}
			n += v
		}
		return n, nil
	}
	for name := range l.h.Proxies {
		fams, _ := scrape(t, l.server(name))
		exp, _ := value(fams, "pias_cert_expiry_timestamp_seconds")
		if now := float64(time.Now().Unix()); exp <= now || exp > now+20*365*86400 {
			t.Errorf("%s: certificate expires at %v, now %v", name, exp, now)
		}
		if v, ok := value(fams, "pias_revocation_serial"); !ok || v != 1 {
			t.Errorf("%s: revocation serial %v %v, want the lab's first list, 1", name, v, ok)
		}
		if v, ok := value(fams, "pias_cert_hellos_refused_total"); !ok || v != 0 {
			t.Errorf("%s: %v hellos refused before any was bad", name, v)
		}
	}
	// Every edge is admitted by one proxy at least (its home, and any
	// other it says hello to).
	if err := lab.WaitFor(ctx, func() error {
		if n, err := admitted(); err != nil || n < edges {
			return fmt.Errorf("%v edges admitted over the lab, want at least %v (%v)", n, edges, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	admittedBefore, _ := admitted()
	exposed := map[string]bool{}
	for name := range l.h.Proxies {
		fams, _ := scrape(t, l.server(name))
		for f := range fams {
			exposed[f] = true
		}
	}
	for f := range caMetrics {
		if !exposed[f] {
			t.Errorf("no %s", f)
		}
	}
	checkDashboard(t, exposed, true)

	// Revoke t1, reload p1 (as SIGHUP does): every proxy takes list 2 and
	// cuts t1 off; t1 started again is refused, and told.
	if _, err := l.h.Lab.Revoke(time.Now(), "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.h.ReloadProxy("p1"); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitFor(ctx, func() error {
		for name := range l.h.Proxies {
			fams, _ := scrape(t, l.server(name))
			if v, _ := value(fams, "pias_revocation_serial"); v != 2 {
				return fmt.Errorf("%s: revocation serial %v", name, v)
			}
		}
		if n, _ := admitted(); n >= admittedBefore {
			return fmt.Errorf("%v edges admitted, as many as before the revocation", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	l.h.CloseEdge("t1")
	if err := l.h.StartNode("t1"); err != nil {
		t.Logf("t1 started again: %v", err)
	}
	if err := lab.WaitFor(ctx, func() error {
		n := 0.0
		for name := range l.h.Proxies {
			fams, _ := scrape(t, l.server(name))
			v, _ := value(fams, "pias_cert_hellos_refused_total")
			n += v
		}
		if n == 0 {
			return fmt.Errorf("no hello refused")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
