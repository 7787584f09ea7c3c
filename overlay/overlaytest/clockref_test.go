package overlaytest

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
)

// refClock is the Clock as it was before the calendar queue: a binary heap
// of timers, removed from it at once when stopped. Kept here as the model
// that TestClockMatchesHeap compares the Clock with.
type refClock struct {
	now     int64
	seq     uint64      // scheduling order, the tie-break between equal due times
	events  []refEvent  // min-heap by (when, seq)
	running bool        // inside Advance, Step or RunUntil
	timers  []*refTimer // pending timers by slot, the refEvent's ref
	free    []int32     // free slots in timers
}

// refEvent is a timer, or a packet delivery, due at when. It holds no
// pointers so that the heap moves it without write barriers, which were
// most of the cost of a packet.
type refEvent struct {
	when int64
	seq  uint64
	ref  int32 // the timer's slot in refClock.timers, or the packet's slot in its Net
	net  int32 // -1 for a timer, else the Net's index in refClock.nets
}

// Now is the virtual time in nanoseconds since the clock started: the time
// base of overlay and router.
func (c *refClock) Now() int64 { return c.now }

// refTimer is a pending call scheduled on a refClock, once (AfterFunc) or
// periodically (Every).
type refTimer struct {
	c      *refClock
	f      func()
	period time.Duration // > 0 for a ticker
	idx    int           // index in c.events, -1 when not pending
}

// AfterFunc calls f once the clock has advanced by d (at the next advance
// if d ≤ 0; never from within AfterFunc itself).
func (c *refClock) AfterFunc(d time.Duration, f func()) *refTimer {
	t := &refTimer{c: c, f: f, idx: -1}
	c.schedule(t, d)
	return t
}

// Every calls f every d, first at d from now, until the returned timer is
// stopped: a proxy's Tick or HealthTick. d must be positive.
func (c *refClock) Every(d time.Duration, f func()) *refTimer {
	if d <= 0 {
		panic(fmt.Sprintf("overlaytest: Every with non-positive period %v", d))
	}
	t := &refTimer{c: c, f: f, period: d, idx: -1}
	c.schedule(t, d)
	return t
}

// Stop cancels the timer (a ticker's future firings too) and reports
// whether it was pending.
func (t *refTimer) Stop() bool {
	if t.idx < 0 {
		return false
	}
	t.c.remove(t.idx)
	return true
}

// Reset reschedules the timer to fire d from now and reports whether it
// was pending. For a ticker, d also becomes the period, as with
// time.Ticker.Reset.
func (t *refTimer) Reset(d time.Duration) bool {
	was := t.Stop()
	if t.period > 0 {
		if d <= 0 {
			panic(fmt.Sprintf("overlaytest: ticker Reset with non-positive period %v", d))
		}
		t.period = d
	}
	t.c.schedule(t, d)
	return was
}

func (c *refClock) schedule(t *refTimer, d time.Duration) {
	var slot int32
	if k := len(c.free); k > 0 {
		slot = c.free[k-1]
		c.free = c.free[:k-1]
	} else {
		slot = int32(len(c.timers))
		c.timers = append(c.timers, nil)
	}
	c.timers[slot] = t
	t.idx = c.push(refEvent{when: c.now + int64(max(d, 0)), ref: slot, net: -1})
}

// Pending is the number of timers and packets in flight.
func (c *refClock) Pending() int { return len(c.events) }

// Advance moves the clock forward by d, running every timer due up to the
// new time in order, each seeing Now equal to its own due time, including
// timers that the callbacks schedule within the window.
func (c *refClock) Advance(d time.Duration) {
	c.enter()
	defer c.leave()
	end := c.now + int64(max(d, 0))
	for len(c.events) > 0 && c.events[0].when <= end {
		c.fireNext()
	}
	c.now = end
}

// Step moves the clock to the earliest pending timer and runs it alone. It
// reports false, leaving the clock as it is, if nothing is pending.
func (c *refClock) Step() bool {
	c.enter()
	defer c.leave()
	if len(c.events) == 0 {
		return false
	}
	c.fireNext()
	return true
}

