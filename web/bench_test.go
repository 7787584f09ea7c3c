package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/pias-net/pias/lab"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/router"
)

// busyProxy is a running proxy with the given number of groups (a local
// target each) and live UDP flows through them.
func busyProxy(b *testing.B, groups, flows int) *node.Proxy {
	b.Helper()
	// One target, held back, that the proxy's file lets join every
	// group; the benchmark joins it itself.
	h, err := lab.Start(lab.Options{Proxies: 1, Clusters: 1, Targets: 1, Groups: groups}, lab.HarnessOptions{Dir: b.TempDir(), Hold: []string{"t1"}, Generated: func(l *lab.Lab) {
		path := filepath.Join(l.Dir, "p1.toml")
		data, err := os.ReadFile(path)
		if err == nil {
			all, _ := json.Marshal(l.Groups)
			text := regexp.MustCompile(`(?m)^groups = .*$`).ReplaceAllLiteralString(string(data), "groups = "+string(all))
			// Room for the flows: both flow tables hold them.
			err = os.WriteFile(path, []byte("max_flows = 262144\n"+text), 0o644)
		}
		if err != nil {
			b.Fatal(err)
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	p := h.Proxies["p1"]
	var gs []router.Group // the UDP groups, for the flows
	t1 := h.Node("t1").Address[0]
	for i := range groups {
		g := lab.GroupN(i)
		p.Router.AddTargetWeight(g, netip.AddrPortFrom(t1, lab.LocalPort(g)), 1)
		if g.Proto == router.ProtoUDP {
			gs = append(gs, g)
		}
	}
	buf := make([]byte, router.Headroom+128)
	now := int64(time.Hour) // ahead of the proxy's clock: nothing expires meanwhile
	for i := 0; i < flows; i++ {
		// 100 flows per client address, so that no client is held to its
		// share of a table.
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(128 + i/100/250), byte(1 + i/100%250)}), uint16(1024+i%100))
		n, err := router.BuildUDP(buf[router.Headroom:], src, netip.AddrPortFrom(gs[i%len(gs)].Addr, gs[i%len(gs)].Port), []byte("q"))
		if err != nil {
			b.Fatal(err)
		}
		if res := p.Router.Route(buf, router.Headroom, router.Headroom+n, now); res.Action != router.Forward {
			b.Fatalf("flow %d: %+v", i, res)
		}
	}
	if st := p.Router.Stats(); st.JAPFlows < flows {
		b.Fatalf("%d JAP flows, want %d", st.JAPFlows, flows)
	}
	return p
}

// BenchmarkMetrics100kFlows1000Groups is the time to serve /metrics, over
// HTTP on loopback, on a proxy with 100k live flows and 1000 groups.
func BenchmarkMetrics100kFlows1000Groups(b *testing.B) {
	p := busyProxy(b, 1000, 100_000)
	s, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	s.Serve(ProxySource(p))
	url := s.URL() + "metrics"
	var size int64
	b.ReportAllocs()
	for b.Loop() {
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		size, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.ReportMetric(float64(size), "bytes/scrape")
}

// BenchmarkView100kFlows1000Groups is the time to answer /api/view (what
// the map fetches) on the same proxy.
func BenchmarkView100kFlows1000Groups(b *testing.B) {
	p := busyProxy(b, 1000, 100_000)
	src := ProxySource(p)
	b.ReportAllocs()
	for b.Loop() {
		src.View(time.Now())
	}
}
