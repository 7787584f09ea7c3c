package cert

import (
	"strings"
	"testing"

	"github.com/pias-net/pias/router"
)

func TestParseGroupRight(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means in is canonical
	}{
		{"100.65.0.1:53/udp", ""},
		{"100.65.1.0/24:*/udp", ""},
		{"100.65.0.1:*/tcp", ""},
		{"100.65.1.0/24:80/tcp", ""},
		{"100.65.0.1/32:53/udp", "100.65.0.1:53/udp"},
		{"[fd65::1]:53/udp", ""},
		{"[fd65:1::/64]:*/udp", ""},
		{"[fd65::1/128]:53/udp", "[fd65::1]:53/udp"},
		{"0.0.0.0/0:*/udp", ""},
	} {
		r, err := ParseGroupRight(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		want := tc.want
		if want == "" {
			want = tc.in
		}
		if r.String() != want {
			t.Errorf("%q: String() = %q, want %q", tc.in, r.String(), want)
		}
	}
	for _, tc := range []struct{ in, err string }{
		{"", "want ADDRESS:PORT/PROTO"},
		{"100.65.0.1:53", "want ADDRESS"},
		{"100.65.0.1:53/icmp", `protocol "icmp"`},
		{"100.65.0.1/53/udp", "want ADDRESS:PORT"},
		{"100.65.0.1:0/udp", "port"},
		{"100.65.0.1:053/udp", "port"},
		{"100.65.0.1:+53/udp", "port"},
		{"100.65.0.1:65536/udp", "port"},
		{"100.65.1.1/24:*/udp", "host bits"},
		{"fd65::1:53/udp", "brackets"},
		{"[100.65.0.1]:53/udp", "brackets are for IPv6"},
		{"[::ffff:100.65.0.1]:53/udp", "IPv4"},
		{"[fe80::1%eth0]:53/udp", "not an address"},
		{"0.0.0.0:53/udp", "not a group address"},
		{"host:53/udp", "not an address"},
	} {
		_, err := ParseGroupRight(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
		}
	}
}

func TestGroupRightAllows(t *testing.T) {
	g := func(s string) router.Group {
		g, err := router.ParseGroup(s)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	one := mustRights(t, "100.65.0.1:53/udp")[0]
	pat := mustRights(t, "100.65.1.0/24:*/udp")[0]
	six := mustRights(t, "[fd65:1::/64]:*/tcp")[0]
	for _, tc := range []struct {
		r    GroupRight
		g    string
		want bool
	}{
		{one, "100.65.0.1:53/udp", true},
		{one, "100.65.0.1:54/udp", false},
		{one, "100.65.0.1:53/tcp", false},
		{one, "100.65.0.2:53/udp", false},
		{pat, "100.65.1.7:9999/udp", true},
		{pat, "100.65.2.7:53/udp", false},
		{pat, "100.65.1.7:53/tcp", false},
		{six, "[fd65:1::9]:443/tcp", true},
		{six, "[fd65:2::9]:443/tcp", false},
	} {
		if got := tc.r.Allows(g(tc.g)); got != tc.want {
			t.Errorf("%v.Allows(%s) = %v, want %v", tc.r, tc.g, got, tc.want)
		}
	}
	// covers: the CA constraint relation.
	for _, tc := range []struct {
		ca, c string
		want  bool
	}{
		{"100.65.0.0/16:*/udp", "100.65.1.0/24:*/udp", true},
		{"100.65.0.0/16:*/udp", "100.65.0.1:53/udp", true},
		{"100.65.1.0/24:*/udp", "100.65.0.0/16:*/udp", false},
		{"100.65.0.0/16:53/udp", "100.65.1.0/24:*/udp", false},
		{"100.65.0.0/16:53/udp", "100.65.1.0/24:53/udp", true},
		{"100.65.0.0/16:*/tcp", "100.65.1.0/24:*/udp", false},
	} {
		r, s := mustRights(t, tc.ca)[0], mustRights(t, tc.c)[0]
		if got := r.covers(s); got != tc.want {
			t.Errorf("%v covers %v = %v, want %v", r, s, got, tc.want)
		}
	}
	if !AllowsGroup([]GroupRight{one, pat}, g("100.65.1.1:1/udp")) || AllowsGroup(nil, g("100.65.1.1:1/udp")) {
		t.Error("AllowsGroup")
	}
}

func TestParseGroupRightsSortsAndDedups(t *testing.T) {
	rs := mustRights(t, "[fd65::1]:53/udp, 100.65.0.2:53/udp,100.65.0.1:53/udp,100.65.0.1:53/udp")
	var ss []string
	for _, r := range rs {
		ss = append(ss, r.String())
	}
	if got, want := strings.Join(ss, ","), "100.65.0.1:53/udp,100.65.0.2:53/udp,[fd65::1]:53/udp"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// GroupRightOf grants its group and nothing else: not another port, protocol
// or address.
func TestGroupRightOf(t *testing.T) {
	for _, s := range []string{"100.65.0.1:53/udp", "[fd65::1]:80/tcp"} {
		g, err := router.ParseGroup(s)
		if err != nil {
			t.Fatal(err)
		}
		r := GroupRightOf(g)
		if r.String() != s || !r.Allows(g) {
			t.Errorf("GroupRightOf(%s) = %s, allows it: %v", s, r, r.Allows(g))
		}
		other := []router.Group{g, g, g}
		other[0].Port++
		other[1].Proto ^= router.ProtoTCP ^ router.ProtoUDP
		other[2].Addr = g.Addr.Next()
		for _, o := range other {
			if r.Allows(o) {
				t.Errorf("GroupRightOf(%s) allows %s", s, o)
			}
		}
	}
}
