package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// The log attacks of issue 11, finding 7, through a real proxy control
// plane: an admitted target sends JOINs for a group it may not join, with
// a name of its choosing, and the proxy's refusals go to the event log.

var (
	attackGroup   = router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP}
	attackerAddr  = netip.MustParseAddr("100.66.0.1") // may join only 100.65.0.2:80/tcp
	victimAddr    = netip.MustParseAddr("100.66.0.2") // may join attackGroup
	attackCtrl    = uint16(51821)
	forgedName    = "x\n2030/01/01 00:00:00.000000 dead p2"
	otherGroupStr = "100.65.0.2:80/tcp"
)

// nullTransport drops what the proxy sends: only its events matter here.
type nullTransport struct{}

func (nullTransport) Send(src, dst netip.AddrPort, payload []byte) {}
func (nullTransport) Forward(pkt []byte)                           {}
func (nullTransport) SendUnderlay(to netip.AddrPort, pkt []byte)   {}
func (nullTransport) AddPeer(m overlay.Member, keepalive bool) error {
	return nil
}

// joinProxy is proxy p1, alone, that admits the attacker and the victim,
// and tells onEvent what it does.
func joinProxy(t *testing.T, clk *overlaytest.Clock, onEvent func(overlay.Event)) *overlay.Proxy {
	t.Helper()
	self := overlay.Member{Name: "p1", Addr: netip.MustParseAddr("100.64.0.1"), Cluster: "c1",
		Endpoint: netip.MustParseAddrPort("198.18.0.1:51820")}
	r, err := router.New(router.Config{Self: []netip.Addr{self.Addr}, Anycast: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}, ControlPort: attackCtrl})
	if err != nil {
		t.Fatal(err)
	}
	other, err := router.ParseGroup(otherGroupStr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := overlay.NewProxy(overlay.ProxyConfig{Self: self, Members: []overlay.Member{self}, ControlPort: attackCtrl,
		Edges: map[netip.Addr]*overlay.EdgePolicy{
			attackerAddr: {Name: "t1", PublicKey: [32]byte{1}, Groups: []router.Group{other}},
			victimAddr:   {Name: "t2", PublicKey: [32]byte{2}, Groups: []router.Group{attackGroup}},
		},
		Router: r, Clock: clk, Transport: nullTransport{}, OnEvent: onEvent})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sendJoin has the edge at from join attackGroup as name.
func sendJoin(t *testing.T, p *overlay.Proxy, from netip.Addr, seq uint32, name string) {
	t.Helper()
	b, err := overlay.AppendMsg(nil, seq, &overlay.Join{Group: attackGroup, Port: 8080, Name: name, Epoch: seq, Weight: 1, Keepalive: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p.HandleControl(netip.AddrPortFrom(from, 40000), netip.AddrPortFrom(attackGroup.Addr, attackCtrl), b)
}

func logLines(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }

// TestMeasureRefusedJoinLogLines logs the figures of finding 7: the lines
// one forged refused JOIN writes, and those of 1,000 refused JOINs.
func TestMeasureRefusedJoinLogLines(t *testing.T) {
	clk := overlaytest.NewClock()
	clk.Advance(time.Hour)
	var one, many bytes.Buffer
	p := joinProxy(t, clk, eventLogger(&one))
	sendJoin(t, p, attackerAddr, 1, forgedName)
	forged := 0
	for _, l := range logLines(one.String()) {
		if strings.HasPrefix(l, "2030/") {
			forged++
		}
	}
	p = joinProxy(t, clk, eventLogger(&many))
	for i := range 1000 {
		sendJoin(t, p, attackerAddr, uint32(i+1), fmt.Sprintf("x%d", i%3))
	}
	t.Logf("1 forged refused JOIN: %d lines, %d starting with the forged timestamp; 1000 refused JOINs: %d lines",
		len(logLines(one.String())), forged, len(logLines(many.String())))
	if len(logLines(one.String())) != 1 || forged != 0 || len(logLines(many.String())) > refusalBurst {
		t.Errorf("want 1 line, none forged, and at most %d lines for 1000 refusals (the summary comes when the window ends)", refusalBurst)
	}
}

// logLine is how every line of the event log begins: the logger's own
// timestamp, then an event kind.
var logLine = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} [a-z-]+ `)

// checkLines fails t unless every line of log is one the logger began.
func checkLines(t *testing.T, log string) []string {
	t.Helper()
	lines := logLines(log)
	for _, l := range lines {
		if !logLine.MatchString(l) || strings.HasPrefix(l, "2030/") {
			t.Errorf("line not begun by the logger: %q", l)
		}
	}
	return lines
}

// TestEventLogForgedName: a target named to forge a line gets one line,
// its name quoted, and a plain name stays as it is.
func TestEventLogForgedName(t *testing.T) {
	clk := overlaytest.NewClock()
	clk.Advance(time.Hour)
	var buf bytes.Buffer
	p := joinProxy(t, clk, newEventLog(&buf, clk.Wall).event)
	sendJoin(t, p, attackerAddr, 1, forgedName)
	lines := checkLines(t, buf.String())
	want := ` refuse 100.65.0.1:80/tcp "x\n2030/01/01 00:00:00.000000 dead p2" 100.66.0.1:8080 reason=`
	if len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Fatalf("log:\n%s\nwant one line with %s", buf.String(), want)
	}
	buf.Reset()
	sendJoin(t, p, victimAddr, 1, "t2")
	if !strings.Contains(buf.String(), " join 100.65.0.1:80/tcp t2 100.66.0.2:8080\n") {
		t.Fatalf("log:\n%s\nwant the victim's join, its name plain", buf.String())
	}
	checkLines(t, buf.String())
}

// TestEventLogRefusalFlood: 1,000 refused JOINs from one target, each
// with another name, write refusalBurst lines and, when the window ends,
// one summary; the victim's join in the middle of them is written.
func TestEventLogRefusalFlood(t *testing.T) {
	clk := overlaytest.NewClock()
	clk.Advance(time.Hour)
	var buf bytes.Buffer
	el := newEventLog(&buf, clk.Wall)
	p := joinProxy(t, clk, el.event)
	for window := range 2 {
		if window > 0 {
			// The victim falls silent, expires, and joins afresh below.
			clk.Advance(time.Minute)
			p.Tick()
		}
		buf.Reset()
		for i := range 1000 {
			if i == 500 {
				sendJoin(t, p, victimAddr, uint32(window+1), "t2")
			}
			sendJoin(t, p, attackerAddr, uint32(i+1), fmt.Sprintf("x%d", i))
			clk.Advance(5 * time.Millisecond) // 1,000 in 5 s
		}
		clk.Advance(refusalWindow)
		el.flush()
		lines := checkLines(t, buf.String())
		var refused, joined, summary int
		for _, l := range lines {
			switch {
			case strings.Contains(l, " refuse 100.65.0.1:80/tcp "):
				refused++
			case strings.HasSuffix(l, " join 100.65.0.1:80/tcp t2 100.66.0.2:8080"):
				joined++
			case strings.HasSuffix(l, " refuse 100.66.0.1 at p1 … 995 more in the last 10 s"):
				summary++
			}
		}
		t.Logf("window %d: 1000 refused JOINs and a victim's join: %d lines\n%s", window, len(lines), buf.String())
		if refused != refusalBurst || joined != 1 || summary != 1 {
			t.Errorf("window %d: %d refusals, %d victim joins, %d summaries; want %d, 1, 1", window, refused, joined, summary, refusalBurst)
		}
	}
}

// TestLineLimiterManySources: sources beyond the limiter's count share
// one window, so a sender with endless names or addresses still writes
// at most max×burst + burst lines per window, plus the summaries.
func TestLineLimiterManySources(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLineLimiter(func() time.Time { return now }, 10*time.Second, 2, 8)
	written := 0
	for i := range 1000 {
		if ok, due := l.allow("refuse", fmt.Sprint(i%100)); ok || len(due) > 0 {
			written++
		}
	}
	if written != 8*2+2 {
		t.Errorf("%d lines for 1000 refusals of 100 sources, want %d", written, 8*2+2)
	}
	now = now.Add(10 * time.Second)
	due := l.due()
	// 8 sources had 10 refusals each, 2 written; the 92 others 920, 2 written.
	want := []string{"refuse (sources beyond the first 8) … 918 more in the last 10 s"}
	for i := range 8 {
		want = append(want, fmt.Sprintf("refuse %d … 8 more in the last 10 s", i))
	}
	slices.Sort(want)
	if !slices.Equal(due, want) {
		t.Errorf("summaries:\n%s\nwant\n%s", strings.Join(due, "\n"), strings.Join(want, "\n"))
	}
	if len(l.wins) != 0 {
		t.Errorf("%d windows left after all ended", len(l.wins))
	}
	if ok, _ := l.allow("refuse", "0"); !ok {
		t.Error("a new window refused its first line")
	}
}

// TestLogStr: plain names stay plain; anything else is quoted and so
// holds no newline or space of its own.
func TestLogStr(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"p1", "p1"},
		{"t-1.example:80/x_y", "t-1.example:80/x_y"},
		{"", `""`},
		{"a b", `"a b"`},
		{"a,b", `"a,b"`},
		{forgedName, `"x\n2030/01/01 00:00:00.000000 dead p2"`},
		{"x\r\u2028y", `"x\r\u2028y"`},
		{`q"`, `"q\""`},
		{"ünï", `"ünï"`},
	} {
		if got := logStr(c.in); got != c.want {
			t.Errorf("logStr(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

// TestStatusQuotesLearnedNames: a proxy learned from the network, named
// to add a row, shows as one quoted row of pias status.
func TestStatusQuotesLearnedNames(t *testing.T) {
	forged := "p9\n  p1\t100.64.0.1\tc1\tdead"
	st := &node.Status{Name: "p1", Role: "proxy", Proxy: &node.ProxyStatus{Cluster: "c1", Members: []node.MemberStatus{
		{Name: "p1", Addr: netip.MustParseAddr("100.64.0.1"), Cluster: "c1", State: "alive"},
		{Name: forged, Addr: netip.MustParseAddr("100.64.0.9"), Cluster: "c1\nx", State: "alive"},
	}}}
	var b bytes.Buffer
	printStatus(&b, st)
	var rows []string
	for _, l := range logLines(b.String()) {
		if strings.Contains(l, "100.64.0.") && strings.Contains(l, "rtt") {
			rows = append(rows, l)
		}
	}
	if len(rows) != 2 || !strings.Contains(rows[1], `"p9\n  p1\t100.64.0.1\tc1\tdead"`) || !strings.Contains(rows[1], `"c1\nx"`) {
		t.Fatalf("member rows:\n%s\nwant p1's and one quoted row for the forged name", strings.Join(rows, "\n"))
	}
}
