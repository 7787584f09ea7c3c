package admit

import (
	"encoding/binary"
	"testing"
	"time"
)

// TestSeenHellos: a hello is taken once; when the memory is full the
// oldest is forgotten and nothing as old is taken again; stale ones make
// room first.
func TestSeenHellos(t *testing.T) {
	var s Seen
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC).UnixMilli()
	take := func(i int, at, now int64) bool {
		var mac [32]byte
		binary.BigEndian.PutUint64(mac[:], uint64(i))
		return s.Take(mac, at, now)
	}
	if !take(0, now, now) || take(0, now, now) {
		t.Fatal("a hello is not taken exactly once")
	}
	// Full of hellos sent over the last minute, hello i at now-60s+i ms.
	base := now - 60_000
	for i := 1; i < MaxSeen; i++ {
		if !take(i, base+int64(i), now) {
			t.Fatalf("hello %d refused", i)
		}
	}
	if !take(MaxSeen, now, now) {
		t.Fatal("a new hello is refused when the memory is full")
	}
	if len(s.at) > MaxSeen || s.floor != base+1 {
		t.Fatalf("%d remembered, floor %d: want at most %d, floor %d", len(s.at), s.floor, MaxSeen, base+1)
	}
	if take(1, base+1, now) || take(-1, base, now) {
		t.Error("a hello as old as the one forgotten is taken")
	}
	for i := 2; i < MaxSeen; i++ {
		if take(i, base+int64(i), now) {
			t.Fatalf("hello %d taken twice", i)
		}
	}
	// Two minutes on, every one is stale: they make room without raising
	// the floor.
	later := now + Skew.Milliseconds() + 1
	floor := s.floor
	if !take(-2, later, later) || s.floor != floor || len(s.at) != 1 {
		t.Errorf("after two minutes: floor %d (was %d), %d remembered", s.floor, floor, len(s.at))
	}
}

// TestLatest: a key's hello is taken only if it is later than the last
// one taken from that key; other keys do not matter; a full memory forgets
// the stale first.
func TestLatest(t *testing.T) {
	var l Latest
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC).UnixMilli()
	a, b := [32]byte{1}, [32]byte{2}
	if !l.Take(a, now, now) || l.Take(a, now, now) || l.Take(a, now-1, now) {
		t.Fatal("a key's hello is taken again, or an older one")
	}
	// Another key's hellos dated ahead do not stop a's next one.
	if !l.Take(b, now+5000, now) || !l.Take(a, now+1, now) {
		t.Fatal("one key's hello dated ahead keeps out another's")
	}
	for i := range MaxLatest - 2 {
		var k [32]byte
		binary.BigEndian.PutUint64(k[:], uint64(i)+10)
		if !l.Take(k, now-Skew.Milliseconds()-1000, now) {
			t.Fatalf("key %d refused", i)
		}
	}
	// Full: a new key makes room by dropping the stale ones, floor unmoved.
	if !l.Take([32]byte{3}, now, now) || l.floor != 0 || len(l.at) != 3 {
		t.Fatalf("full memory: floor %d, %d keys", l.floor, len(l.at))
	}
	if l.Take(a, now+1, now) || !l.Take(a, now+2, now) {
		t.Error("after making room, a's order is lost")
	}
}
