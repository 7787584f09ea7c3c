package sim

import (
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/overlay/overlaytest"
)

// BenchmarkRAPRegister10k is the cost of one Register at a RAP of an
// overlay of 10,000 proxies: what fig6 does 10⁷ times.
func BenchmarkRAPRegister10k(b *testing.B) {
	const n = 10000
	members := make([]overlay.Member, n)
	names := make([]string, n)
	for i := range members {
		members[i] = proxyMember(i, 10)
		names[i] = members[i].Name
	}
	rap := indexOf(names, overlay.RAPs(Group, names, 4)[0])
	w := newWorld(1, overlaytest.Link{Delay: time.Millisecond})
	s, err := w.addProxy(members[rap], overlay.ProxyConfig{Members: members, Replicas: 4})
	if err != nil {
		b.Fatal(err)
	}
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i], _ = overlay.AppendMsg(nil, uint32(i+1), &overlay.Register{Group: Group, JAP: names[i], Targets: uint32(i + 1), Weight: uint32(i + 1), TTL: 30 * time.Second})
	}
	dst := netip.AddrPortFrom(members[rap].Addr, ControlPort)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(msgs)
		s.p.HandleControl(netip.AddrPortFrom(members[k].Addr, ControlPort), dst, msgs[k])
	}
}

// BenchmarkFig6 runs one fig6 event (one run per op): by default 1,000
// proxies × 12,000 members for 20 simulated minutes at 0 % inaccuracy;
// SIM_PROXIES, SIM_MEMBERS, SIM_MINUTES and SIM_INACC change that (the
// issue's goal: 10000, 120000, 200). It reports simulated seconds per wall
// second and the peak heap. Profile with -cpuprofile.
func BenchmarkFig6(b *testing.B) {
	p, n := envInt("SIM_PROXIES", 1000), envInt("SIM_MEMBERS", 12000)
	dur := time.Duration(envInt("SIM_MINUTES", 20)) * time.Minute
	ev := Synthetic(DefaultTrace(n, p, 1))
	for i := 0; i < b.N; i++ {
		start := time.Now()
		r, err := RunFig6(Fig6Config{Proxies: p, Trace: ev, Duration: dur, Inaccuracy: float64(envInt("SIM_INACC", 0)), Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(dur.Seconds()/time.Since(start).Seconds(), "sim-s/wall-s")
		b.ReportMetric(float64(r.PeakHeap>>20), "peak-heap-MiB")
		b.ReportMetric(float64(r.Total.Registers), "registers")
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
