package router

import (
	"math/rand/v2"
	"testing"
)

// TestFlowMapProbeLength: the shard is chosen by the hash's low bits, so
// a probe must not start from them too (home): in a shard only every
// ns-th slot would start a probe, and runs would grow ns times longer
// than linear probing at that load gives (4.7 slots per hit, found by a
// red team, against about 1.5).
func TestFlowMapProbeLength(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tb := newTable(DefaultMaxFlows, false)
	var keys []flowKey
	for i := range 60000 {
		k := flowKey{sport: uint16(rng.Uint32()), dport: 80, proto: ProtoTCP, fam: 4}
		k.src[0], k.src[1], k.src[2] = byte(i), byte(i>>8), byte(rng.Uint32())
		f := &flow{key: k, h: k.hash()}
		s := tb.shard(f.h)
		s.mu.Lock()
		tb.insertLocked(s, f, &timeouts{})
		s.mu.Unlock()
		keys = append(keys, k)
	}
	total := 0
	for _, k := range keys {
		h := k.hash()
		a := tb.shard(h).m.arr.Load()
		for i := home(h); ; i++ {
			total++
			if f := a.s[i&a.mask].f.Load(); f != nil && f.key == k {
				break
			}
		}
	}
	avg := float64(total) / float64(len(keys))
	t.Logf("%d shards; mean probes per hit: %.1f (linear probing at half load: ~1.5)", len(tb.shards), avg)
	if avg > 3 {
		t.Errorf("a lookup probes %.1f slots on average", avg)
	}
}
