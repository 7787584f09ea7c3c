package sim

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay"
)

// smallChurn is the tests' run: 20 proxies, 50 groups, 2 deaths.
func smallChurn(seed uint64, revive time.Duration) ChurnConfig {
	return ChurnConfig{Proxies: 20, Groups: 50, Targets: 300, Deaths: 2, Revive: revive, Seed: seed,
		Churn: 30 * time.Second, Settle: 35 * time.Second}
}

func TestChurnConverges(t *testing.T) {
	for _, revive := range []time.Duration{0, 25 * time.Second} {
		r, err := RunChurn(smallChurn(3, revive))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("revive %v: %d joins, %d leaves, %d failovers; %d registers (%d changes, %d refreshes, %d echo); deaths detected %d, missed %d, false %d; converged %t %v after the last event",
			revive, r.Joins, r.Leaves, r.Failovers, r.Total.Registers, r.Total.Changes, r.Total.Refreshes, r.Total.Echo, r.Detected, r.Missed, r.False, r.Converged, r.ConvergeAfter)
		if !r.Converged {
			t.Fatalf("revive %v: RAP tables did not converge: %s", revive, r.Problem)
		}
		// Each death is seen by the 17 or 18 others up at the time (the
		// other victim may be down too).
		if r.Missed != 0 || r.False != 0 || r.Detected < 2*17 {
			t.Errorf("revive %v: deaths detected %d, missed %d, false %d", revive, r.Detected, r.Missed, r.False)
		}
		if r.Failovers == 0 || r.Joins < r.Targets || r.Leaves == 0 {
			t.Errorf("revive %v: %d joins, %d leaves, %d failovers: the run did not churn", revive, r.Joins, r.Leaves, r.Failovers)
		}
		if revive > 0 && (r.Revived != 2 || r.LastEvent != 55*time.Second) {
			// Deaths at 20 s and 30 s, back at 45 s and 55 s: after the
			// churn (40 s), so that convergence follows a restart.
			t.Errorf("revived %d, the last at %v; want 2, at 55s", r.Revived, r.LastEvent)
		}
		// The design's bound: a lost or refused report is mended by the
		// next refresh (RegisterTTL/3, 10 s) and a tick. (It was the whole
		// RegisterTTL, 30 s, while a count the links delivered after its
		// withdrawal stood at the RAP: Register had no version.) These
		// seeds converge at once.
		if r.ConvergeAfter > 11*time.Second {
			t.Errorf("revive %v: converged only %v after the last event", revive, r.ConvergeAfter)
		}
	}
}

// TestChurnCheckCatches plants inconsistencies in a converged run and
// asserts the check finds each, and that the overlay repairs what it can.
func TestChurnCheckCatches(t *testing.T) {
	c, err := newChurn(smallChurn(5, 0))
	if err != nil {
		t.Fatal(err)
	}
	c.run()
	if !c.res.Converged {
		t.Fatalf("did not converge: %s", c.res.Problem)
	}
	if err := c.consistent(); err != nil {
		t.Fatal(err)
	}
	// A JAP's count forged at one RAP: the real message, from the JAP.
	var s int
	for s = range c.targets {
		if c.targets[s].at >= 0 {
			break
		}
	}
	tg := c.targets[s]
	jap := c.members[tg.at]
	n := 0
	for _, o := range c.targets {
		if o.at == tg.at && o.g == tg.g {
			n++
		}
	}
	rap := c.w.byName[c.w.proxies[tg.at].p.RAPs(tg.g)[0]]
	b, _ := overlay.AppendMsg(nil, 77, &overlay.Register{Group: tg.g, JAP: jap.Name, Targets: uint32(n + 1), Weight: uint32(n + 1), TTL: 30 * time.Second})
	c.w.proxies[rap].p.HandleControl(netip.AddrPortFrom(jap.Addr, ControlPort), netip.AddrPortFrom(c.members[rap].Addr, ControlPort), b)
	if err := c.consistent(); err == nil || !strings.Contains(err.Error(), "RAP "+c.members[rap].Name) {
		t.Fatalf("a forged count at RAP %s: check says %v", c.members[rap].Name, err)
	}
	// The JAP's next refresh (every RegisterTTL/3) puts it right.
	c.w.clk.Advance(11 * time.Second)
	if err := c.consistent(); err != nil {
		t.Fatalf("after a refresh: %v", err)
	}
	// A target the JAP holds but the scenario has gone.
	c.targets[s].at = -1
	if err := c.consistent(); err == nil {
		t.Fatal("a target joined behind the scenario's back: check passes")
	}
	c.targets[s].at = tg.at
	// A death nobody has noticed yet.
	c.w.net.Down(c.members[tg.at].Name)
	if err := c.consistent(); err == nil || !strings.Contains(err.Error(), "live proxies") {
		t.Fatalf("a proxy down: check says %v", err)
	}
}

func TestChurnSameSeedSameCSV(t *testing.T) {
	csv := func(seed uint64) string {
		r, err := RunChurn(smallChurn(seed, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := WriteChurn(&b, []*ChurnResult{r}); err != nil {
			t.Fatal(err)
		}
		if err := WriteChurnSeries(&b, []*ChurnResult{r}); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	a, b, other := csv(9), csv(9), csv(10)
	if a != b {
		t.Fatalf("same seed, different CSV:\n%s\n---\n%s", a, b)
	}
	if a == other {
		t.Fatal("another seed, the same CSV: the seed is not used")
	}
	t.Logf("%s", a[:strings.Index(a, "proxies,second")])
}

// BenchmarkChurn runs the churn scenario once per op: by default 300
// proxies, 300 groups, 3,000 targets, 3 deaths; SIM_PROXIES, SIM_GROUPS,
// SIM_TARGETS and SIM_DEATHS change that. Profile with -cpuprofile.
func BenchmarkChurn(b *testing.B) {
	for i := 0; i < b.N; i++ {
		r, err := RunChurn(ChurnConfig{Proxies: envInt("SIM_PROXIES", 300), Groups: envInt("SIM_GROUPS", 300),
			Targets: envInt("SIM_TARGETS", 3000), Deaths: envInt("SIM_DEATHS", 3), Seed: 1,
			Warm: time.Duration(envInt("SIM_WARM", 10)) * time.Second, Churn: time.Duration(envInt("SIM_CHURN", 60)) * time.Second,
			Settle: time.Duration(envInt("SIM_SETTLE", 60)) * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.SimTime.Seconds()/r.Wall.Seconds(), "sim-s/wall-s")
		b.ReportMetric(float64(r.PeakHeap>>20), "peak-heap-MiB")
		b.ReportMetric(r.ConvergeAfter.Seconds(), "converge-s")
		b.Logf("converged %t %v after the last event; last problem: %s", r.Converged, r.ConvergeAfter, r.Problem)
	}
}
