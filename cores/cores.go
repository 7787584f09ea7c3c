// Package cores chooses how many cores a node's Go runtime runs on, by the
// node's own load: one while one is enough, all of them once it is busy.
//
// A packet crosses a WireGuard device through a pipeline of goroutines
// (receive, decrypt, route, encrypt, send). With several Ps, each handoff
// may wake another thread: a futex call and a wait for the kernel to run
// that thread. On one P the next goroutine runs on the same thread. On the
// namespace lab (every node on 2 shared cores), every node on one P, against
// two, took 20-25 % less CPU per relayed byte at each proxy, and a proxy more
// on a path added 118 µs to the median round trip instead of 175 (README,
// "the cost of a proxy hop"). One P caps a node at one core of
// cryptography, so the Adapter gives it every core as soon as it keeps one
// busy.
package cores

import (
	"runtime"
	"sync"
	"time"
)

// The policy. A node goes to every core after one interval in which it
// used at least Up of a core, and back to one after DownAfter intervals in
// a row below Down. On one P a node cannot use much more than one core, so
// Up is a share of it; Down is below what the same load costs on one P
// (more Ps cost more per byte, never less), so the two do not flap.
const (
	Interval  = time.Second
	Up        = 0.8
	Down      = 0.5
	DownAfter = 10
)

// Adapter decides, from samples of the process's CPU time, the number of
// Ps to run with: 1 or Max.
type Adapter struct {
	Max  int // every core the process may use (GOMAXPROCS at start)
	cur  int
	low  int     // samples in a row below Down
	busy float64 // cores used in the last interval
	last sample
}

type sample struct {
	at  time.Time
	cpu time.Duration
}

// Step takes the process's CPU time (user and system, all threads) at now,
// and returns the number of Ps from now on. The first call starts at one.
func (a *Adapter) Step(now time.Time, cpu time.Duration) int {
	prev := a.last
	a.last = sample{now, cpu}
	if a.cur == 0 || a.Max <= 1 {
		a.cur = 1
		return a.cur
	}
	wall := now.Sub(prev.at)
	if wall <= 0 {
		return a.cur
	}
	busy := float64(cpu-prev.cpu) / float64(wall)
	a.busy = busy
	switch {
	case a.cur == 1 && busy >= Up:
		a.cur, a.low = a.Max, 0
	case a.cur > 1 && busy < Down:
		if a.low++; a.low >= DownAfter {
			a.cur, a.low = 1, 0
		}
	default:
		a.low = 0
	}
	return a.cur
}

// Start runs the Adapter on this process until the returned stop, which
// gives the runtime back the Ps it had, and logs each switch. It does
// nothing when GOMAXPROCS is set in the environment (the user chose), the
// process has one core, or its CPU time cannot be read.
//
// Setting GOMAXPROCS stops the runtime from following a change of the
// cgroup's CPU limit (Go 1.25 on); Max stays what it was at start.
func Start(getenv func(string) string, logf func(format string, args ...any)) (stop func()) {
	n := runtime.GOMAXPROCS(0)
	cpu, ok := cpuTime()
	if getenv("GOMAXPROCS") != "" || n <= 1 || !ok {
		return func() {}
	}
	a := &Adapter{Max: n}
	runtime.GOMAXPROCS(a.Step(time.Now(), cpu))
	done := make(chan struct{})
	finished := make(chan struct{})
	t := time.NewTicker(Interval)
	go func() {
		defer close(finished)
		defer t.Stop()
		a.run(t.C, done, time.Now, cpuTime, func(p int) {
			runtime.GOMAXPROCS(p)
			logf("runs on %d of %d cores (GOMAXPROCS): %.2f cores busy in the last %v", p, n, a.busy, Interval)
		})
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
			runtime.GOMAXPROCS(n)
		})
	}
}

// run samples the process's CPU time at each tick until done, and calls
// set when the Ps to run with change. A tick whose CPU time cannot be read
// is skipped: the next good one spans both.
func (a *Adapter) run(ticks <-chan time.Time, done <-chan struct{}, now func() time.Time, cpuTime func() (time.Duration, bool), set func(int)) {
	for {
		select {
		case <-done:
			return
		case <-ticks:
			cpu, ok := cpuTime()
			if !ok {
				continue
			}
			// Now, not the tick's time: the tick may be read late, and
			// the two figures must cover the same span.
			if was := a.cur; a.Step(now(), cpu) != was {
				set(a.cur)
			}
		}
	}
}
