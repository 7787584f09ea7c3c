package overlaytest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"
)

const ms = time.Millisecond

// log records which callbacks ran, and the clock each saw.
type log struct {
	c   *Clock
	got []string
}

func (l *log) f(name string) func() {
	return func() { l.got = append(l.got, fmt.Sprintf("%s@%v", name, time.Duration(l.c.Now()))) }
}

func TestClockRunsTimersInOrder(t *testing.T) {
	c := NewClock()
	l := &log{c: c}
	c.AfterFunc(30*ms, l.f("c"))
	c.AfterFunc(10*ms, l.f("a1"))
	c.AfterFunc(20*ms, func() {
		l.f("b")()
		c.AfterFunc(0, l.f("b+0"))      // due now: after b2, scheduled before it
		c.AfterFunc(5*ms, l.f("b+5"))   // due at 25ms, inside the window
		c.AfterFunc(90*ms, l.f("late")) // due at 110ms, outside it
	})
	c.AfterFunc(10*ms, l.f("a2")) // ties with a1, scheduled after it
	c.AfterFunc(20*ms, l.f("b2"))
	c.Advance(100 * ms)
	want := []string{"a1@10ms", "a2@10ms", "b@20ms", "b2@20ms", "b+0@20ms", "b+5@25ms", "c@30ms"}
	if !slices.Equal(l.got, want) {
		t.Errorf("ran %v, want %v", l.got, want)
	}
	if c.Now() != int64(100*ms) {
		t.Errorf("Now = %v after Advance(100ms), want 100ms", time.Duration(c.Now()))
	}
	if c.Pending() != 1 {
		t.Errorf("Pending = %d, want 1 (the late timer)", c.Pending())
	}
	c.Advance(10 * ms)
	if got := l.got[len(l.got)-1]; got != "late@110ms" {
		t.Errorf("last ran %s, want late@110ms", got)
	}
}

func TestClockNeverRunsSynchronously(t *testing.T) {
	c := NewClock()
	ran := false
	c.AfterFunc(0, func() { ran = true })
	c.AfterFunc(-time.Second, func() {}) // a negative delay is due now, not in the past
	if ran {
		t.Fatal("AfterFunc(0) ran within AfterFunc")
	}
	c.Advance(0)
	if !ran || c.Now() != 0 {
		t.Errorf("after Advance(0): ran %v, Now %d; want true, 0", ran, c.Now())
	}
}

func TestTimerStopReset(t *testing.T) {
	c := NewClock()
	l := &log{c: c}
	a := c.AfterFunc(10*ms, l.f("a"))
	b := c.AfterFunc(10*ms, l.f("b"))
	d := c.AfterFunc(10*ms, l.f("d"))
	if !a.Stop() {
		t.Error("Stop of a pending timer = false")
	}
	if a.Stop() {
		t.Error("second Stop = true")
	}
	if !b.Reset(30 * ms) {
		t.Error("Reset of a pending timer = false")
	}
	// A callback that stops a timer due at the same instant.
	c.AfterFunc(5*ms, func() { d.Stop() })
	c.Advance(20 * ms)
	if len(l.got) != 0 {
		t.Fatalf("ran %v, want nothing by 20ms", l.got)
	}
	c.Advance(10 * ms)
	if !slices.Equal(l.got, []string{"b@30ms"}) {
		t.Fatalf("ran %v, want [b@30ms]", l.got)
	}
	if b.Reset(5 * ms) {
		t.Error("Reset of a fired timer = true")
	}
	if a.Reset(1 * ms) {
		t.Error("Reset of a stopped timer = true")
	}
	c.Advance(10 * ms)
	if want := []string{"b@30ms", "a@31ms", "b@35ms"}; !slices.Equal(l.got, want) {
		t.Errorf("ran %v, want %v", l.got, want)
	}
}

func TestClockEvery(t *testing.T) {
	c := NewClock()
	l := &log{c: c}
	var tk *Timer
	k := 0
	tk = c.Every(10*ms, func() {
		l.f("t")()
		if k++; k == 3 {
			tk.Reset(25 * ms) // new period
		}
		if k == 5 {
			tk.Stop() // from its own callback
		}
	})
	c.Advance(time.Second)
	want := []string{"t@10ms", "t@20ms", "t@30ms", "t@55ms", "t@80ms"}
	if !slices.Equal(l.got, want) {
		t.Errorf("ran %v, want %v", l.got, want)
	}
	if c.Pending() != 0 {
		t.Errorf("Pending = %d after the ticker stopped itself", c.Pending())
	}
}

