package node

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
)

// TestTargetStatusGroups: a target's status lists each group on its own,
// by name; with a proxy that never answers, each is pending, since its
// first join went out.
func TestTargetStatusGroups(t *testing.T) {
	start := time.Now()
	e := testClient(t, netip.MustParseAddr("100.64.1.1"), silentProxy(t), false, netip.MustParseAddr("100.64.0.1"))
	e.Close()
	// The same edge as a target of two groups (listed out of order).
	cfg := *e.Config
	cfg.Role = config.RoleTarget
	g1 := router.Group{Addr: netip.MustParseAddr("100.65.0.2"), Port: 53, Proto: router.ProtoUDP}
	g2 := router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP}
	cfg.Groups = []config.Service{{Group: g1, Port: 5353}, {Group: g2, Port: 8080}}
	tg, err := StartEdge(&cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tg.Close)
	var st Status
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st = tg.Status()
		if gs := st.Edge.Groups; len(gs) == 2 && !gs[0].Since.IsZero() && !gs[1].Since.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no join went out in 5 s: %+v", st.Edge.Groups)
		}
	}
	if st.Host != config.InterfaceNetstack || st.Edge.Joined {
		t.Errorf("host %q, joined %v", st.Host, st.Edge.Joined)
	}
	for i, want := range []string{g2.String(), g1.String()} {
		g := st.Edge.Groups[i]
		if g.Group != want || g.State != "pending" || g.JAP != "" || g.Reason != "" {
			t.Errorf("group %d: %+v, want %s pending", i, g, want)
		}
		if g.Since.Before(start) || g.Since.After(time.Now()) || g.For < 0 {
			t.Errorf("group %s pending since %v (for %vs), not since its start at %v", g.Group, g.Since, g.For, start)
		}
	}
}
