// Package overlaytest holds test doubles for the overlay control plane: a
// virtual Clock and an in-memory Net with per-link delay, jitter and loss,
// partitions, cut links and killed hosts, and a trace of every packet. It
// plays the part of wireguard-go's conn/bindtest and Tailscale's
// tstest/natlab for overlay's tests and for the simulator built on it.
//
// Everything runs on the goroutine that advances the clock, and all
// randomness comes from the seed given to NewNet, so a run repeats
// exactly: two runs with one seed produce the same trace. Nothing here is
// safe for concurrent use.
//
// Three hosts, a partition, and a run:
//
//	clk := overlaytest.NewClock()
//	n := overlaytest.NewNet(clk, 1)
//	n.SetDefault(overlaytest.Link{Delay: 10 * time.Millisecond, Jitter: time.Millisecond})
//	for i, name := range []string{"p1", "p2", "p3"} {
//		h := n.AddHost(name, netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}))
//		h.Handle(func(src, dst netip.AddrPort, b []byte) { /* hand to the proxy */ })
//	}
//	var rec overlaytest.Recorder
//	n.Trace(rec.Record)
//	clk.Every(100*time.Millisecond, func() { /* every proxy's Tick: n.Send(...) */ })
//	clk.Advance(time.Second)
//	n.Partition([]string{"p1"}, []string{"p2", "p3"})
//	clk.Advance(time.Second)
//	n.Heal()
//
// Package overlay's own tests import this package, so it must never
// import overlay.
package overlaytest
