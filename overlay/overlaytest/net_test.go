package overlaytest

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// world is a Net of hosts h1..hk, each with an IPv4 overlay address, an
// IPv6 one and an underlay endpoint, recording what each receives.
type world struct {
	t   *testing.T
	clk *Clock
	n   *Net
	rec Recorder
	got map[string][]Packet // by receiving host; At is the arrival time
}

func v4(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}), 51821)
}
func v6(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(i)}), 51821)
}
func underlay(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 51820)
}

func newWorld(t *testing.T, k int, seed uint64) *world {
	w := &world{t: t, clk: NewClock(), got: map[string][]Packet{}}
	w.n = NewNet(w.clk, seed)
	w.n.Trace(w.rec.Record)
	for i := 1; i <= k; i++ {
		name := fmt.Sprintf("h%d", i)
		w.n.AddHost(name, v4(i).Addr(), v6(i).Addr(), underlay(i).Addr()).Handle(func(src, dst netip.AddrPort, b []byte) {
			w.got[name] = append(w.got[name], Packet{At: w.clk.Now(), Src: src, Dst: dst, Payload: b})
		})
	}
	return w
}

// send sends a numbered message from host i to host j.
func (w *world) send(i, j int, seq uint32) {
	w.n.Send(v4(i), v4(j), binary.BigEndian.AppendUint32(nil, seq))
}

func (w *world) count(host string) int { return len(w.got[host]) }

func TestNetDeliversAfterDelay(t *testing.T) {
	w := newWorld(t, 3, 1)
	w.n.SetDefault(Link{Delay: 10 * ms})
	w.n.SetLink("h1", "h3", Link{Delay: 40 * ms})
	payload := []byte("hello")
	w.n.Send(v4(1), v4(2), payload)
	w.n.Send(v6(1), v6(2), payload)
	w.n.Send(underlay(1), underlay(2), payload)
	w.n.Send(v4(3), v4(1), payload) // the pair's own link, this way round too
	payload[0] = 'j'                // the sender's buffer is its own again
	w.clk.Advance(10*ms - 1)
	if w.count("h2") != 0 {
		t.Fatal("delivered before the link's delay")
	}
	w.clk.Advance(1)
	got := w.got["h2"]
	if len(got) != 3 {
		t.Fatalf("h2 got %d packets at 10ms, want 3", len(got))
	}
	for i, dst := range []netip.AddrPort{v4(2), v6(2), underlay(2)} {
		p := got[i]
		if p.At != int64(10*ms) || p.Dst != dst || string(p.Payload) != "hello" {
			t.Errorf("packet %d: at %v to %v %q, want at 10ms to %v \"hello\"", i, time.Duration(p.At), p.Dst, p.Payload, dst)
		}
	}
	w.clk.Advance(30*ms - 1)
	if w.count("h1") != 0 {
		t.Fatal("h3→h1 arrived before its link's 40ms")
	}
	w.clk.Advance(1)
	if w.count("h1") != 1 || w.got["h1"][0].Src != v4(3) {
		t.Fatalf("h1 got %v, want one packet from %v at 40ms", w.got["h1"], v4(3))
	}
}

func TestNetZeroDelayIsNotSynchronous(t *testing.T) {
	w := newWorld(t, 2, 1)
	w.send(1, 2, 0)
	if w.count("h2") != 0 {
		t.Fatal("a zero-delay packet was delivered within Send")
	}
	w.clk.Advance(0)
	if w.count("h2") != 1 {
		t.Fatalf("h2 got %d after Advance(0), want 1", w.count("h2"))
	}
}

// TestNetNoReentrancy: handlers that answer at once, over instant links,
// never run inside one another; a ping-pong proceeds one hop per event.
func TestNetNoReentrancy(t *testing.T) {
	clk := NewClock()
	n := NewNet(clk, 1)
	depth, maxDepth, hops := 0, 0, 0
	for i := 1; i <= 2; i++ {
		me, peer := v4(i), v4(3-i)
		n.AddHost(fmt.Sprint(i), me.Addr()).Handle(func(src, dst netip.AddrPort, b []byte) {
			depth++
			maxDepth = max(maxDepth, depth)
			if hops++; hops < 1000 {
				n.Send(me, peer, b)
				n.Send(me, me, nil) // to itself too
			}
			depth--
		})
	}
	n.Send(v4(1), v4(2), []byte("ball"))
	clk.Advance(0)
	if maxDepth != 1 {
		t.Errorf("handlers nested %d deep, want 1", maxDepth)
	}
	if hops < 1000 {
		t.Errorf("%d hops, want the rally to reach 1000", hops)
	}
}

