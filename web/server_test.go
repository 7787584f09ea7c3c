package web

import (
	"bytes"
	"errors"
	"io"

	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// fakeSource is a Source of fixed content.
type fakeSource struct{}

func (fakeSource) View(now time.Time) View {
	return View{Node: "p1", Role: "proxy", Time: now, Proxies: []ProxyView{{Name: "p1", State: "alive", Self: true}}}
}

func (fakeSource) WriteMetrics(m *Metrics) {
	m.Family("pias_test_total", "counter", "A test.")
	m.Count(7, "name", "a\"b\\c\nd")
}

const token = "0123456789abcdef0123"

func listen(t *testing.T, addr, tok string) *Server {
	t.Helper()
	s, err := Listen(netip.MustParseAddrPort(addr), tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func get(t *testing.T, c *http.Client, url, auth string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestToken(t *testing.T) {
	s := listen(t, "127.0.0.1:0", token)
	s.Serve(fakeSource{})
	c := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range []struct {
		name, path, auth string
		want             int
	}{
		{"missing", "metrics", "", 401},
		{"wrong", "metrics", "Bearer 0123456789abcdef0124", 401},
		{"not bearer", "metrics", "Basic " + token, 401},
		{"prefix of the token", "metrics", "Bearer " + token[:16], 401},
		{"right", "metrics", "Bearer " + token, 200},
		{"page missing", "", "", 401},
		{"page wrong token in the address", "?token=nope", "", 401},
		{"view missing", "api/view", "", 401},
		{"events missing", "events", "", 401},
		{"view right", "api/view", "Bearer " + token, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := get(t, c, s.URL()+tc.path, tc.auth); code != tc.want {
				t.Fatalf("got %d %q, want %d", code, body, tc.want)
			}
		})
	}
	// A browser: /?token= sets the cookie, then the page and the API answer.
	jar, _ := cookiejar.New(nil)
	bc := &http.Client{Timeout: 5 * time.Second, Jar: jar}
	if code, body := get(t, bc, s.URL()+"?token="+token, ""); code != 200 || !strings.Contains(body, "<svg") {
		t.Fatalf("page with token: %d %.80q", code, body)
	}
	if code, _ := get(t, bc, s.URL()+"api/view", ""); code != 200 {
		t.Fatalf("view with the cookie: %d", code)
	}
}

func TestListenErrors(t *testing.T) {
	if _, err := Listen(netip.MustParseAddrPort("0.0.0.0:0"), ""); !errors.Is(err, ErrTokenRequired) {
		t.Fatalf("public address without a token: %v", err)
	}
	if _, err := Listen(netip.MustParseAddrPort("[::]:0"), ""); !errors.Is(err, ErrTokenRequired) {
		t.Fatalf("public IPv6 address without a token: %v", err)
	}
	s := listen(t, "127.0.0.1:0", "")
	_, err := Listen(s.Addr(), "")
	if !errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("port in use: %v", err)
	}
	// 192.0.2.1 (TEST-NET-1) is no local address: nothing is sent.
	if _, err := Listen(netip.MustParseAddrPort("192.0.2.1:9586"), token); err == nil {
		t.Fatal("an address not of this host: no error")
	}
}

func TestNotServingYet(t *testing.T) {
	s := listen(t, "127.0.0.1:0", "")
	if code, _ := get(t, http.DefaultClient, s.URL()+"metrics", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("before Serve: %d", code)
	}
}

func TestMetricsParse(t *testing.T) {
	s := listen(t, "127.0.0.1:0", "")
	s.Serve(fakeSource{})
	s.Event(overlay.Event{Proxy: "p1", Kind: overlay.EventDead, Name: "p2"})
	code, body := get(t, http.DefaultClient, s.URL()+"metrics", "")
	if code != 200 {
		t.Fatal(code)
	}
	fams, err := new(expfmt.TextParser).TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	f := fams["pias_test_total"]
	if f == nil || f.GetMetric()[0].GetLabel()[0].GetValue() != "a\"b\\c\nd" || f.GetMetric()[0].GetCounter().GetValue() != 7 {
		t.Fatalf("pias_test_total: %v", f)
	}
	if f := fams["pias_events_total"]; f == nil || f.GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Fatalf("pias_events_total: %v", f)
	}
	if fams["pias_build_info"] == nil {
		t.Fatal("no pias_build_info")
	}
}

// The event stream delivers an event published after it opened, and
// /api/events lists it.
func TestEventStream(t *testing.T) {
	s := listen(t, "127.0.0.1:0", "")
	s.Serve(fakeSource{})
	resp, err := http.Get(s.URL() + "events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatal(ct)
	}
	// The stream is open once the server counts it.
	deadline := time.Now().Add(5 * time.Second)
	for _, _, n := s.hub.stats(); n == 0; _, _, n = s.hub.stats() {
		if time.Now().After(deadline) {
			t.Fatal("stream not open")
		}
		time.Sleep(5 * time.Millisecond)
	}
	g, _ := router.ParseGroup("100.65.0.1:80/tcp")
	s.Event(overlay.Event{Proxy: "p1", Kind: overlay.EventJoin, Group: g, Name: "t\n1"})
	buf := make([]byte, 4096)
	var got bytes.Buffer
	for !bytes.Contains(got.Bytes(), []byte("\n\n")) || !bytes.Contains(got.Bytes(), []byte("data: ")) {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("%v after %q", err, got.String())
		}
	}
	if !strings.Contains(got.String(), `"kind":"join"`) || !strings.Contains(got.String(), `"name":"t\n1"`) {
		t.Fatalf("stream: %q", got.String())
	}
	_, body := get(t, http.DefaultClient, s.URL()+"api/events", "")
	if !strings.Contains(body, `"group":"100.65.0.1:80/tcp"`) {
		t.Fatalf("api/events: %s", body)
	}
}

// A stream past MaxStreams is refused, and the others go on.
func TestStreamLimit(t *testing.T) {
	s := listen(t, "127.0.0.1:0", "")
	s.Serve(fakeSource{})
	for i := 0; i < MaxStreams; i++ {
		resp, err := http.Get(s.URL() + "events")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != 200 {
			t.Fatalf("stream %d: %d", i, resp.StatusCode)
		}
	}
	if code, _ := get(t, http.DefaultClient, s.URL()+"events", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("stream %d: %d", MaxStreams+1, code)
	}
	if code, _ := get(t, http.DefaultClient, s.URL()+"metrics", ""); code != 200 {
		t.Fatalf("metrics with every stream open: %d", code)
	}
}