// RunUntil runs timers in order until cond holds (checked first and after
// each timer) or until the next timer would be later than limit from now.
// It reports whether cond holds; if not, the clock ends at now+limit.
func (c *refClock) RunUntil(cond func() bool, limit time.Duration) bool {
	c.enter()
	defer c.leave()
	end := c.now + int64(max(limit, 0))
	for !cond() {
		if len(c.events) == 0 || c.events[0].when > end {
			c.now = end
			return false
		}
		c.fireNext()
	}
	return true
}

func (c *refClock) enter() {
	if c.running {
		panic("overlaytest: clock advanced from within a timer callback")
	}
	c.running = true
}

func (c *refClock) leave() { c.running = false }

// fireNext pops the earliest refEvent, moves the clock to it and runs it.
func (c *refClock) fireNext() {
	e := c.events[0]
	var t *refTimer
	if e.net < 0 {
		t = c.timers[e.ref] // before remove frees the slot
	}
	c.remove(0)
	c.now = max(c.now, e.when)
	if t.period > 0 {
		// Scheduled before f runs, so that f may Stop or Reset it.
		c.schedule(t, t.period)
	}
	t.f()
}

// The heap is hand-written rather than container/heap, whose interface
// boxes every pushed refEvent (an allocation per packet).

func (c *refClock) less(i, j int) bool {
	a, b := &c.events[i], &c.events[j]
	return a.when < b.when || a.when == b.when && a.seq < b.seq
}

func (c *refClock) swap(i, j int) {
	c.events[i], c.events[j] = c.events[j], c.events[i]
	c.moved(i)
	c.moved(j)
}

// moved tells the timer at heap index i, if any, where it now is.
func (c *refClock) moved(i int) {
	if e := &c.events[i]; e.net < 0 {
		c.timers[e.ref].idx = i
	}
}

// push adds e in scheduling order and returns its index in the heap.
func (c *refClock) push(e refEvent) int {
	c.seq++
	e.seq = c.seq
	c.events = append(c.events, e)
	return c.up(len(c.events) - 1)
}

func (c *refClock) remove(i int) {
	last := len(c.events) - 1
	e := c.events[i]
	if i != last {
		c.swap(i, last)
	}
	if e.net < 0 {
		c.timers[e.ref].idx = -1
		c.timers[e.ref] = nil
		c.free = append(c.free, e.ref)
	}
	c.events = c.events[:last]
	if i != last {
		if !c.down(i) {
			c.up(i)
		}
	}
}

// up sifts i up and returns where it ends.
func (c *refClock) up(i int) int {
	for i > 0 {
		p := (i - 1) / 2
		if !c.less(i, p) {
			break
		}
		c.swap(i, p)
		i = p
	}
	return i
}

// down sifts i down and reports whether it moved.
func (c *refClock) down(i int) bool {
	start, n := i, len(c.events)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && c.less(r, l) {
			j = r
		}
		if !c.less(j, i) {
			break
		}
		c.swap(i, j)
		i = j
	}
	return i > start
}

// clockOps is what the differential test does to a clock: the Clock and
// refClock behind one face, timers by number.
type clockOps interface {
	now() int64
	pending() int
	after(d time.Duration, f func()) // the timer gets the next number
	every(d time.Duration, f func())
	stop(i int) bool
	reset(i int, d time.Duration) bool
	advance(d time.Duration)
	step() bool
	runUntil(cond func() bool, limit time.Duration) bool
}

type newOps struct {
	c  *Clock
	ts []*Timer
}

func (o *newOps) now() int64                        { return o.c.Now() }
func (o *newOps) pending() int                      { return o.c.Pending() }
func (o *newOps) after(d time.Duration, f func())   { o.ts = append(o.ts, o.c.AfterFunc(d, f)) }
func (o *newOps) every(d time.Duration, f func())   { o.ts = append(o.ts, o.c.Every(d, f)) }
func (o *newOps) stop(i int) bool                   { return o.ts[i].Stop() }
func (o *newOps) reset(i int, d time.Duration) bool { return o.ts[i].Reset(d) }
func (o *newOps) advance(d time.Duration)           { o.c.Advance(d) }
func (o *newOps) step() bool                        { return o.c.Step() }
func (o *newOps) runUntil(cond func() bool, limit time.Duration) bool {
	return o.c.RunUntil(cond, limit)
}

