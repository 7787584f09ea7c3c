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
	"github.com/pias-net/pias/router"
)

// statusLines renders st and returns its lines that match re.
func statusLines(t *testing.T, st *node.Status, re string) []string {
	t.Helper()
	var b bytes.Buffer
	printStatus(&b, st)
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if regexp.MustCompile(re).MatchString(l) {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return out
}

// TestStatusTargetGroups: a target's status gives each group a line of
// its own: joined at which proxy and since when, refused by which proxy and
// why (quoted: the proxy's words), or pending.
func TestStatusTargetGroups(t *testing.T) {
	since := time.Date(2025, 3, 1, 12, 3, 44, 0, time.Local)
	st := &node.Status{Name: "t1", Role: "target", Edge: &node.EdgeStatus{Attached: "p1", Groups: []node.JoinStatus{
		{Group: "100.65.0.1:80/tcp", State: "joined", JAP: "p1", Since: since, For: 182.4},
		{Group: "100.65.0.2:53/udp", State: "refused", JAP: "p1", Since: since, For: 2.04,
			Reason: "group 100.65.0.2:53/udp has policy select=load replicate=1 scope=any here; this join asks for select=random replicate=1 scope=any"},
		{Group: "100.65.0.3:53/udp", State: "pending", Since: since, For: 0.5, Reason: "moved"},
		{Group: "100.65.0.4:53/udp", State: "pending"},
		{Group: "100.65.0.5:53/udp", State: "refused", JAP: "p\n2", Since: since, Reason: "x\ny"},
	}}}
	got := statusLines(t, st, `^groups|100\.65\.0\.`)
	want := []string{
		"groups",
		"100.65.0.1:80/tcp joined at p1 since 12:03:44 (3m2s ago)",
		`100.65.0.2:53/udp refused by p1 since 12:03:44 (2s ago): "group 100.65.0.2:53/udp has policy select=load replicate=1 scope=any here; this join asks for select=random replicate=1 scope=any"`,
		"100.65.0.3:53/udp pending since 12:03:44 (500ms ago): moved",
		"100.65.0.4:53/udp pending (no join sent yet)",
		`100.65.0.5:53/udp refused by "p\n2" since 12:03:44 (0s ago): "x\ny"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("group lines:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if l := statusLines(t, st, `joined:`); len(l) != 0 {
		t.Errorf("the old one-line summary is still there: %q", l)
	}
}

// TestStatusLabelsEchoGroups: the RAP table and the flows mark the echo
// pseudo-groups, which nobody configures, as what they are.
func TestStatusLabelsEchoGroups(t *testing.T) {
	jap := netip.MustParseAddr("100.64.0.2")
	echo := router.EchoGroup(netip.MustParseAddr("100.65.0.53"))
	echo6 := router.EchoGroup(netip.MustParseAddr("fd65::53"))
	dns := router.Group{Addr: netip.MustParseAddr("100.65.0.53"), Port: 53, Proto: router.ProtoUDP}
	st := &node.Status{Name: "p1", Role: "proxy", Proxy: &node.ProxyStatus{Cluster: "c1",
		RAP: map[string][]router.JAP{
			dns.String():   {{Addr: jap, Targets: 2, Weight: 2}},
			echo.String():  {{Addr: jap, Targets: 2, Weight: 2}},
			echo6.String(): {{Addr: jap, Targets: 1, Weight: 1}},
		},
		Flows: []router.Flow{{Kind: "iap", Proto: router.ProtoICMP, Client: netip.MustParseAddrPort("100.64.2.1:7"), Group: echo, JAP: jap}},
	}}
	got := statusLines(t, st, `100\.65\.0\.53|fd65::53`)
	want := []string{
		"100.65.0.53:0/icmp (echo, for ping) 100.64.0.2 (2 targets, weight 2)",
		"100.65.0.53:53/udp 100.64.0.2 (2 targets, weight 2)",
		"[fd65::53]:0/icmpv6 (echo, for ping) 100.64.0.2 (1 target, weight 1)",
		"iap 100.64.2.1:7 → 100.65.0.53:0/icmp (echo, for ping) JAP 100.64.0.2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestStatusSaysWhatItCounts: the header says whether interface_name is a
// host interface; counts agree in number; a RAP entry's weight 0 (which
// means its target count) shows as that count.
func TestStatusSaysWhatItCounts(t *testing.T) {
	addr := []netip.Addr{netip.MustParseAddr("100.64.0.1")}
	for _, c := range []struct {
		st   node.Status
		want string
	}{
		{node.Status{Name: "p1", Role: "proxy", Interface: "pias-p1", Address: addr, Proxy: &node.ProxyStatus{}},
			"proxy p1 (interface_name pias-p1, no host interface; overlay 100.64.0.1)"},
		{node.Status{Name: "t1", Role: "target", Interface: "pias-t1", Host: "netstack", Address: addr, Edge: &node.EdgeStatus{Attached: "p1", Moves: 1}},
			"target t1 (interface_name pias-t1, netstack: no host interface; overlay 100.64.0.1)"},
		{node.Status{Name: "t1", Role: "target", Interface: "utun5", Host: "tun", Address: addr, Edge: &node.EdgeStatus{Attached: "p1", Moves: 2}},
			"target t1 (interface utun5, tun; overlay 100.64.0.1)"},
	} {
		if got := statusLines(t, &c.st, `^(proxy|target) `); len(got) != 1 || got[0] != c.want {
			t.Errorf("header %q, want %q", got, c.want)
		}
		if e := c.st.Edge; e != nil {
			want := fmt.Sprintf("attached to p1 (%d moves)", e.Moves)
			if e.Moves == 1 {
				want = "attached to p1 (1 move)"
			}
			if got := statusLines(t, &c.st, `^attached`); len(got) != 1 || got[0] != want {
				t.Errorf("%q, want %q", got, want)
			}
		}
	}
	jap := netip.MustParseAddr("100.64.0.2")
	st := &node.Status{Role: "proxy", Proxy: &node.ProxyStatus{RAP: map[string][]router.JAP{
		"100.65.0.1:80/tcp": {{Addr: jap, Targets: 3}},
		"100.65.0.2:80/tcp": {{Addr: jap, Targets: 1, Weight: 5}},
	}}}
	got := statusLines(t, st, `^  100\.65\.`)
	want := []string{"100.65.0.1:80/tcp 100.64.0.2 (3 targets, weight 3)", "100.65.0.2:80/tcp 100.64.0.2 (1 target, weight 5)"}
	if !slices.Equal(got, want) {
		t.Errorf("RAP lines %q, want %q", got, want)
	}
}

// TestEventLogNamesWhatReasonHolds: a resolve's policy is logged as
// policy=, a learned member's state as state=, a refusal's why as reason=.
func TestEventLogNamesWhatReasonHolds(t *testing.T) {
	g := router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP}
	for _, c := range []struct {
		e    overlay.Event
		want string
	}{
		{overlay.Event{Kind: overlay.EventResolved, Group: g, JAPs: []router.JAP{{Addr: netip.MustParseAddr("100.64.0.1"), Targets: 1}}, Reason: router.Policy{}.String()},
			`resolved 100.65.0.1:80/tcp jap=100.64.0.1/1 policy="select=proximity replicate=1 scope=any"`},
		{overlay.Event{Kind: overlay.EventMember, Name: "p4", Reason: "alive"}, `member p4 state="alive"`},
		{overlay.Event{Kind: overlay.EventJoinRefused, Group: g, Name: "t1", Reason: "no"}, `join-refused 100.65.0.1:80/tcp t1 reason="no"`},
	} {
		if got := formatEvent(c.e); got != c.want {
			t.Errorf("formatEvent = %s, want %s", got, c.want)
		}
	}
}

// TestCheckDetail: a group's check line says its state, since when, and
// its last result, the service's words quoted.
func TestCheckDetail(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	cases := []struct {
		c    node.CheckStatus
		want string
	}{
		{node.CheckStatus{Kind: "tcp", State: "unknown"}, "unknown, not run yet"},
		{node.CheckStatus{Kind: "tcp", State: "failing", Since: at, Last: "refused\nfake line", LastAt: at},
			`failing since 03:04:05, last failed at 03:04:05.0: "refused\nfake line"`},
		{node.CheckStatus{Kind: "http", State: "healthy", Since: at, Last: "200 OK", LastOK: true, LastAt: at},
			`healthy since 03:04:05, last passed at 03:04:05.0: "200 OK"`},
	}
	for _, tc := range cases {
		if got := checkDetail(&tc.c); got != tc.want {
			t.Errorf("checkDetail(%+v) = %q, want %q", tc.c, got, tc.want)
		}
	}
}
