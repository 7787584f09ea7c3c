package cores

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"
)

// TestAdapterStep feeds the Adapter a second of CPU time per interval at a
// given load and checks the Ps it asks for after each.
func TestAdapterStep(t *testing.T) {
	type step struct {
		busy float64 // cores used in the interval before this sample
		want int
	}
	repeat := func(n int, s step) []step {
		r := make([]step, n)
		for i := range r {
			r[i] = s
		}
		return r
	}
	cat := func(parts ...[]step) []step {
		var r []step
		for _, p := range parts {
			r = append(r, p...)
		}
		return r
	}
	tests := []struct {
		name  string
		max   int
		steps []step
	}{
		{"idle stays on one", 4, repeat(30, step{0.1, 1})},
		{"just under Up stays on one", 4, repeat(5, step{Up - 0.01, 1})},
		{"a busy interval takes every core", 4, []step{{0.2, 1}, {Up, 4}, {1.5, 4}}},
		{"back to one after DownAfter quiet intervals", 2, cat(
			[]step{{0.9, 2}},
			repeat(DownAfter-1, step{Down - 0.01, 2}),
			[]step{{Down - 0.01, 1}, {0.3, 1}},
		)},
		{"a busy interval restarts the count", 2, cat(
			[]step{{1, 2}},
			repeat(DownAfter-1, step{0.1, 2}),
			[]step{{Down, 2}},
			repeat(DownAfter-1, step{0.1, 2}),
			[]step{{0.1, 1}},
		)},
		{"one core only", 1, repeat(3, step{1, 1})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Adapter{Max: tt.max}
			now := time.Unix(1000, 0)
			var cpu time.Duration
			if got := a.Step(now, cpu); got != 1 {
				t.Fatalf("first step: %d Ps, want 1", got)
			}
			for i, s := range tt.steps {
				now = now.Add(Interval)
				cpu += time.Duration(s.busy * float64(Interval))
				if got := a.Step(now, cpu); got != s.want {
					t.Fatalf("step %d (%.2f cores busy): %d Ps, want %d", i, s.busy, got, s.want)
				}
			}
		})
	}
}

// TestAdapterSameInstant: two samples at one instant (a clock that did not
// move) change nothing.
func TestAdapterSameInstant(t *testing.T) {
	a := &Adapter{Max: 2}
	now := time.Unix(1000, 0)
	a.Step(now, 0)
	if got := a.Step(now, time.Second); got != 1 {
		t.Fatalf("%d Ps after a sample with no time passed, want 1", got)
	}
}

// TestStart: on one P at start, the Ps it had after stop (which may be
// called twice), and nothing when GOMAXPROCS is in the environment.
func TestStart(t *testing.T) {
	if _, ok := cpuTime(); !ok {
		t.Skip("no CPU time on this system")
	}
	orig := runtime.GOMAXPROCS(2)
	defer runtime.GOMAXPROCS(orig)

	stop := Start(func(string) string { return "" }, t.Logf)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("after Start: GOMAXPROCS %d, want 1", got)
	}
	stop()
	stop()
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("after stop: GOMAXPROCS %d, want 2 again", got)
	}

	stop = Start(func(k string) string {
		if k == "GOMAXPROCS" {
			return "2"
		}
		return ""
	}, t.Logf)
	defer stop()
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("with GOMAXPROCS in the environment: %d Ps, want the 2 it set", got)
	}
}

// TestPolicy pins the figures the README states.
func TestPolicy(t *testing.T) {
	if Interval != time.Second || Up != 0.8 || Down != 0.5 || DownAfter != 10 {
		t.Errorf("policy %v, up %v, down %v after %d; the README says 1s, 0.8, 0.5 after 10", Interval, Up, Down, DownAfter)
	}
}

// TestAdapterRun drives run's loop with ticks and CPU readings: a busy
// second switches once, a reading that fails is skipped rather than taken
// as a process that used no CPU (and then a huge one), and done stops it.
func TestAdapterRun(t *testing.T) {
	type reading struct {
		busy float64 // cores since the last good reading
		ok   bool
	}
	readings := []reading{
		{0.1, true},
		{0, false}, // getrusage failed
		{0.2, true},
		{0.9, true}, // busy: every core
		{1.2, true},
		{0, false},
		{1.0, true},
	}
	clock := time.Unix(1000, 0)
	cpu := 100 * time.Second // what the process used before
	a := &Adapter{Max: 4}
	a.Step(clock, cpu)
	ticks := make(chan time.Time)
	done := make(chan struct{})
	var sets []string
	i := 0
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		a.run(ticks, done,
			func() time.Time { return clock },
			func() (time.Duration, bool) {
				r := readings[i]
				i++
				clock = clock.Add(Interval)
				if !r.ok {
					return 0, false
				}
				cpu += time.Duration(r.busy * float64(Interval))
				return cpu, true
			},
			func(p int) { sets = append(sets, fmt.Sprintf("%d Ps after reading %d", p, i-1)) })
	}()
	for range readings {
		ticks <- time.Time{} // run reads its own clock
	}
	close(done)
	<-finished
	if want := []string{"4 Ps after reading 3"}; !slices.Equal(sets, want) {
		t.Errorf("switches %q, want %q (the busy reading)", sets, want)
	}
}
