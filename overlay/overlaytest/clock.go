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
	seq     uint64 // scheduling order, the tie-break between equal due times
	q       queue
	live    int      // events in q that are not stale (a stopped timer's)
	running bool     // inside Advance, Step or RunUntil
	timers  []*Timer // timers with events in q, by slot: the event's ref
	free    []int32  // free slots in timers
	nets    []*Net   // the Nets on this clock, by event.net
}

// event is a timer, or a packet delivery, due at when. It holds no
// pointers so that the queue moves it without write barriers, and the
// collector never scans the queue.
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
//
// Stop and Reset leave the timer's old event in the queue, stale, to be
// skipped when its time comes: the queue cannot find an event to take it
// out, and a packet of a simulation is never stopped.
type Timer struct {
	c      *Clock
	f      func()
	period time.Duration // > 0 for a ticker
	seq    uint64        // the seq of its pending event; 0 when not pending
	slot   int32         // its slot in c.timers while it has events queued, else -1
	queued int32         // its events in the queue, pending or stale
}

// AfterFunc calls f once the clock has advanced by d (at the next advance
// if d ≤ 0; never from within AfterFunc itself).
func (c *Clock) AfterFunc(d time.Duration, f func()) *Timer {
	t := &Timer{c: c, f: f, slot: -1}
	c.schedule(t, d)
	return t
}

// Every calls f every d, first at d from now, until the returned timer is
// stopped: a proxy's Tick or HealthTick. d must be positive.
func (c *Clock) Every(d time.Duration, f func()) *Timer {
	if d <= 0 {
		panic(fmt.Sprintf("overlaytest: Every with non-positive period %v", d))
	}
	t := &Timer{c: c, f: f, period: d, slot: -1}
	c.schedule(t, d)
	return t
}

// Stop cancels the timer (a ticker's future firings too) and reports
// whether it was pending.
func (t *Timer) Stop() bool {
	if t.seq == 0 {
		return false
	}
	t.seq = 0
	t.c.live--
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
	if t.slot < 0 {
		if k := len(c.free); k > 0 {
			t.slot = c.free[k-1]
			c.free = c.free[:k-1]
		} else {
			t.slot = int32(len(c.timers))
			c.timers = append(c.timers, nil)
		}
		c.timers[t.slot] = t
	}
	t.queued++
	t.seq = c.push(c.now+int64(max(d, 0)), t.slot, -1)
}

// unqueued notes that one of t's events left the queue, and frees its slot
// if that was the last.
func (c *Clock) unqueued(t *Timer) {
	if t.queued--; t.queued == 0 {
		c.timers[t.slot] = nil
		c.free = append(c.free, t.slot)
		t.slot = -1
	}
}

// push queues an event in scheduling order and returns its seq.
func (c *Clock) push(when int64, ref, net int32) uint64 {
	c.seq++
	c.live++
	c.q.push(event{when: when, seq: c.seq, ref: ref, net: net})
	return c.seq
}

// Pending is the number of timers and packets in flight.
func (c *Clock) Pending() int { return c.live }

// Advance moves the clock forward by d, running every timer due up to the
// new time in order, each seeing Now equal to its own due time, including
// timers that the callbacks schedule within the window.
func (c *Clock) Advance(d time.Duration) {
	c.enter()
	defer c.leave()
	end := c.now + int64(max(d, 0))
	for e := c.next(); e != nil && e.when <= end; e = c.next() {
		c.fireNext()
	}
	c.now = end
}

// Step moves the clock to the earliest pending timer and runs it alone. It
// reports false, leaving the clock as it is, if nothing is pending.
func (c *Clock) Step() bool {
	c.enter()
	defer c.leave()
	if c.next() == nil {
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
		if e := c.next(); e == nil || e.when > end {
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

// next is the earliest live event, or nil if none is pending; it drops
// the stale events before it.
func (c *Clock) next() *event {
	for {
		e := c.q.peek()
		if e == nil || e.net >= 0 {
			return e
		}
		t := c.timers[e.ref]
		if t.seq == e.seq {
			return e
		}
		c.q.pop()
		c.unqueued(t)
	}
}

// fireNext pops the event next returned, moves the clock to it and runs it.
func (c *Clock) fireNext() {
	e := *c.q.peek()
	c.q.pop()
	c.live--
	c.now = max(c.now, e.when)
	if e.net >= 0 {
		c.nets[e.net].deliver(e.ref)
		return
	}
	t := c.timers[e.ref]
	t.seq = 0
	if t.period > 0 {
		// Scheduled before f runs, so that f may Stop or Reset it.
		c.schedule(t, t.period)
	}
	c.unqueued(t)
	t.f()
}
