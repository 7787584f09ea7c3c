package router

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Attacks on the resolve queues (issue 11, finding 3): a client that sends
// to fresh groups must not hold unbounded queues, nor make the control
// plane ask RAPs without bound, nor keep other clients' groups from
// resolving.

// floodGroup is the i-th fresh group of a flood: an address of 100.65/16
// below 100.65.240.0 and a port.
func floodGroup(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)}), uint16(1000+i%50000))
}

// A resolveVictim's groups, outside the flood's.
var (
	resolveVictim = netip.MustParseAddrPort("100.64.1.99:30000")
	newAP         = netip.MustParseAddrPort("100.65.250.1:9999")
	newGroup      = Group{Addr: newAP.Addr(), Port: newAP.Port(), Proto: ProtoUDP}
	fullSized     = strings.Repeat("x", DefaultMTU-28) // a UDP payload that fills the MTU
)

// flood sends n full-sized datagrams from src to fresh groups from first
// on, spread over a second from at, and returns how many asked for a
// resolve.
func flood(r *Router, src netip.AddrPort, first, n int, at int64) (resolves int) {
	for i := range n {
		res, _ := route(r, udp(src, floodGroup(first+i), fullSized), at+int64(i)*int64(time.Second)/int64(n))
		if res.Resolve {
			resolves++
		}
	}
	return resolves
}

// checkQueues checks the router's queue accounting against its queues.
func checkQueues(t testing.TB, r *Router) {
	t.Helper()
	r.gmu.RLock()
	defer r.gmu.RUnlock()
	b, bySrc := 0, map[netip.Addr]int{}
	for _, q := range r.queues {
		n := 0
		for _, p := range q.pkts {
			n += len(p)
		}
		if n != q.bytes {
			t.Fatalf("a queue holds %d bytes but counts %d", n, q.bytes)
		}
		b += n
		bySrc[q.src]++
	}
	for _, e := range r.cache {
		if e.charged {
			if e.known {
				t.Fatalf("a positive entry is charged to %v", e.src)
			}
			bySrc[e.src]++
		}
	}
	if b != r.qbytes || len(bySrc) != len(r.bySrc) {
		t.Fatalf("queues hold %d bytes, %d sources are charged; counted %d bytes and %d sources", b, len(bySrc), r.qbytes, len(r.bySrc))
	}
	for s, n := range bySrc {
		if r.bySrc[s] != n || n > r.maxResSrc {
			t.Fatalf("source %v has %d queues, counted %d (cap %d)", s, n, r.bySrc[s], r.maxResSrc)
		}
	}
	if len(r.queues) > r.maxRes || r.qbytes > r.maxQBytes {
		t.Fatalf("%d queues of %d bytes, over the caps %d and %d", len(r.queues), r.qbytes, r.maxRes, r.maxQBytes)
	}
}

// victimRoutes checks that the resolveVictim's packets still go: to a group the
// cache knows at once, and to a new one once it is resolved, both
// encapsulated to p2 byte for byte.
func victimRoutes(t *testing.T, r *Router, now int64) {
	t.Helper()
	known := udp(resolveVictim, netip.AddrPortFrom(anyIP, 53), "known group")
	if d := decode(t, mustForward(t, r, known, now)); d.dst.Addr() != p2 || !bytes.Equal(d.inner, known) {
		t.Errorf("the resolveVictim's packet to a known group went to %v as % x", d.dst, d.inner)
	}
	fresh := udp(resolveVictim, newAP, "new group")
	res, _ := route(r, fresh, now)
	if res.Action != Queued || !res.Resolve || res.Group != newGroup {
		t.Fatalf("the resolveVictim's packet to a new group: %+v, want queued and resolved", res)
	}
	out := r.resolved(newGroup, []JAP{{Addr: p2, Targets: 1}}, time.Hour, now)
	if len(out) != 1 {
		t.Fatalf("%d packets released, want 1", len(out))
	}
	if d := decode(t, out[0]); d.dst.Addr() != p2 || !bytes.Equal(d.inner, fresh) {
		t.Errorf("the resolveVictim's packet to a new group went to %v as % x", d.dst, d.inner)
	}
}

