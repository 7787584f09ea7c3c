package overlaytest_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
)

// Three hosts ping each other every 100ms for three seconds; p1 is cut
// off from the others in the second one. Of the 180 pings, 44 are cut
// (those of the ten ticks of the partition, and the four of p1's that were
// in flight when it began) and 6 are still in flight at the end.
func Example() {
	clk := overlaytest.NewClock()
	n := overlaytest.NewNet(clk, 1)
	n.SetDefault(overlaytest.Link{Delay: 10 * time.Millisecond, Jitter: time.Millisecond})
	names := []string{"p1", "p2", "p3"}
	addr := map[string]netip.AddrPort{}
	got := map[string]int{}
	for i, name := range names {
		addr[name] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}), 9)
		n.AddHost(name, addr[name].Addr()).Handle(func(src, dst netip.AddrPort, b []byte) { got[name]++ })
	}
	var rec overlaytest.Recorder
	n.Trace(rec.Record)
	clk.Every(100*time.Millisecond, func() {
		for _, a := range names {
			for _, b := range names {
				if a != b {
					n.Send(addr[a], addr[b], []byte("ping"))
				}
			}
		}
	})
	clk.Advance(time.Second)
	n.Partition([]string{"p1"}, []string{"p2", "p3"})
	clk.Advance(time.Second)
	n.Heal()
	clk.Advance(time.Second)
	fmt.Println(got, n.Stats())
	fmt.Println(rec.Count(func(p overlaytest.Packet) bool { return p.Fate == overlaytest.DropCut }), "cut")
	// Output:
	// map[p1:36 p2:47 p3:47] {180 130 44}
	// 44 cut
}