func TestNetLossIsSeeded(t *testing.T) {
	lost := func(seed uint64) int {
		w := newWorld(t, 2, seed)
		w.n.SetLink("h1", "h2", Link{Loss: 0.3})
		for i := range 10000 {
			w.send(1, 2, uint32(i))
		}
		w.clk.Advance(0)
		st := w.n.Host("h1").Stats()
		if st.Sent != 10000 || int(st.Dropped) != 10000-w.count("h2") {
			t.Fatalf("h1 stats %+v with %d received", st, w.count("h2"))
		}
		return int(st.Dropped)
	}
	a, b, c := lost(7), lost(7), lost(8)
	if a != b {
		t.Errorf("seed 7 lost %d, then %d", a, b)
	}
	if a == c {
		t.Errorf("seeds 7 and 8 both lost %d", a)
	}
	for _, k := range []int{a, c} {
		if k < 2800 || k > 3200 { // 30% ± 4.4σ
			t.Errorf("lost %d of 10000 at 30%% loss", k)
		}
	}
}

func TestNetJitterBounds(t *testing.T) {
	w := newWorld(t, 2, 3)
	w.n.SetDefault(Link{Delay: 10 * ms, Jitter: 5 * ms})
	for i := range 1000 {
		w.send(1, 2, uint32(i))
	}
	w.clk.Advance(time.Second)
	lo, hi, reordered := time.Hour, time.Duration(0), false
	for i, p := range w.got["h2"] {
		d := time.Duration(p.At)
		lo, hi = min(lo, d), max(hi, d)
		if binary.BigEndian.Uint32(p.Payload) != uint32(i) {
			reordered = true
		}
	}
	if w.count("h2") != 1000 || lo < 10*ms || hi > 15*ms {
		t.Errorf("%d packets arrived between %v and %v, want 1000 within [10ms, 15ms]", w.count("h2"), lo, hi)
	}
	if hi-lo < 4*ms || !reordered {
		t.Errorf("arrivals spread over %v, reordered %v: the jitter is not random", hi-lo, reordered)
	}
}

func TestNetPartitionCutHeal(t *testing.T) {
	w := newWorld(t, 5, 1)
	w.n.SetDefault(Link{Delay: ms})
	reach := func() map[[2]int]bool {
		clear(w.got)
		for i := 1; i <= 5; i++ {
			for j := 1; j <= 5; j++ {
				if i != j {
					w.send(i, j, uint32(i))
				}
			}
		}
		w.clk.Advance(ms)
		out := map[[2]int]bool{}
		for j := 1; j <= 5; j++ {
			for _, p := range w.got[fmt.Sprintf("h%d", j)] {
				out[[2]int{int(binary.BigEndian.Uint32(p.Payload)), j}] = true
			}
		}
		return out
	}
	check := func(what string, can func(i, j int) bool) {
		t.Helper()
		r := reach()
		for i := 1; i <= 5; i++ {
			for j := 1; j <= 5; j++ {
				if i != j && r[[2]int{i, j}] != can(i, j) {
					t.Errorf("%s: h%d→h%d reachable %v, want %v", what, i, j, r[[2]int{i, j}], can(i, j))
				}
			}
		}
	}
	all := func(i, j int) bool { return true }
	check("at start", all)

	// h5 is in no group: it reaches both sides.
	w.n.Partition([]string{"h1", "h2"}, []string{"h3", "h4"})
	side := func(i int) int { return map[int]int{1: 1, 2: 1, 3: 2, 4: 2}[i] }
	check("partitioned", func(i, j int) bool { return side(i) == 0 || side(j) == 0 || side(i) == side(j) })
	if w.rec.Count(func(p Packet) bool { return p.Fate == DropCut }) != 8 {
		t.Errorf("%d packets traced as cut, want 8", w.rec.Count(func(p Packet) bool { return p.Fate == DropCut }))
	}

	w.n.Partition([]string{"h1"}, []string{"h2", "h3", "h4", "h5"}) // replaces the first
	check("repartitioned", func(i, j int) bool { return (i == 1) == (j == 1) })

	w.n.Heal()
	w.n.Cut("h2", "h4")
	check("h2-h4 cut", func(i, j int) bool { return !(i == 2 && j == 4 || i == 4 && j == 2) })

	w.n.Heal()
	check("healed", all)
}

