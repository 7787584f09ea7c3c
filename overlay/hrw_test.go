package overlay

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/pias-net/pias/router"
)

func proxyNames(n int) []string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = fmt.Sprintf("proxy-%d", i)
	}
	return ps
}

// randomGroups returns n distinct random groups, the same ones every run.
func randomGroups(n int) []router.Group {
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[router.Group]bool{}
	gs := make([]router.Group, 0, n)
	for len(gs) < n {
		var g router.Group
		switch r.IntN(4) {
		case 0: // IPv4 TCP or UDP
			g = router.Group{Addr: netip.AddrFrom4([4]byte{100, 65, byte(r.Uint32()), byte(r.Uint32())}),
				Port: uint16(1 + r.IntN(65535)), Proto: []uint8{router.ProtoTCP, router.ProtoUDP}[r.IntN(2)]}
		case 1: // IPv6 TCP or UDP
			var a [16]byte
			a[0], a[1] = 0xfd, 0x65
			for i := 8; i < 16; i++ {
				a[i] = byte(r.Uint32())
			}
			g = router.Group{Addr: netip.AddrFrom16(a),
				Port: uint16(1 + r.IntN(65535)), Proto: []uint8{router.ProtoTCP, router.ProtoUDP}[r.IntN(2)]}
		case 2: // IPv4 echo
			g = router.EchoGroup(netip.AddrFrom4([4]byte{100, 65, byte(r.Uint32()), byte(r.Uint32())}))
		case 3: // a common service port on a few addresses
			g = router.Group{Addr: netip.AddrFrom4([4]byte{100, 65, 0, byte(r.Uint32())}),
				Port: uint16(r.IntN(1024) + 1), Proto: router.ProtoTCP}
		}
		if !seen[g] {
			seen[g] = true
			gs = append(gs, g)
		}
	}
	return gs
}

// rapsBySort is the obvious implementation of RAPs, to check it against.
func rapsBySort(g router.Group, proxies []string, k int) []string {
	ps := slices.Clone(proxies)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	h := groupHash(g)
	slices.SortFunc(ps, func(a, b string) int {
		wa, wb := weight(h, a), weight(h, b)
		switch {
		case ranksBefore(wa, a, wb, b):
			return -1
		case ranksBefore(wb, b, wa, a):
			return 1
		}
		return 0
	})
	return ps[:min(max(k, 0), len(ps))]
}

// TestRAPsGolden pins the weights, so that a change of hash (which would
// split an overlay whose proxies run different versions) is noticed.
func TestRAPsGolden(t *testing.T) {
	ps := proxyNames(5)
	for _, tc := range []struct {
		g    router.Group
		want []string
	}{
		{g4, []string{"proxy-0", "proxy-4", "proxy-1", "proxy-3", "proxy-2"}},
		{g6, []string{"proxy-1", "proxy-0", "proxy-2", "proxy-3", "proxy-4"}},
		{echo4, []string{"proxy-4", "proxy-3", "proxy-0", "proxy-2", "proxy-1"}},
	} {
		if got := RAPs(tc.g, ps, len(ps)); !slices.Equal(got, tc.want) {
			t.Errorf("RAPs(%v) = %q, want %q", tc.g, got, tc.want)
		}
	}
	// Computed independently (Python) from the definition: splitmix64's
	// finalizer of FNV-1a 64 over 04 64410001 0050 06 "proxy-0", etc.
	for _, tc := range []struct {
		g    router.Group
		want uint64
	}{
		{g4, 0xe769bbbdd5505049},
		{g6, 0x8cbb4737eaf6a10a},
		{echo4, 0x3c429bd07bd0f126},
	} {
		if got := weight(groupHash(tc.g), "proxy-0"); got != tc.want {
			t.Errorf("weight(%v, proxy-0) = %#x, want %#x", tc.g, got, tc.want)
		}
	}
}

func TestRAPsDeterministic(t *testing.T) {
	ps := proxyNames(20)
	for _, g := range randomGroups(200) {
		want := RAPs(g, ps, 4)
		// The order of the proxies does not matter.
		shuffled := slices.Clone(ps)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := RAPs(g, shuffled, 4); !slices.Equal(got, want) {
			t.Fatalf("RAPs(%v) = %q, with shuffled proxies %q", g, want, got)
		}
		// An IPv4-mapped address is its IPv4 address; a zone is ignored.
		if g.Addr.Is4() {
			m := g
			m.Addr = netip.AddrFrom16(g.Addr.As16())
			if got := RAPs(m, ps, 4); !slices.Equal(got, want) {
				t.Fatalf("RAPs(%v) = %q, but %q for %v", g, want, got, m)
			}
		}
		// It agrees with sorting everything.
		for k := 1; k <= len(ps)+1; k++ {
			if got, want := RAPs(g, ps, k), rapsBySort(g, ps, k); !slices.Equal(got, want) {
				t.Fatalf("RAPs(%v, k=%d) = %q, want %q", g, k, got, want)
			}
		}
	}
}