func TestResolveFloodOneSource(t *testing.T) {
	// The attack with the default caps: 60,000 datagrams to fresh
	// groups. (Before the caps: 60,000 resolves, 60,000 queues, 86.4 MB.)
	r := newRouter(t, selfP1())
	r.resolved(gUDP, []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
	const n = 60000
	resolves := flood(r, client, 0, n, 0)
	st := r.Stats()
	t.Logf("%d datagrams to fresh groups: %d resolves, %d queues, %d bytes queued", n, resolves, st.Resolving, st.QueuedBytes)
	const per = DefaultMaxResolvesPerSource
	if resolves != per || st.Resolving != per || st.QueuedBytes != per*(Headroom+DefaultMTU) {
		t.Errorf("%d resolves, %d queues, %d bytes; want %d, %d and %d", resolves, st.Resolving, st.QueuedBytes, per, per, per*(Headroom+DefaultMTU))
	}
	if d := st.Drops[DropResolveLimit]; d != n-per {
		t.Errorf("%d resolve-limit drops, want %d", d, n-per)
	}
	checkQueues(t, r)
	victimRoutes(t, r, sec(1))
	checkQueues(t, r)

	// The RAP knows none of the flood's groups: the group is then dropped
	// at once, without a resolve, until the negative entry expires; and
	// the attacker's slot stays taken until then.
	gone := Group{Addr: floodGroup(0).Addr(), Port: floodGroup(0).Port(), Proto: ProtoUDP}
	if out := r.resolved(gone, nil, time.Hour, sec(1.1)); len(out) != 0 {
		t.Fatalf("an unknown group's packets were forwarded")
	}
	mustDrop(t, r, udp(client, floodGroup(0), "again"), sec(1.2), DropNoGroup)
	mustDrop(t, r, udp(client, floodGroup(n), "x"), sec(1.2), DropResolveLimit)
	// A resolve the control plane gave up on frees its slot.
	if k := r.ResolveFailed(Group{Addr: floodGroup(1).Addr(), Port: floodGroup(1).Port(), Proto: ProtoUDP}); k != 1 {
		t.Errorf("ResolveFailed dropped %d packets, want 1", k)
	}
	if res, _ := route(r, udp(client, floodGroup(n), "x"), sec(1.3)); res.Action != Queued || !res.Resolve {
		t.Errorf("the slot of a failed resolve was not freed: %+v", res)
	}
	mustDrop(t, r, udp(client, floodGroup(n+1), "x"), sec(1.3), DropResolveLimit)
	// So does the negative entry, when it expires (NegativeTTL, 1 s).
	r.Expire(sec(2.15))
	if res, _ := route(r, udp(client, floodGroup(n+1), "x"), sec(2.2)); res.Action != Queued || !res.Resolve {
		t.Errorf("the slot of an expired negative entry was not freed: %+v", res)
	}
	checkQueues(t, r)
	// After the timeout every queue is gone, and the caps count from zero.
	r.Expire(sec(5.3))
	if st := r.Stats(); st.Resolving != 0 || st.QueuedBytes != 0 || len(r.bySrc) != 0 {
		t.Errorf("after Expire: %d queues, %d bytes, %d sources", st.Resolving, st.QueuedBytes, len(r.bySrc))
	}
	if got := flood(r, client, 2*n, 1000, sec(5.5)); got != per {
		t.Errorf("a second flood asked %d resolves, want %d", got, per)
	}
}

func TestResolveFloodAnswered(t *testing.T) {
	// The RAPs answer every resolve at once: no such group. The queues
	// then empty as fast as they fill, but the negative entries stay
	// charged to the client, so it resolves at most
	// DefaultMaxResolvesPerSource groups per NegativeTTL (1 s). (Before:
	// one resolve per datagram, 60,000.)
	r := newRouter(t, selfP1())
	r.resolved(gUDP, []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
	const n, span = 60000, 3 * time.Second
	resolves, last := 0, int64(0)
	for i := range n {
		now := int64(i) * int64(span) / n
		if now-last >= int64(100*time.Millisecond) { // the node's tick
			r.Expire(now)
			last = now
		}
		res, _ := route(r, udp(client, floodGroup(i), fullSized), now)
		if res.Resolve {
			resolves++
			r.ResolvedPolicy(res.Group, Policy{}, nil, time.Hour, now)
		}
	}
	st := r.Stats()
	t.Logf("%d datagrams over %v, each resolve answered at once: %d resolves, %d queues, %d bytes queued",
		n, span, resolves, st.Resolving, st.QueuedBytes)
	// Each NegativeTTL frees the slots, a tick late at most.
	if max := DefaultMaxResolvesPerSource * (1 + int(span/DefaultNegativeTTL)); resolves > max || st.Resolving != 0 {
		t.Errorf("%d resolves, %d queues left; want at most %d and 0", resolves, st.Resolving, max)
	}
	checkQueues(t, r)
	victimRoutes(t, r, int64(span))
	checkQueues(t, r)
}

func TestResolveFloodManySources(t *testing.T) {
	// Colluding clients hit the total cap; groups the cache knows still
	// route, and so does a new group once a slot is free.
	const total, per = 100, 64
	r := newRouter(t, selfP1(), func(c *Config) { c.MaxResolves, c.MaxResolvesPerSource = total, per })
	r.resolved(gUDP, []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
	resolves := 0
	for s := range 10 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 3, byte(s)}), 5000)
		resolves += flood(r, src, s*1000, 1000, 0)
	}
	st := r.Stats()
	if resolves != total || st.Resolving != total {
		t.Errorf("%d resolves, %d queues; want %d", resolves, st.Resolving, total)
	}
	checkQueues(t, r)
	// At the total cap a new group is not resolved, whoever asks.
	mustDrop(t, r, udp(resolveVictim, newAP, "x"), sec(1), DropResolveLimit)
	r.Expire(sec(4))
	victimRoutes(t, r, sec(4))
}