// TestNetCutDropsInFlight: a packet on the wire when its link is cut is
// dropped on arrival, and one sent during a cut stays dropped after it heals.
func TestNetCutDropsInFlight(t *testing.T) {
	w := newWorld(t, 2, 1)
	w.n.SetDefault(Link{Delay: 10 * ms})
	w.send(1, 2, 1)
	w.clk.Advance(5 * ms)
	w.n.Cut("h1", "h2")
	w.send(1, 2, 2)
	w.n.Heal()
	w.send(1, 2, 3)
	w.clk.Advance(time.Second)
	if w.count("h2") != 2 {
		t.Fatalf("h2 got %d packets, want 2 (the first and the third)", w.count("h2"))
	}
	// The first was in flight across the cut but arrives after the heal.
	var fates []Fate
	for _, p := range w.rec.Packets {
		fates = append(fates, p.Fate)
	}
	if want := []Fate{DropCut, Delivered, Delivered}; !slices.Equal(fates, want) {
		t.Errorf("fates %v, want %v", fates, want)
	}
	clear(w.got)
	w.rec.Packets = nil
	w.send(1, 2, 4)
	w.clk.Advance(5 * ms)
	w.n.Partition([]string{"h1"}, []string{"h2"})
	w.clk.Advance(time.Second)
	if w.count("h2") != 0 || w.rec.Packets[0].Fate != DropCut || w.rec.Packets[0].At != w.rec.Packets[0].Sent+int64(10*ms) {
		t.Errorf("partitioned in flight: h2 got %d, trace %v", w.count("h2"), w.rec.Packets)
	}
}

func TestNetDownUp(t *testing.T) {
	w := newWorld(t, 3, 1)
	w.n.SetDefault(Link{Delay: 10 * ms})
	w.send(1, 2, 1) // in flight when h2 dies and revives: dropped
	w.send(1, 3, 1)
	w.clk.Advance(5 * ms)
	w.n.Down("h2")
	w.send(2, 3, 2) // a dead host sends nothing
	w.send(1, 2, 3) // nor receives
	if w.n.Host("h2").IsUp() {
		t.Error("h2 is up after Down")
	}
	w.n.Up("h2")
	w.send(1, 2, 4)
	w.clk.Advance(time.Second)
	if w.count("h2") != 1 || binary.BigEndian.Uint32(w.got["h2"][0].Payload) != 4 {
		t.Errorf("h2 got %v, want only message 4 (sent after Up)", w.got["h2"])
	}
	if w.count("h3") != 1 {
		t.Errorf("h3 got %d, want 1 (h1's, not dead h2's)", w.count("h3"))
	}
	if st := w.n.Host("h2").Stats(); st != (Stats{Sent: 1, Received: 1, Dropped: 1}) {
		t.Errorf("h2 stats %+v, want 1 sent (dropped), 1 received", st)
	}
	if st := w.n.Host("h1").Stats(); st != (Stats{Sent: 4, Received: 0, Dropped: 2}) {
		t.Errorf("h1 stats %+v, want 4 sent, 2 dropped", st)
	}
	if st := w.n.Stats(); st != (Stats{Sent: 5, Received: 2, Dropped: 3}) {
		t.Errorf("net stats %+v", st)
	}
	var fates []Fate
	for _, p := range w.rec.Packets {
		fates = append(fates, p.Fate)
	}
	// In trace order: 2 and 3 dropped as sent, 1→h2 on arrival, 1→h3, 4.
	if want := []Fate{DropDown, DropDown, DropDown, Delivered, Delivered}; !slices.Equal(fates, want) {
		t.Errorf("fates %v, want %v", fates, want)
	}
}