type refOps struct {
	c  *refClock
	ts []*refTimer
}

func (o *refOps) now() int64                        { return o.c.Now() }
func (o *refOps) pending() int                      { return o.c.Pending() }
func (o *refOps) after(d time.Duration, f func())   { o.ts = append(o.ts, o.c.AfterFunc(d, f)) }
func (o *refOps) every(d time.Duration, f func())   { o.ts = append(o.ts, o.c.Every(d, f)) }
func (o *refOps) stop(i int) bool                   { return o.ts[i].Stop() }
func (o *refOps) reset(i int, d time.Duration) bool { return o.ts[i].Reset(d) }
func (o *refOps) advance(d time.Duration)           { o.c.Advance(d) }
func (o *refOps) step() bool                        { return o.c.Step() }
func (o *refOps) runUntil(cond func() bool, limit time.Duration) bool {
	return o.c.RunUntil(cond, limit)
}

// randomDelay mixes the delays that matter to a calendar queue: ties (a
// coarse grid), ones within a bucket, across a few, around the ring's
// horizon, far beyond it, and negative ones.
func randomDelay(rng *rand.Rand) time.Duration {
	const w = 1 << bucketShift
	switch rng.IntN(8) {
	case 0:
		return time.Duration(rng.IntN(4)) * w // ties on bucket edges
	case 1:
		return time.Duration(rng.IntN(3 * w))
	case 2:
		return time.Duration(rng.IntN(20)) * ms // ties
	case 3:
		return time.Duration(rng.Int64N(int64(20 * ms)))
	case 4:
		return nBuckets*w + time.Duration(rng.IntN(5*w)) - 3*w // the horizon
	case 5:
		return time.Duration(rng.Int64N(int64(10 * time.Second)))
	case 6:
		return -time.Duration(rng.IntN(1000))
	}
	return time.Duration(rng.IntN(2)) * time.Duration(rng.IntN(3)) * nBuckets * w // whole turns
}

// drive runs one random history on o and returns what it saw.
func drive(seed uint64, o clockOps, ops int) []string {
	rng := rand.New(rand.NewPCG(seed, 7))
	var out []string
	note := func(format string, a ...any) {
		out = append(out, fmt.Sprintf("%d/%d ", o.now(), o.pending())+fmt.Sprintf(format, a...))
	}
	n, fired := 0, 0
	var op func(depth int)
	callback := func(id, depth int) func() {
		return func() {
			fired++
			note("fire %d", id)
			for rng.IntN(3) == 0 {
				op(depth + 1)
			}
		}
	}
	var tickers []int
	period := func() time.Duration { return ms + time.Duration(rng.Int64N(int64(300*ms))) }
	// op does one random thing; from a callback (depth > 0) only what a
	// callback may: schedule one-shot timers, stop and reset.
	op = func(depth int) {
		r := rng.IntN(12)
		if n == 0 || depth > 0 && (r >= 8 || r == 4) || depth > 3 {
			r = 0
		}
		switch {
		case r < 4:
			o.after(randomDelay(rng), callback(n, depth))
			n++
		case r < 5:
			o.every(period(), callback(n, depth))
			tickers = append(tickers, n)
			n++
		case r < 7:
			i := rng.IntN(n)
			note("stop %d %v", i, o.stop(i))
		case r < 8:
			i := rng.IntN(n)
			d := randomDelay(rng)
			if slices.Contains(tickers, i) {
				d = period()
			}
			note("reset %d %v", i, o.reset(i, d))
		case r < 10:
			o.advance(randomDelay(rng))
			note("advanced")
		case r < 11:
			note("step %v", o.step())
		default:
			k := fired + rng.IntN(20)
			note("rununtil %v", o.runUntil(func() bool { return fired >= k }, randomDelay(rng)))
		}
	}
	for range ops {
		op(0)
	}
	for _, i := range tickers {
		o.stop(i)
	}
	o.advance(time.Minute)
	note("end")
	return out
}

