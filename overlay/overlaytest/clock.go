package overlaytest

import (
	"fmt"
	"time"
)

// epoch is the wall-clock time at which every Clock starts, fixed so that
// runs (and hello timestamps in them) repeat exactly.
var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Clock is a virtual monotonic clock. Time stands still until the caller
// moves it with Advance, Step or RunUntil, which run the timers that fall
// due in time order: earlier due time first, and timers due at the same
// instant in the order they were scheduled (an AfterFunc, Reset, or a
// ticker's next firing each count as scheduling).
//
// A Clock is not safe for concurrent use: timer callbacks (and the Net's
// deliveries) run on the goroutine that advances the clock, one at a
// time, which is what makes a run repeatable. Callbacks may schedule,
// stop and reset timers and send packets, but must not advance the clock.
type Clock struct {
	now     int64
	seq     uint64   // scheduling order, the tie-break between equal due times
	events  []event  // min-heap by (when, seq)
	running bool     // inside Advance, Step or RunUntil
	timers  []*Timer // pending timers by slot, the event's ref
	free    []int32  // free slots in timers
	nets    []*Net   // the Nets on this clock, by event.net
}

// event is a timer, or a packet delivery, due at when. It holds no
// pointers so that the heap moves it without write barriers, which were
// most of the cost of a packet.
type event struct {
	when int64
	seq  uint64
	ref  int32 // the timer's slot in Clock.timers, or the packet's slot in its Net
	net  int32 // -1 for a timer, else the Net's index in Clock.nets
}

// NewClock returns a clock at time 0 with no timers. Code that takes a
// zero time for "never" wants the clock moved on first: Advance(time.Hour)
// costs nothing when no timer is pending.
func NewClock() *Clock { return &Clock{} }

// Now is the virtual time in nanoseconds since the clock started: the time
// base of overlay and router.
func (c *Clock) Now() int64 { return c.now }

// Wall is the virtual wall-clock time: 2025-01-01 00:00 UTC plus Now, the
// same in every run.
func (c *Clock) Wall() time.Time { return epoch.Add(time.Duration(c.now)) }

// Timer is a pending call scheduled on a Clock, once (AfterFunc) or
// periodically (Every).
type Timer struct {
	c      *Clock
	f      func()
	period time.Duration // > 0 for a ticker
	idx    int           // index in c.events, -1 when not pending
}

// AfterFunc calls f once the clock has advanced by d (at the next advance
// if d ≤ 0; never from within AfterFunc itself).
func (c *Clock) AfterFunc(d time.Duration, f func()) *Timer {
	t := &Timer{c: c, f: f, idx: -1}
	c.schedule(t, d)
	return t
}

// Every calls f every d, first at d from now, until the returned timer is
// stopped: a proxy's Tick or HealthTick. d must be positive.
func (c *Clock) Every(d time.Duration, f func()) *Timer {
	if d <= 0 {
		panic(fmt.Sprintf("overlaytest: Every with non-positive period %v", d))
	}
	t := &Timer{c: c, f: f, period: d, idx: -1}
	c.schedule(t, d)
	return t
}

// Stop cancels the timer (a ticker's future firings too) and reports
// whether it was pending.
func (t *Timer) Stop() bool {
	if t.idx < 0 {
		return false
	}
	t.c.remove(t.idx)
	return true
}

// Reset reschedules the timer to fire d from now and reports whether it
// was pending. For a ticker, d also becomes the period, as with
// time.Ticker.Reset.
func (t *Timer) Reset(d time.Duration) bool {
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

func (c *Clock) schedule(t *Timer, d time.Duration) {
	var slot int32
	if k := len(c.free); k > 0 {
		slot = c.free[k-1]
		c.free = c.free[:k-1]
	} else {
		slot = int32(len(c.timers))
		c.timers = append(c.timers, nil)
	}
	c.timers[slot] = t
	t.idx = c.push(event{when: c.now + int64(max(d, 0)), ref: slot, net: -1})
}

// Pending is the number of timers and packets in flight.
func (c *Clock) Pending() int { return len(c.events) }

// Advance moves the clock forward by d, running every timer due up to the
// new time in order, each seeing Now equal to its own due time, including
// timers that the callbacks schedule within the window.
func (c *Clock) Advance(d time.Duration) {
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
func (c *Clock) Step() bool {
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
func (c *Clock) RunUntil(cond func() bool, limit time.Duration) bool {
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

func (c *Clock) enter() {
	if c.running {
		panic("overlaytest: clock advanced from within a timer callback")
	}
	c.running = true
}

func (c *Clock) leave() { c.running = false }

// fireNext pops the earliest event, moves the clock to it and runs it.
func (c *Clock) fireNext() {
	e := c.events[0]
	var t *Timer
	if e.net < 0 {
		t = c.timers[e.ref] // before remove frees the slot
	}
	c.remove(0)
	c.now = max(c.now, e.when)
	if t == nil {
		c.nets[e.net].deliver(e.ref)
		return
	}
	if t.period > 0 {
		// Scheduled before f runs, so that f may Stop or Reset it.
		c.schedule(t, t.period)
	}
	t.f()
}

// The heap is hand-written rather than container/heap, whose interface
// boxes every pushed event (an allocation per packet).

func (c *Clock) less(i, j int) bool {
	a, b := &c.events[i], &c.events[j]
	return a.when < b.when || a.when == b.when && a.seq < b.seq
}

func (c *Clock) swap(i, j int) {
	c.events[i], c.events[j] = c.events[j], c.events[i]
	c.moved(i)
	c.moved(j)
}

// moved tells the timer at heap index i, if any, where it now is.
func (c *Clock) moved(i int) {
	if e := &c.events[i]; e.net < 0 {
		c.timers[e.ref].idx = i
	}
}

// push adds e in scheduling order and returns its index in the heap.
func (c *Clock) push(e event) int {
	c.seq++
	e.seq = c.seq
	c.events = append(c.events, e)
	return c.up(len(c.events) - 1)
}

func (c *Clock) remove(i int) {
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
func (c *Clock) up(i int) int {
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
func (c *Clock) down(i int) bool {
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
