package node

import (
	"runtime/debug"
	"sync"
	"testing"
)

// TestBurstEnd: the release comes once, on the quietTicks-th quiet tick
// after traffic; never for a proxy that was always quiet, and not again
// until traffic returns.
func TestBurstEnd(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ticks []uint64 // packets in each tick
		want  []int    // ticks (0-based) on which tick() is true
	}{
		{"always quiet", rep(0, 30), nil},
		{"a trickle is quiet", rep(quietPackets-1, 30), nil},
		{"burst then quiet", cat([]uint64{5000, 5000}, rep(0, 25)), []int{11}},
		{"quiet ticks interrupted", cat([]uint64{5000}, rep(0, 5), []uint64{quietPackets}, rep(0, 12)), []int{16}},
		{"two bursts", cat([]uint64{5000}, rep(0, 10), []uint64{9000}, rep(50, 10)), []int{10, 21}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b burstEnd
			var total uint64
			var got []int
			for i, n := range tc.ticks {
				total += n
				if b.tick(total) {
					got = append(got, i)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("released on ticks %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("released on ticks %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestReleaseMemory: after a burst's buffers went back to a pool, a release
// returns them to the OS.
func TestReleaseMemory(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no collection empties the pool early
	var pool sync.Pool
	for range 1024 { // 64 MiB, touched, as wireguard-go's buffers are
		b := new([64 << 10]byte)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		pool.Put(b)
	}
	held := retained()
	if held < 64<<20 {
		t.Fatalf("retained %d MiB with 64 MiB in the pool", held>>20)
	}
	releaseMemory()
	if after := retained(); after > held-56<<20 {
		t.Errorf("retained %d MiB before the release, %d MiB after", held>>20, after>>20)
	} else {
		t.Logf("retained %d MiB before the release, %d MiB after", held>>20, after>>20)
	}
}

func rep(n uint64, k int) []uint64 {
	s := make([]uint64, k)
	for i := range s {
		s[i] = n
	}
	return s
}

func cat(ss ...[]uint64) []uint64 {
	var out []uint64
	for _, s := range ss {
		out = append(out, s...)
	}
	return out
}