// w1 is a bucket's width in ns.
const w1 = 1 << bucketShift

// TestClockMatchesHeap runs random histories of scheduling, stopping,
// resetting (of one-shot timers and tickers, from outside and from
// callbacks) and of Advance, Step and RunUntil on the Clock and on the
// heap it replaced, and wants the same firings at the same times, the
// same results and the same Pending after every step.
func TestClockMatchesHeap(t *testing.T) {
	seeds, ops := uint64(60), 400
	if testing.Short() {
		seeds = 10
	}
	total := 0
	for seed := range seeds {
		got := drive(seed, &newOps{c: NewClock()}, ops)
		want := drive(seed, &refOps{c: &refClock{}}, ops)
		total += len(want)
		if i := firstDiff(got, want); i >= 0 {
			t.Fatalf("seed %d, entry %d: calendar %q, heap %q", seed, i, at(got, i), at(want, i))
		}
	}
	if total < int(seeds)*ops {
		t.Errorf("only %d entries in %d histories", total, seeds)
	}
}

func firstDiff(a, b []string) int {
	for i := range max(len(a), len(b)) {
		if at(a, i) != at(b, i) {
			return i
		}
	}
	return -1
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

// TestClockDenseBurst: a burst of events within a few buckets, with
// callbacks scheduling into the bucket being run, fires as the heap does.
func TestClockDenseBurst(t *testing.T) {
	run := func(o clockOps) []int64 {
		rng := rand.New(rand.NewPCG(3, 3))
		var got []int64
		for i := range 20000 {
			o.after(time.Duration(rng.IntN(3*w1)), func() {
				got = append(got, int64(i), o.now())
				if i%5 == 0 {
					o.after(time.Duration(rng.IntN(w1/4)), func() { got = append(got, -int64(i), o.now()) })
				}
			})
		}
		o.advance(time.Second)
		return got
	}
	if got, want := run(&newOps{c: NewClock()}), run(&refOps{c: &refClock{}}); !slices.Equal(got, want) {
		t.Errorf("burst fired in another order (%d vs %d entries)", len(got), len(want))
	}
}

// BenchmarkClockHold is the classic hold model of an event queue: with N
// events pending (SIM-like: each due 10-15 ms on, as packets are), fire
// the earliest and schedule a new one. It reports ns per event and the
// heap bytes per pending event.
func BenchmarkClockHold(b *testing.B) {
	for _, pending := range []int{1e6, 1e7} {
		b.Run(fmt.Sprint(pending), func(b *testing.B) {
			benchHold(b, pending, func() holdClock { return holdNew{NewClock()} })
		})
		b.Run(fmt.Sprint("heap-", pending), func(b *testing.B) {
			benchHold(b, pending, func() holdClock { return holdRef{&refClock{}} })
		})
	}
}

type holdClock interface {
	after(d time.Duration, f func())
	step() bool
}

// holdNew and holdRef are the clocks for benchHold, which keep no timers.
type holdNew struct{ c *Clock }

func (h holdNew) after(d time.Duration, f func()) { h.c.AfterFunc(d, f) }
func (h holdNew) step() bool                      { return h.c.Step() }

type holdRef struct{ c *refClock }

func (h holdRef) after(d time.Duration, f func()) { h.c.AfterFunc(d, f) }
func (h holdRef) step() bool                      { return h.c.Step() }

func benchHold(b *testing.B, pending int, mk func() holdClock) {
	rng := rand.New(rand.NewPCG(1, 1))
	delay := func() time.Duration { return 10*ms + time.Duration(rng.Int64N(int64(5*ms))) }
	var c holdClock
	var f func()
	f = func() { c.after(delay(), f) }
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	c = mk()
	for range pending {
		c.after(delay(), f)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	b.ResetTimer()
	for range b.N {
		c.step()
	}
	b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(pending), "heap-B/pending")
}