func TestResolveQueuedBytes(t *testing.T) {
	// One client fills its groups' queues: the bytes cap holds, and a
	// group whose first packet does not fit is not resolved.
	const capB = 40 * (Headroom + DefaultMTU)
	r := newRouter(t, selfP1(), func(c *Config) { c.MaxQueuedBytes = capB })
	r.resolved(gUDP, []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
	resolves := 0
	for i := range 10 {
		for range DefaultQueueLimit {
			if res, _ := route(r, udp(client, floodGroup(i), fullSized), 0); res.Resolve {
				resolves++
			}
		}
	}
	st := r.Stats()
	if st.QueuedBytes != capB || resolves != 3 || st.Resolving != 3 {
		t.Errorf("%d bytes in %d queues, %d resolves; want %d bytes, 3 and 3", st.QueuedBytes, st.Resolving, resolves, capB)
	}
	if d := st.Drops[DropQueueBytes]; d != 10*DefaultQueueLimit-40 {
		t.Errorf("%d queue-bytes drops, want %d", d, 10*DefaultQueueLimit-40)
	}
	checkQueues(t, r)
	// At the cap nothing more is queued, and known groups still route;
	// the answers free the bytes.
	mustDrop(t, r, udp(resolveVictim, newAP, "x"), sec(1), DropQueueBytes)
	for i := range 3 {
		g := Group{Addr: floodGroup(i).Addr(), Port: floodGroup(i).Port(), Proto: ProtoUDP}
		if out := r.resolved(g, []JAP{{Addr: p2, Targets: 1}}, time.Hour, sec(1)); len(out) == 0 {
			t.Fatalf("group %d released nothing", i)
		}
	}
	if st := r.Stats(); st.QueuedBytes != 0 || st.Resolving != 0 {
		t.Errorf("after the answers: %d bytes in %d queues", st.QueuedBytes, st.Resolving)
	}
	checkQueues(t, r)
	victimRoutes(t, r, sec(1))
}

// FuzzResolveLimits runs the queue operations in any order from a few
// sources and groups, and checks the accounting and the caps after each.
func FuzzResolveLimits(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0x40, 0x81, 0xc2, 0x03, 0x13, 0x23})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newRouter(t, selfP1(), func(c *Config) {
			c.MaxResolves, c.MaxResolvesPerSource, c.QueueLimit = 6, 3, 4
			c.MaxQueuedBytes = 10 * (Headroom + 100)
		})
		payload := strings.Repeat("y", 100-28)
		var now int64
		for _, op := range ops {
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 3, op >> 4 & 3}), 5000)
			ap := floodGroup(int(op & 15))
			g := Group{Addr: ap.Addr(), Port: ap.Port(), Proto: ProtoUDP}
			switch op >> 6 {
			case 0, 1:
				route(r, udp(src, ap, payload), now)
			case 2:
				if op&0x20 != 0 {
					r.resolved(g, []JAP{{Addr: p2, Targets: 1}}, time.Second, now)
				} else {
					r.resolved(g, nil, time.Second, now)
				}
			case 3:
				switch op >> 4 & 3 {
				case 0:
					r.ResolveFailed(g)
				case 1:
					r.Invalidate(g)
				case 2:
					r.ForgetJAPFor(g, p2)
				default:
					now += int64(time.Second)
					r.Expire(now)
				}
			}
			now += int64(10 * time.Millisecond)
			checkQueues(t, r)
		}
	})
}

// BenchmarkResolveFloodAtCap is a flooding client's datagram to a fresh
// group once it is at its cap: a cache miss and a drop, without a copy
// or a resolve.
func BenchmarkResolveFloodAtCap(b *testing.B) {
	r := newRouter(b, selfP1())
	flood(r, client, 0, DefaultMaxResolvesPerSource, 0)
	pkts := make([][]byte, 4096)
	for i := range pkts {
		orig := udp(client, floodGroup(1000+i), fullSized)
		pkts[i] = make([]byte, Headroom+len(orig))
		copy(pkts[i][Headroom:], orig)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		buf := pkts[i%len(pkts)]
		if res := r.Route(buf, Headroom, len(buf), 1); res.Reason != DropResolveLimit {
			b.Fatal(res)
		}
		i++
	}
}
