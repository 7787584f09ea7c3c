package sim

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
)

// smallTrace is a 40-minute event of peak n members over p proxies, its
// times on whole milliseconds so that a 1 ns link has delivered every
// registration before the next event.
func smallTrace(n, p int, seed uint64) ([]Event, time.Duration) {
	tp := DefaultTrace(n, p, seed)
	tp.Duration, tp.MaxSession, tp.MinSession = 40*time.Minute, 10*time.Minute, time.Minute
	ev := Synthetic(tp)
	for i := range ev {
		ev[i].At = ev[i].At.Truncate(time.Millisecond)
	}
	SortEvents(ev)
	return ev, tp.Duration
}

// checkViews returns a Check that asserts every RAP's view of every JAP
// is within pct of its count (and 0 exactly when the count is), before
// each event at a new instant.
func checkViews(t *testing.T, pct float64, checks *int) func(*View) {
	last := time.Duration(-1)
	return func(v *View) {
		if v.At == last {
			return // the previous event's registrations are still in flight
		}
		last = v.At
		*checks++
		for r := 0; r < v.RAPs(); r++ {
			for j, n := range v.Count {
				got := v.RAPView(r, j)
				if (n == 0) != (got == 0) || float64(abs(n-got))*100 > pct*float64(got) {
					t.Fatalf("at %v, RAP %d holds %d for JAP %d, which has %d (inaccuracy %g%%)", v.At, r, got, j, n, pct)
				}
			}
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func TestFig6RAPViewsWithinInaccuracy(t *testing.T) {
	ev, dur := smallTrace(300, 12, 7)
	var totals []uint64
	for _, x := range []float64{0, 5, 25, 50} {
		checks := 0
		r, err := RunFig6(Fig6Config{Proxies: 12, Trace: ev, Duration: dur, Inaccuracy: x, Seed: 7,
			Link: overlaytest.Link{Delay: time.Nanosecond}, Check: checkViews(t, x, &checks)})
		if err != nil {
			t.Fatal(err)
		}
		if checks < len(ev)/2 {
			t.Fatalf("only %d checks for %d events", checks, len(ev))
		}
		if x == 0 {
			// Every change of a count went to every RAP: one change report
			// per RAP for each join and leave (no two at one JAP and instant
			// here, or the check above would have caught a stale view).
			if r.Total.Changes != uint64(4*len(ev)) {
				t.Errorf("at 0%%: %d change reports for %d joins and leaves to 4 RAPs, want %d", r.Total.Changes, len(ev), 4*len(ev))
			}
		}
		totals = append(totals, r.Total.Registers)
		t.Logf("%g%%: %d registers (%d changes, %d refreshes) for %d events, peak %d", x, r.Total.Registers, r.Total.Changes, r.Total.Refreshes, len(ev), r.Peak)
	}
	for i := 1; i < len(totals); i++ {
		if totals[i] > totals[i-1] {
			t.Errorf("messages grow with inaccuracy: %v", totals)
		}
	}
	if totals[0] <= totals[len(totals)-1] {
		t.Errorf("inaccuracy saved nothing: %v", totals)
	}
}

func TestFig6SameSeedSameCSV(t *testing.T) {
	run := func(dir string) {
		_, err := RunFig6Grid(Fig6Options{Proxies: []int{8}, Members: []int{150}, Inaccuracies: []float64{0, 25}, Seed: 3, Out: dir})
		if err != nil {
			t.Fatal(err)
		}
	}
	a, b := t.TempDir(), t.TempDir()
	run(a)
	run(b)
	for _, name := range []string{"fig6_series.csv", "fig6_averages.csv", "fig6_series.svg", "fig6_averages.svg", "fig6_summary.md"} {
		x, err := os.ReadFile(filepath.Join(a, name))
		if err != nil {
			t.Fatal(err)
		}
		y, _ := os.ReadFile(filepath.Join(b, name))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two runs with one seed", name)
		}
		if len(x) < 100 {
			t.Errorf("%s is nearly empty: %q", name, x)
		}
	}
	// And another seed, another trace.
	c := t.TempDir()
	if _, err := RunFig6Grid(Fig6Options{Proxies: []int{8}, Members: []int{150}, Inaccuracies: []float64{0, 25}, Seed: 4, Out: c}); err != nil {
		t.Fatal(err)
	}
	x, _ := os.ReadFile(filepath.Join(a, "fig6_series.csv"))
	y, _ := os.ReadFile(filepath.Join(c, "fig6_series.csv"))
	if bytes.Equal(x, y) {
		t.Error("seeds 3 and 4 gave the same series")
	}
}

func TestSyntheticTracePeaks(t *testing.T) {
	tp := DefaultTrace(20000, 50, 1)
	ev := Synthetic(tp)
	n, peak := 0, 0
	for _, e := range ev {
		if e.Join {
			n++
		} else {
			n--
		}
		peak = max(peak, n)
		if e.At > tp.Duration {
			t.Fatalf("event at %v, after the event's end %v", e.At, tp.Duration)
		}
	}
	if n != 0 || peak < 19000 || peak > 21000 {
		t.Errorf("peak %d (want about 20000), %d left at the end", peak, n)
	}
}

func TestTraceCSV(t *testing.T) {
	ev, _ := smallTrace(100, 5, 2)
	var b bytes.Buffer
	if err := WriteTrace(&b, ev); err != nil {
		t.Fatal(err)
	}
	got, err := ReadTrace(&b, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ev) {
		t.Fatalf("read %d events, wrote %d", len(got), len(ev))
	}
	for i := range ev {
		if got[i] != ev[i] {
			t.Fatalf("event %d: read %+v, wrote %+v", i, got[i], ev[i])
		}
	}
	for _, bad := range []string{
		"1,0,join\n2,5,join\n",     // proxy out of range
		"1,0,leave\n",              // a leave before any join
		"1,0,join\nx,0,leave\n",    // bad time
		"1,0,join\n-1,0,join\n",    // negative time
		"1,0,join\n1,0,jump\n",     // bad kind
		"1,0,join\n1,0\n",          // short line
		"1,0,join\nNaN,0,join\n",   // not a number
		"1,0,join\n1e300,0,join\n", // beyond any event
		"1,0,join\n1,99999999999999999999,join\n",
	} {
		if _, err := ReadTrace(strings.NewReader(bad), 5); err == nil {
			t.Errorf("ReadTrace(%q) took it", bad)
		}
	}
}

func FuzzReadTrace(f *testing.F) {
	f.Add("seconds,proxy,event\n1.5,0,join\n2,0,leave\n")
	f.Fuzz(func(t *testing.T, s string) {
		ev, err := ReadTrace(strings.NewReader(s), 4)
		if err != nil {
			return
		}
		n := make([]int, 4)
		for _, e := range ev {
			if e.Join {
				n[e.Proxy]++
			} else if n[e.Proxy]--; n[e.Proxy] < 0 {
				t.Fatalf("a leave with no member: %+v", e)
			}
		}
	})
}

func TestFailuresDetectedEverywhere(t *testing.T) {
	// Clusters of 10 and of 20: at rest, each proxy probes 8 peers of its
	// cluster (ClusterProbes) and 2 members of each of 2 other clusters, a
	// probe and an ack ten times a second: (8+4)×20 = 240 either way (it
	// was 260 and 460 when every proxy probed its whole cluster).
	for _, tc := range []struct{ cluster, rest int }{{10, 240}, {20, 240}} {
		r, err := RunFailures(FailuresConfig{Proxies: 80, Cluster: tc.cluster, Seed: 1, Rest: 2 * time.Second, Window: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Events) != 3 {
			t.Fatalf("%d events", len(r.Events))
		}
		for _, e := range r.Events {
			if e.Missed > 0 || e.Detect.Len() == 0 {
				t.Errorf("clusters of %d: %s: %d of %d pairs never learned the death", tc.cluster, e.Name, e.Missed, e.Missed+e.Detect.Len())
			}
			if e.False > 0 {
				t.Errorf("clusters of %d: %s: %d false deaths", tc.cluster, e.Name, e.False)
			}
			if mx := e.Detect.Percentile(100); mx > 3*time.Second {
				t.Errorf("clusters of %d: %s: slowest detection %v", tc.cluster, e.Name, mx)
			}
		}
		if r.RestPerProxy < float64(tc.rest)-5 || r.RestPerProxy > float64(tc.rest)+5 {
			t.Errorf("clusters of %d: at rest %.1f msgs/proxy/s, want about %d (%v)", tc.cluster, r.RestPerProxy, tc.rest, r.RestByType)
		}
	}
}

// Ticking only the proxies whose TickDue has come (and making no withheld
// digests) must give the run that ticking every proxy every second gives:
// the same registrations, step by step, and the same messages by type.
func TestFig6SkippedTicksChangeNothing(t *testing.T) {
	tp := DefaultTrace(3000, 60, 3)
	tp.Duration, tp.MaxSession = 30*time.Minute, 10*time.Minute
	ev := Synthetic(tp)
	for _, x := range []float64{0, 25} {
		var got [2]*Fig6Result
		for i, all := range []bool{true, false} {
			r, err := RunFig6(Fig6Config{Proxies: 60, Trace: ev, Duration: tp.Duration, Inaccuracy: x, Seed: 5, tickAll: all})
			if err != nil {
				t.Fatal(err)
			}
			got[i] = r
		}
		a, b := got[0], got[1]
		if a.Total.Registers == 0 || a.Total.Changes == 0 || a.Total.Refreshes == 0 {
			t.Fatalf("inaccuracy %g: the run registered nothing to compare: %+v", x, a.Total)
		}
		if !slices.Equal(a.Series, b.Series) || a.Total != b.Total || !maps.Equal(a.ByType, b.ByType) {
			t.Errorf("inaccuracy %g: skipping idle ticks changed the run:\nall  %+v %v\nskip %+v %v", x, a.Total, a.ByType, b.Total, b.ByType)
		}
		if b.Withheld["digest"] != 0 {
			t.Errorf("inaccuracy %g: %d digests made with digests off", x, b.Withheld["digest"])
		}
	}
}

// TestDetectionsPercentile: the histogram gives what the sorted list gave,
// to the millisecond below.
func TestDetectionsPercentile(t *testing.T) {
	var d Detections
	var list []time.Duration
	for i := range 1000 {
		v := time.Duration((i*7919)%2500) * 731 * time.Microsecond
		d.add(v)
		list = append(list, v)
	}
	slices.Sort(list)
	for _, p := range []float64{0, 50, 90, 99, 100} {
		want := list[int(p/100*float64(len(list)-1))].Truncate(time.Millisecond)
		if got := d.Percentile(p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if d.Len() != 1000 {
		t.Errorf("Len = %d, want 1000", d.Len())
	}
	var empty Detections
	if empty.Percentile(50) != 0 {
		t.Errorf("an empty one's p50 is %v, want 0", empty.Percentile(50))
	}
}

func TestProxyIndex(t *testing.T) {
	for _, i := range []int{0, 7, 4999, 99999, 123456} {
		if got, ok := proxyIndex(ProxyName(i)); !ok || got != i {
			t.Errorf("proxyIndex(%q) = %d, %v; want %d", ProxyName(i), got, ok, i)
		}
	}
	for _, name := range []string{"", "p", "p0001", "x00001", "p0001a", "p-0001", "p99999999999999999999"} {
		if i, ok := proxyIndex(name); ok {
			t.Errorf("proxyIndex(%q) = %d, want no index", name, i)
		}
	}
}