func TestNetNoHostOutsiderAndDropIf(t *testing.T) {
	w := newWorld(t, 2, 1)
	stranger := netip.MustParseAddrPort("203.0.113.9:4000")
	w.n.Send(v4(1), stranger, []byte("x")) // no host owns it
	w.n.Send(stranger, v6(2), []byte("y")) // an outsider reaches every host
	w.n.DropIf(func(p Packet) bool { return p.From == "h1" && string(p.Payload) == "drop me" })
	w.n.Send(v4(1), v4(2), []byte("drop me"))
	w.n.Send(v4(1), v4(2), []byte("keep me"))
	w.n.DropIf(nil)
	w.n.Send(v4(1), v4(2), []byte("drop me"))
	w.clk.Advance(0)
	var got []string
	for _, p := range w.got["h2"] {
		got = append(got, string(p.Payload))
	}
	if want := []string{"y", "keep me", "drop me"}; !slices.Equal(got, want) {
		t.Errorf("h2 got %q, want %q", got, want)
	}
	if p := w.rec.Packets[0]; p.Fate != DropNoHost || p.To != "" || p.From != "h1" {
		t.Errorf("first packet traced as %v", p)
	}
	if p := w.rec.Packets[1]; p.Fate != DropFilter {
		t.Errorf("second traced packet (the filtered one, dropped as sent) is %v", p)
	}
}

func TestNetAddHostRejectsDuplicates(t *testing.T) {
	for _, c := range []struct {
		name string
		add  func(n *Net)
	}{
		{"name", func(n *Net) { n.AddHost("h1", v4(9).Addr()) }},
		{"address", func(n *Net) { n.AddHost("h9", v6(1).Addr()) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := NewNet(NewClock(), 1)
			n.AddHost("h1", v4(1).Addr(), v6(1).Addr())
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			c.add(n)
		})
	}
}

// gossip runs a small lossy, jittery epidemic with a partition and a kill
// and returns its trace: every host forwards each new rumour to two peers
// that its own seeded choice picks.
func gossip(t *testing.T, seed uint64) []string {
	w := newWorld(t, 8, seed)
	w.n.SetDefault(Link{Delay: 5 * ms, Jitter: 3 * ms, Loss: 0.1})
	heard := map[string]map[uint32]bool{}
	for i := 1; i <= 8; i++ {
		name := fmt.Sprintf("h%d", i)
		heard[name] = map[uint32]bool{}
		w.n.Host(name).Handle(func(src, dst netip.AddrPort, b []byte) {
			r := binary.BigEndian.Uint32(b)
			if heard[name][r] {
				return
			}
			heard[name][r] = true
			for k := range 2 {
				w.send(i, 1+int(r*7+uint32(i)*3+uint32(k)*5)%8, r)
			}
		})
	}
	var next uint32
	w.clk.Every(20*ms, func() {
		next++
		w.send(int(next%8)+1, int(next*3%8)+1, next)
	})
	w.clk.Advance(200 * ms)
	w.n.Partition([]string{"h1", "h2", "h3"}, []string{"h4", "h5", "h6"})
	w.clk.Advance(200 * ms)
	w.n.Down("h7")
	w.n.Heal()
	w.clk.Advance(200 * ms)
	var out []string
	for _, p := range w.rec.Packets {
		out = append(out, fmt.Sprintf("%v %x", p, p.Payload))
	}
	return out
}

func TestNetSameSeedSameTrace(t *testing.T) {
	a, b, c := gossip(t, 42), gossip(t, 42), gossip(t, 43)
	if len(a) < 100 {
		t.Fatalf("only %d packets: the scenario is too small to tell runs apart", len(a))
	}
	if !slices.Equal(a, b) {
		for i := range min(len(a), len(b)) {
			if a[i] != b[i] {
				t.Fatalf("seed 42 twice: traces differ at packet %d:\n%s\n%s", i, a[i], b[i])
			}
		}
		t.Fatalf("seed 42 twice: %d packets, then %d", len(a), len(b))
	}
	if slices.Equal(a, c) {
		t.Error("seeds 42 and 43 gave the identical trace")
	}
	fates := map[string]bool{}
	for _, l := range a {
		for _, f := range []Fate{Delivered, DropLoss, DropCut, DropDown} {
			if slices.Contains(strings.Fields(l), f.String()) {
				fates[f.String()] = true
			}
		}
	}
	if len(fates) != 4 {
		t.Errorf("the trace shows only the fates %v; want every one the scenario causes", fates)
	}
}

