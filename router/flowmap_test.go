package router

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

func randKey(rng *rand.Rand) flowKey {
	k := flowKey{sport: uint16(rng.IntN(50)), dport: 80, proto: ProtoTCP, fam: 4}
	k.src[15] = byte(rng.IntN(8))
	return k
}

// TestFlowMapRandom checks flowMap against a Go map under random inserts
// and deletes, the way wireguard-go tests its tries against a slow list.
func TestFlowMapRandom(t *testing.T) {
	for _, rev := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(9, 10))
		var m flowMap
		m.init(rev)
		ref := map[flowKey]*flow{}
		for i := range 200000 {
			k := randKey(rng)
			h := k.hash()
			if rev {
				h = k.hash() ^ 0x5555 // any hash works, as long as it is the flow's
			}
			got := m.get(&k, h)
			if got != ref[k] {
				t.Fatalf("step %d: get %v = %p, want %p", i, k, got, ref[k])
			}
			switch {
			case got == nil && rng.IntN(3) > 0:
				f := &flow{}
				if rev {
					f.rkey, f.rh = k, h
				} else {
					f.key, f.h = k, h
				}
				m.put(f)
				ref[k] = f
			case got != nil && rng.IntN(2) == 0:
				if !m.delete(got) {
					t.Fatalf("step %d: delete failed", i)
				}
				delete(ref, k)
			}
			if m.n != len(ref) {
				t.Fatalf("step %d: n = %d, want %d", i, m.n, len(ref))
			}
			if a := m.arr.Load(); m.used*4 > len(a.s)*3 {
				t.Fatalf("step %d: %d of %d slots used", i, m.used, len(a.s))
			}
		}
		n := 0
		m.each(func(f *flow) {
			n++
			if ref[*m.keyOf(f)] != f {
				t.Errorf("each found a stray flow")
			}
		})
		if n != len(ref) {
			t.Errorf("each saw %d flows, want %d", n, len(ref))
		}
	}
}

// TestFlowMapConcurrentReaders reads a set of permanent flows without locks
// while a writer churns other flows through inserts, deletes and rebuilds:
// the permanent ones must always be found.
func TestFlowMapConcurrentReaders(t *testing.T) {
	var m flowMap
	m.init(false)
	var mu sync.Mutex
	perm := make([]*flow, 64)
	for i := range perm {
		f := &flow{key: flowKey{sport: uint16(i), dport: 1, proto: ProtoUDP, fam: 6}}
		f.h = f.key.hash()
		perm[i] = f
		m.put(f)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for _, f := range perm {
					if m.get(&f.key, f.h) != f {
						t.Error("a permanent flow went missing")
						return
					}
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var churn []*flow
	for i := range 50000 {
		mu.Lock()
		if len(churn) > 0 && (rng.IntN(2) == 0 || len(churn) > 3000) {
			j := rng.IntN(len(churn))
			m.delete(churn[j])
			churn[j] = churn[len(churn)-1]
			churn = churn[:len(churn)-1]
		} else {
			f := &flow{key: flowKey{sport: uint16(i), dport: 2, proto: ProtoUDP, fam: 6}}
			f.key.src[0] = byte(i >> 16)
			f.h = f.key.hash()
			m.put(f)
			churn = append(churn, f)
		}
		mu.Unlock()
	}
	stop.Store(true)
	wg.Wait()
}
