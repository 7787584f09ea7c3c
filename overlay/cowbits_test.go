package overlay

import (
	"math/rand/v2"
	"testing"
)

// TestCowBitsSnapshotsStay changes a cowBits at random against a plain
// bitset, takes snapshots on the way, and checks that each snapshot still
// holds what the set held when it was taken.
func TestCowBitsSnapshotsStay(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 3000
	var b cowBits
	ref := newBitset(n)
	type snap struct {
		got  cowBits
		want bitset
	}
	var snaps []snap
	for step := range 20000 {
		i, on := int32(rng.IntN(n)), rng.IntN(3) > 0
		b.set(i, on)
		ref.set(i, on)
		if step%97 == 0 {
			snaps = append(snaps, snap{b.snapshot(), append(bitset(nil), ref...)})
		}
	}
	snaps = append(snaps, snap{b, ref})
	for k, s := range snaps {
		if s.got.count() != s.want.count() {
			t.Fatalf("snapshot %d: %d members, want %d", k, s.got.count(), s.want.count())
		}
		for i := int32(0); i < n+70; i++ {
			if s.got.has(i) != s.want.has(i) {
				t.Fatalf("snapshot %d: has(%d) = %v, want %v", k, i, s.got.has(i), s.want.has(i))
			}
		}
		for w := range len(s.want) + 2 {
			var want uint64
			if w < len(s.want) {
				want = s.want[w]
			}
			if s.got.word(w) != want {
				t.Fatalf("snapshot %d: word %d = %x, want %x", k, w, s.got.word(w), want)
			}
		}
	}
}
