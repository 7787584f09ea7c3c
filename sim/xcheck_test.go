package sim

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// smallCheck: 6 proxies in 2 clusters, 10 targets of 5 groups each (50
// joins over 8 groups), p2 and p5 killed.
func smallCheck() CrossCheck {
	c := CrossCheck{Replicas: 2, Seed: 3, Kills: []int{1, 4}}
	for i := range 6 {
		c.Proxies = append(c.Proxies, overlay.Member{Name: fmt.Sprintf("p%d", i+1),
			Addr: netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}), Cluster: fmt.Sprintf("c%d", i%2+1)})
	}
	for i := range 8 {
		c.Groups = append(c.Groups, router.Group{Addr: netip.AddrFrom4([4]byte{100, 65, 0, byte(1 + i/2)}), Port: uint16(80 + i%2), Proto: router.ProtoTCP})
	}
	for j := range 10 {
		t := CheckTarget{Proxy: j % 6}
		for k := range 5 {
			t.Groups = append(t.Groups, (j+k)%8)
		}
		c.Targets = append(c.Targets, t)
	}
	return c
}

// TestCrossCheckSimAlone: the simulator's side of the cross-check ends as
// the scenario says, and the same seed ends the same.
func TestCrossCheckSimAlone(t *testing.T) {
	c := smallCheck()
	o, err := RunCrossCheck(c)
	if err != nil {
		t.Fatal(err)
	}
	killed := []string{"p2", "p5"}
	for p, d := range o.Dead {
		if !slices.Equal(d, killed) {
			t.Errorf("%s holds %v dead, want %v", p, d, killed)
		}
		if got := o.Declared[p]; !slices.Equal(got, killed) {
			t.Errorf("%s declared %v dead, want %v once each", p, got, killed)
		}
	}
	if len(o.Dead) != 4 {
		t.Errorf("%d survivors, want 4", len(o.Dead))
	}
	// At 0 %: one change per join at its JAP, for the group and its echo.
	want := map[router.Group]int{}
	for _, tg := range c.Targets {
		for _, gi := range tg.Groups {
			want[c.Groups[gi]]++
			want[router.EchoGroup(c.Groups[gi].Addr)]++
		}
	}
	for g, n := range want {
		if o.Changes[g] != n {
			t.Errorf("%s: %d registration changes, want %d", g, o.Changes[g], n)
		}
	}
	o2, err := RunCrossCheck(c)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := o.Lines(), o2.Lines(); !slices.Equal(a, b) {
		t.Errorf("the same seed ended differently:\n%v\n%v", a, b)
	}
	t.Logf("%d lines, e.g. %v", len(o.Lines()), o.Lines()[:3])
}
