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
	"github.com/pias-net/pias/overlay"
)

// webLab is a running in-process lab with an HTTP listener on every proxy.
type webLab struct {
	h       *lab.Harness
	mu      sync.Mutex
	servers map[string]*Server // by proxy name
}

func (l *webLab) event(e overlay.Event) {
	l.mu.Lock()
	s := l.servers[e.Proxy]
	l.mu.Unlock()
	if s != nil {
		s.Event(e)
	}
}

// server is the named proxy's listener.
func (l *webLab) server(name string) *Server {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.servers[name]
}

func startWebLab(t *testing.T, shape lab.Options) *webLab {
	t.Helper()
	l := &webLab{servers: map[string]*Server{}}
	// Listeners first, so that no event of the start is lost.
	for i := 1; i <= shape.Proxies; i++ {
		name := fmt.Sprintf("p%d", i)
		l.servers[name] = listen(t, "127.0.0.1:0", "")
	}
	h, err := lab.Start(shape, lab.HarnessOptions{Dir: t.TempDir(), OnEvent: l.event, Attach: edge.AttachConfig{MinGain: 200 * time.Millisecond}})
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
	for name := range l.h.Proxies {
		fams, size := scrape(t, l.server(name))
		t.Logf("%s: %d bytes, %d families", name, size, len(fams))
		for _, f := range []string{
			"pias_forwarded_packets_total", "pias_dropped_packets_total", "pias_flows", "pias_resolves_sent_total",
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
	// Every metric the Grafana dashboard asks for is exposed.
	dash, err := os.ReadFile("../scripts/grafana-pias.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`\b(?:pias|wireguard)_[a-z_]+`).FindAllString(string(dash), -1) {
		if !exposed[name] {
			t.Errorf("scripts/grafana-pias.json asks for %s, which no node exposes", name)
		}
	}
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
