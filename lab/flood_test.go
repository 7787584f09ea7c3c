package lab

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay"
)

// TestUnderlayFloodHarmsNoOne: anyone can send a proxy's WireGuard socket
// datagrams that look like the overlay's own ("PIAS…"). A flood of them —
// too long, or the right size with a forged MAC — is bounded before the
// control goroutine and counted, and the overlay does not notice: no proxy
// is suspected dead, and every client still reaches every group.
func TestUnderlayFloodHarmsNoOne(t *testing.T) {
	h, log := startLabEvents(t, Options{Proxies: 3, Clusters: 2, Targets: 2, Groups: 2, Clients: 2})
	victim := h.Proxies["p1"]
	ep := h.Node("p1").Endpoint
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ep))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	forged := append([]byte(overlay.UnderlayMagic), bytes.Repeat([]byte{0xa5}, 200)...)
	long := append([]byte(overlay.UnderlayMagic), bytes.Repeat([]byte{0x5a}, overlay.MaxUnderlayLen)...)
	before := victim.ControlDropped()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// 10,000 a second for 2 s: far more than the control path takes,
		// paced so that the kernel's socket buffer, which no program can
		// protect from a flood, does not overflow and drop the probes (on
		// a busy CI host a faster flood did).
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 20000; i += 100 {
			<-tick.C
			for j := range 100 {
				if j%2 == 0 {
					c.Write(forged)
				} else {
					c.Write(long)
				}
			}
		}
	}()
	ctx := waitCtx(t, 30*time.Second)
	checkAllWork(t, ctx, h, h.Names("client"))
	<-done
	checkAllWork(t, ctx, h, h.Names("client"))
	if d := victim.ControlDropped() - before; d == 0 {
		t.Error("the flood reached the control goroutine whole: nothing was dropped")
	} else {
		t.Logf("p1 dropped %d of 20000 datagrams before its control goroutine", d)
	}
	for _, e := range log.match(func(e overlay.Event) bool { return e.Kind == overlay.EventDead }) {
		t.Errorf("%s declared %s dead during the flood", e.Proxy, e.Name)
	}
}
