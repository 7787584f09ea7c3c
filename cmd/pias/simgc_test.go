package main

import "testing"

// TestSimGCPercent: a simulation's heap grows to 5× its live part, to 4
// GiB at most, and to 1.25× a live heap past 3.2 GiB (never under it, as a
// fixed 4 GiB limit was).
func TestSimGCPercent(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 400}, {gib / 2, 400}, {4 * gib / 5, 400}, {gib, 300}, {2 * gib, 100}, {3 * gib, 33}, {5 * gib, 25}, {20 * gib, 25},
	} {
		if got := simGCPercent(tc.live); got != tc.want {
			t.Errorf("simGCPercent(%.2f GiB) = %d, want %d", float64(tc.live)/gib, got, tc.want)
		}
	}
}

// TestSimMemoryLimit: 7.5 GiB, or 1.25× a live heap past 6 GiB.
func TestSimMemoryLimit(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		live uint64
		want int64
	}{
		{0, 15 * gib / 2}, {gib, 15 * gib / 2}, {6 * gib, 15 * gib / 2}, {8 * gib, 10 * gib}, {20 * gib, 25 * gib},
	} {
		if got := simMemoryLimit(tc.live); got != tc.want {
			t.Errorf("simMemoryLimit(%.2f GiB) = %.2f GiB, want %.2f", float64(tc.live)/gib, float64(got)/gib, float64(tc.want)/gib)
		}
	}
}