// TestNetSendAllocs: a delivered packet costs one allocation, the copy of
// its payload that the handler keeps.
func TestNetSendAllocs(t *testing.T) {
	clk := NewClock()
	n := NewNet(clk, 1)
	n.SetDefault(Link{Delay: ms, Jitter: ms, Loss: 0.01})
	a, b := v4(1), v4(2)
	n.AddHost("a", a.Addr())
	n.AddHost("b", b.Addr()).Handle(func(src, dst netip.AddrPort, p []byte) {})
	payload := make([]byte, 100)
	if got := testing.AllocsPerRun(1000, func() {
		for range 10 {
			n.Send(a, b, payload)
		}
		clk.Advance(10 * ms)
	}); got > 10 {
		t.Errorf("%v allocations per 10 packets, want at most 10", got)
	}
}

func BenchmarkSendDeliver(b *testing.B) {
	clk := NewClock()
	n := NewNet(clk, 1)
	n.SetDefault(Link{Delay: ms, Jitter: ms})
	var hosts []netip.AddrPort
	for i := range 100 {
		hosts = append(hosts, v4(i+1))
		n.AddHost(fmt.Sprint(i), hosts[i].Addr()).Handle(func(src, dst netip.AddrPort, p []byte) {})
	}
	payload := make([]byte, 100)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		n.Send(hosts[i%100], hosts[(i*7+1)%100], payload)
		if i%100 == 99 {
			clk.Advance(10 * ms)
		}
	}
}

// A burst leaves no high-water mark: once most of it has arrived, what is
// still in flight moves to a smaller table, and arrives as it would have.
func TestNetCompactsAfterBurst(t *testing.T) {
	run := func() *world {
		w := newWorld(t, 3, 1)
		w.n.SetDefault(Link{Delay: 10 * time.Millisecond, Jitter: 10 * time.Millisecond})
		for k := range 4 << 16 {
			w.send(1, 2, uint32(k))
		}
		// A trickle after it, still in flight when the burst has arrived.
		for k := range 100 {
			w.clk.Advance(time.Millisecond)
			w.send(1, 3, uint32(k))
		}
		return w
	}
	was := compactAbove
	compactAbove = math.MaxInt
	ref := run()
	compactAbove = was
	w := run()
	if len(w.n.flight) >= compactAbove || len(ref.n.flight) < 4<<16 {
		t.Fatalf("%d slots kept after the burst arrived (%d in flight), %d without compaction",
			len(w.n.flight), w.n.inUse, len(ref.n.flight))
	}
	ref.clk.Advance(time.Second)
	w.clk.Advance(time.Second)
	for _, h := range []string{"h2", "h3"} {
		if !slices.EqualFunc(w.got[h], ref.got[h], func(a, b Packet) bool {
			return a.At == b.At && slices.Equal(a.Payload, b.Payload)
		}) {
			t.Errorf("%s got %d packets, not as without compaction (%d)", h, len(w.got[h]), len(ref.got[h]))
		}
	}
	if len(w.got["h2"]) != 4<<16 || len(w.got["h3"]) != 100 {
		t.Errorf("h2 got %d, h3 %d", len(w.got["h2"]), len(w.got["h3"]))
	}
}

// BenchmarkNetHold keeps N packets in flight on a network like the
// simulator's (10 ms delay, 5 ms jitter, 1,000 hosts): each delivery sends
// one more. It reports ns per packet and the heap bytes per packet in
// flight.
func BenchmarkNetHold(b *testing.B) {
	for _, pending := range []int{1e6, 1e7} {
		b.Run(fmt.Sprint(pending), func(b *testing.B) {
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			clk := NewClock()
			n := NewNet(clk, 1)
			n.SetDefault(Link{Delay: 10 * ms, Jitter: 5 * ms})
			const hosts = 1000
			payload := make([]byte, 64)
			k := 0
			addr := func(i int) netip.AddrPort {
				return netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), 51821)
			}
			for i := range hosts {
				n.AddHost(fmt.Sprint(i), addr(i).Addr()).Handle(func(src, dst netip.AddrPort, p []byte) {
					k++
					n.Send(dst, addr(k%hosts), p)
				})
			}
			for i := range pending {
				n.Send(addr(i%hosts), addr((i*7+3)%hosts), payload)
			}
			runtime.GC()
			runtime.ReadMemStats(&m1)
			b.ResetTimer()
			for range b.N {
				clk.Step()
			}
			b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(pending), "heap-B/pending")
		})
	}
}
