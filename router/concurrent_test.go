package router

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestConcurrentUse drives one IAP and one JAP from many goroutines (as
// wireguard-go does, one per peer) while the control plane changes state
// under them. Run with -race.
func TestConcurrentUse(t *testing.T) {
	iap := newRouter(t, selfP1(), func(c *Config) { c.MaxFlows = 64 })
	jap := newRouter(t, selfP2(), func(c *Config) { c.MaxFlows = 64 })
	ap := netip.AddrPortFrom(anyIP, 53)
	jap.addTarget(gUDP, tgt)
	jap.addTarget(gUDP, tgt2)

	hammer(t, 8, func(w int) {
		for i := range 500 {
			now := int64(i) * int64(time.Millisecond)
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 1, byte(w)}), uint16(1000+i%100))
			b := udp(c, ap, "x")
			res, out := route(iap, b, now)
			switch res.Action {
			case Queued:
				if res.Resolve {
					for _, p := range iap.resolved(gUDP, []JAP{{Addr: p2, Targets: 2}}, time.Second, now) {
						route(jap, p, now)
					}
				}
			case Forward:
				if d, err := decodeErr(out); err == nil && d.proto == ProtoIPIP {
					if res, out := route(jap, out, now); res.Action == Forward {
						replyTo(t, jap, out, now)
					}
				}
			}
		}
	}, func(i int) {
		now := int64(i) * int64(10*time.Millisecond)
		iap.Expire(now)
		jap.Expire(now)
		if i%2 == 0 {
			jap.RemoveTarget(gUDP, tgt2.Addr())
			iap.Invalidate(gUDP)
		} else {
			jap.addTarget(gUDP, tgt2)
			iap.SetProxies(proxyIPs)
		}
		switch i % 8 {
		case 0:
			iap.addTarget(gUDP, tgt) // some flows stay local for a while
		case 4:
			iap.RemoveTarget(gUDP, tgt.Addr())
		}
		iap.Flows()
		jap.Stats()
		jap.Targets(gUDP)
	})
	// How many packets get through depends on how the workers interleave
	// with the control loop; that some do shows the JAP kept working.
	if st := jap.Stats(); st.Forwarded == 0 {
		t.Errorf("the JAP forwarded no packets")
	}
	for _, r := range []*Router{iap, jap} {
		st := r.Stats()
		if st.IAPFlows > 64 || st.JAPFlows > 64 || st.IAPFlows < 0 || st.JAPFlows < 0 {
			t.Errorf("flow counts %d, %d beyond the cap", st.IAPFlows, st.JAPFlows)
		}
		n := map[string]int{}
		for _, f := range r.Flows() {
			n[f.Kind]++
		}
		if n["iap"] != st.IAPFlows || n["jap"] != st.JAPFlows {
			t.Errorf("counters %d/%d, tables %d/%d", st.IAPFlows, st.JAPFlows, n["iap"], n["jap"])
		}
		if l := st.IAP.Live[FlowTCP] + st.IAP.Live[FlowUDP]; l != st.IAPFlows {
			t.Errorf("IAP flows by protocol sum to %d, want %d", l, st.IAPFlows)
		}
		if l := st.JAP.Live[FlowTCP] + st.JAP.Live[FlowUDP]; l != st.JAPFlows {
			t.Errorf("JAP flows by protocol sum to %d, want %d", l, st.JAPFlows)
		}
		checkTables(t, r)
	}
}

// hammer runs work on n goroutines (each told its number) while control
// runs again and again (told its round) until every worker is done.
func hammer(t *testing.T, n int, work func(w int), control func(i int)) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() { work(w) })
	}
	stop, ctl := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ctl)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			control(i)
		}
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("workers stuck")
	}
	close(stop)
	<-ctl
}

// replyTo has the target that got out (a packet a JAP forwarded to it)
// answer through the JAP.
func replyTo(t *testing.T, jap *Router, out []byte, now int64) {
	if d, err := decodeErr(out); err == nil {
		route(jap, udp(d.dst, d.src, "y"), now)
	} else {
		t.Error(err)
	}
}
