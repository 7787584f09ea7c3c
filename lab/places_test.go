package lab

import (
	"strings"
	"testing"

	"github.com/pias-net/pias/config"
)

// Options.Places puts targets where they say: home, groups, and a pinned
// target's file that names its home only and learns no proxies.
func TestGeneratePlaces(t *testing.T) {
	o := Options{Proxies: 3, Clusters: 1, Targets: 2, Groups: 3, Places: []Place{
		{Home: 2, Groups: []int{0, 2}, Pinned: true},
		{Home: 1, Groups: []int{1}},
	}}
	o.Out = t.TempDir()
	l, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	t1, err := config.LoadTarget(l.Path("t1.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(t1.Proxies) != 1 || t1.Proxies[0].Name != "p3" || t1.LearnProxies {
		t.Errorf("pinned t1 lists %d proxies (first %s), learns %v; want p3 only, no learning", len(t1.Proxies), t1.Proxies[0].Name, t1.LearnProxies)
	}
	if len(t1.Groups) != 2 || t1.Groups[0].Group != GroupN(0) || t1.Groups[1].Group != GroupN(2) {
		t.Errorf("t1 joins %v, want groups 0 and 2", t1.Groups)
	}
	t2, err := config.LoadTarget(l.Path("t2.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(t2.Proxies) != 3 || t2.Proxies[0].Name != "p2" || !t2.LearnProxies || len(t2.Groups) != 1 || t2.Groups[0].Group != GroupN(1) {
		t.Errorf("t2: %d proxies (home %s), learns %v, groups %v; want 3 with p2 first, learning, group 1", len(t2.Proxies), t2.Proxies[0].Name, t2.LearnProxies, t2.Groups)
	}
	// Every proxy lets t1 join exactly its groups.
	p1, err := config.LoadProxy(l.Path("p1.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p1.Edges {
		if e.Name == "t1" && (len(e.Groups) != 2 || e.Groups[0] != GroupN(0) || e.Groups[1] != GroupN(2)) {
			t.Errorf("p1 lets t1 join %v", e.Groups)
		}
	}

	for _, tc := range []struct {
		places []Place
		msg    string
	}{
		{[]Place{{Home: 0, Groups: []int{0}}}, "1 places for 2 targets"},
		{[]Place{{Home: 3, Groups: []int{0}}, {Groups: []int{0}}}, "home proxy 3: want 0..2"},
		{[]Place{{Home: 0}, {Groups: []int{0}}}, "t1 joins no group"},
		{[]Place{{Groups: []int{0}}, {Groups: []int{3}}}, "t2: group 3: want 0..2"},
		{[]Place{{Groups: []int{1, 1}}, {Groups: []int{0}}}, "joins group 1 twice"},
	} {
		o := Options{Out: t.TempDir(), Proxies: 3, Clusters: 1, Targets: 2, Groups: 3, Places: tc.places}
		if _, err := Generate(o); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: err %v, want …%s…", tc.places, err, tc.msg)
		}
	}
}