func TestRAPsBounds(t *testing.T) {
	ps := proxyNames(5)
	all := RAPs(g4, ps, len(ps))
	for _, tc := range []struct {
		proxies []string
		k       int
		want    []string
	}{
		{ps, -1, nil},
		{ps, 0, nil},
		{nil, 3, nil},
		{[]string{}, 3, nil},
		{ps, 1, all[:1]},
		{ps, 2, all[:2]},
		{ps, 5, all},
		{ps, 6, all},
		{ps, 1000, all},
		{[]string{"only"}, 2, []string{"only"}},
		{append(slices.Clone(ps), ps...), 100, all},          // duplicates count once
		{append(slices.Clone(ps), ps[2], ps[2]), 3, all[:3]}, // ...at any k
		{[]string{"a", "a", "a"}, 2, []string{"a"}},
	} {
		got := RAPs(g4, tc.proxies, tc.k)
		if !slices.Equal(got, tc.want) || (tc.want == nil) != (got == nil) {
			t.Errorf("RAPs(%q, k=%d) = %#v, want %#v", tc.proxies, tc.k, got, tc.want)
		}
	}
	// A k larger than the stack buffer.
	many := proxyNames(40)
	if got, want := RAPs(g6, many, 30), rapsBySort(g6, many, 30); !slices.Equal(got, want) {
		t.Errorf("RAPs(k=30) = %q, want %q", got, want)
	}
}

func TestRAPsTieBrokenByName(t *testing.T) {
	// Names never tie in practice; check ranksBefore directly.
	if !ranksBefore(5, "a", 5, "b") || ranksBefore(5, "b", 5, "a") || ranksBefore(5, "a", 5, "a") {
		t.Error("equal weights are not ranked by name")
	}
	if !ranksBefore(6, "z", 5, "a") || ranksBefore(5, "a", 6, "z") {
		t.Error("weights are not ranked highest first")
	}
}

// TestRAPsMinimalDisruption checks that removing a proxy changes the RAPs of
// only the groups it was a RAP of, and of those only by dropping it and
// promoting the next one; and that adding it back restores them.
func TestRAPsMinimalDisruption(t *testing.T) {
	ps := proxyNames(10)
	groups := randomGroups(1000)
	for _, k := range []int{1, 2, 4} {
		for gone := range ps {
			rest := slices.Delete(slices.Clone(ps), gone, gone+1)
			moved := 0
			for _, g := range groups {
				before, after := RAPs(g, ps, k), RAPs(g, rest, k)
				i := slices.Index(before, ps[gone])
				if i < 0 {
					if !slices.Equal(before, after) {
						t.Fatalf("k=%d: removing %s moved %v from %q to %q", k, ps[gone], g, before, after)
					}
					continue
				}
				moved++
				kept := slices.Delete(slices.Clone(before), i, i+1)
				if !slices.Equal(after[:k-1], kept) || slices.Contains(kept, after[k-1]) {
					t.Fatalf("k=%d: removing %s changed %v from %q to %q", k, ps[gone], g, before, after)
				}
			}
			// Each proxy is a RAP of about k/10 of the groups.
			if want := len(groups) * k / len(ps); moved < want/2 || moved > want*3/2 {
				t.Errorf("k=%d: %s was a RAP of %d groups, want about %d", k, ps[gone], moved, want)
			}
		}
	}
}

// TestRAPsBalance checks each of 10 proxies is the first RAP of 10% ± 4% of
// 10 000 groups, and a RAP at all (k = 2) of 20% ± 4%.
func TestRAPsBalance(t *testing.T) {
	ps := proxyNames(10)
	groups := randomGroups(10000)
	first := map[string]int{}
	inTop2 := map[string]int{}
	for _, g := range groups {
		raps := RAPs(g, ps, 2)
		first[raps[0]]++
		for _, p := range raps {
			inTop2[p]++
		}
	}
	n := len(groups)
	for _, p := range ps {
		if c := first[p]; c < n*6/100 || c > n*14/100 {
			t.Errorf("%s is the first RAP of %d of %d groups, want 10%% ± 4%%", p, c, n)
		}
		if c := inTop2[p]; c < n*16/100 || c > n*24/100 {
			t.Errorf("%s is a RAP of %d of %d groups, want 20%% ± 4%%", p, c, n)
		}
	}
	t.Logf("first RAP counts: %v", first)
}

func TestRAPsAllocs(t *testing.T) {
	ps := proxyNames(50)
	if n := testing.AllocsPerRun(100, func() { RAPs(g6, ps, 4) }); n != 1 {
		t.Errorf("RAPs: %v allocations, want 1 (the result)", n)
	}
}

func BenchmarkRAPs(b *testing.B) {
	for _, n := range []int{10, 100} {
		ps := proxyNames(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				RAPs(g4, ps, 2)
			}
		})
	}
}