func TestClockStepAndRunUntil(t *testing.T) {
	c := NewClock()
	if c.Step() {
		t.Fatal("Step with nothing pending = true")
	}
	n := 0
	c.Every(7*ms, func() { n++ })
	if !c.Step() || n != 1 || c.Now() != int64(7*ms) {
		t.Fatalf("Step: n %d, Now %v; want 1, 7ms", n, time.Duration(c.Now()))
	}
	if !c.RunUntil(func() bool { return n == 4 }, time.Second) || c.Now() != int64(28*ms) {
		t.Fatalf("RunUntil n==4: Now %v, want 28ms", time.Duration(c.Now()))
	}
	if c.RunUntil(func() bool { return n == 100 }, 50*ms) {
		t.Fatal("RunUntil of a condition not met in time = true")
	}
	if n != 11 || c.Now() != int64(78*ms) {
		t.Errorf("after a failed RunUntil: n %d, Now %v; want 11, 78ms", n, time.Duration(c.Now()))
	}
}

func TestClockAdvanceFromCallbackPanics(t *testing.T) {
	c := NewClock()
	c.AfterFunc(ms, func() { c.Advance(ms) })
	defer func() {
		if recover() == nil {
			t.Error("Advance within a callback did not panic")
		}
	}()
	c.Advance(time.Second)
}

func TestClockWall(t *testing.T) {
	c := NewClock()
	c.Advance(90 * time.Minute)
	if got, want := c.Wall(), time.Date(2025, 1, 1, 1, 30, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Wall = %v, want %v", got, want)
	}
}

// TestClockRandomized checks the heap against an obvious model: a list of
// (due, seq) sorted on every firing, under random scheduling, stops and
// resets, some made from callbacks.
func TestClockRandomized(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		c := NewClock()
		type mt struct {
			id       int
			due, seq int64
			live     bool
		}
		var model []*mt
		var timers []*Timer
		var seq int64
		var got, want []int
		var schedule func(d time.Duration) int
		op := func() {
			switch r := rng.IntN(10); {
			case r < 5 || len(timers) == 0:
				schedule(time.Duration(rng.IntN(50)) * ms)
			case r < 7:
				i := rng.IntN(len(timers))
				if timers[i].Stop() != model[i].live {
					t.Fatalf("seed %d: Stop result differs from the model", seed)
				}
				model[i].live = false
			default:
				i := rng.IntN(len(timers))
				d := time.Duration(rng.IntN(50)) * ms
				if timers[i].Reset(d) != model[i].live {
					t.Fatalf("seed %d: Reset result differs from the model", seed)
				}
				seq++
				model[i].due, model[i].seq, model[i].live = c.Now()+int64(d), seq, true
			}
		}
		schedule = func(d time.Duration) int {
			id := len(timers)
			seq++
			model = append(model, &mt{id: id, due: c.Now() + int64(d), seq: seq, live: true})
			timers = append(timers, c.AfterFunc(d, func() {
				got = append(got, id)
				// The model's next timer must be this one.
				live := []*mt{}
				for _, m := range model {
					if m.live {
						live = append(live, m)
					}
				}
				sort.Slice(live, func(i, j int) bool {
					return live[i].due < live[j].due || live[i].due == live[j].due && live[i].seq < live[j].seq
				})
				want = append(want, live[0].id)
				live[0].live = false
				if rng.IntN(3) == 0 {
					op()
				}
			}))
			return id
		}
		for range 200 {
			op()
			if rng.IntN(4) == 0 {
				c.Advance(time.Duration(rng.IntN(30)) * ms)
			}
		}
		c.Advance(time.Hour)
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d: fired %v, model says %v", seed, got, want)
		}
		if len(got) < 100 || c.Pending() != 0 {
			t.Fatalf("seed %d: %d fired, %d pending after the last timer", seed, len(got), c.Pending())
		}
	}
}
