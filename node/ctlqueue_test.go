package node

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

var (
	qg   = router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP}
	qsrc = netip.MustParseAddrPort("100.64.0.2:4789")
	qdst = netip.MustParseAddrPort("100.64.0.1:4789")
)

// TestCtlQueueFloods: floods of underlay junk, of resolves and of
// no-target signals are bounded and counted, and a proxy's control
// message behind them still gets through, byte for byte.
func TestCtlQueueFloods(t *testing.T) {
	q := newCtlQueue()
	// Anyone can send the WireGuard socket "PIAS"-prefixed datagrams:
	// too long, or to a proxy without a mesh key, they are not queued;
	// beyond the underlay queue's room they are dropped.
	big := bytes.Repeat([]byte("PIAS"), overlay.MaxUnderlayLen)
	for range 10000 {
		q.underlayDatagram(true, qsrc, big)
		q.underlayDatagram(false, qsrc, []byte("PIAS hello"))
		q.underlayDatagram(true, qsrc, []byte("PIAS hello"))
	}
	if n := len(q.underlay); n != underlayLen {
		t.Errorf("underlay queue holds %d, want %d", n, underlayLen)
	}
	if got, want := q.dropped.Load(), uint64(3*10000-underlayLen); got != want {
		t.Errorf("dropped %d, want %d", got, want)
	}
	// The router signals a resolve with each queued packet's first, and a
	// missing target with every dropped packet: one entry each.
	iap := netip.MustParseAddr("100.64.0.3")
	for range 100000 {
		q.signal(qg, netip.Addr{})
		q.signal(qg, iap)
	}
	if len(q.wake) != 1 {
		t.Error("no wake-up for waiting signals")
	}
	res, nts := q.signals()
	if len(res) != 1 || !res[qg] || len(nts) != 1 || !nts[noTarget{iap, qg}] {
		t.Errorf("signals %v %v, want one resolve and one no-target", res, nts)
	}
	// Distinct groups past maxSignals are dropped, the rest kept.
	before := q.dropped.Load()
	for i := range maxSignals + 100 {
		g := qg
		g.Port = uint16(i + 1)
		q.signal(g, netip.Addr{})
	}
	if res, _ := q.signals(); len(res) != maxSignals || q.dropped.Load()-before != 100 {
		t.Errorf("%d signals kept, %d dropped; want %d and 100", len(res), q.dropped.Load()-before, maxSignals)
	}
	// A control message is not held up by any of it.
	msg := []byte("PI\x02probe")
	q.message(qsrc, qdst, msg)
	msg[0] = 'X' // the queue holds a copy
	select {
	case m := <-q.msgs:
		if m.src != qsrc || m.dst != qdst || string(m.payload) != "PI\x02probe" {
			t.Errorf("control message %v → %v %q", m.src, m.dst, m.payload)
		}
	default:
		t.Fatal("the control message was not queued")
	}
	for range msgsLen + 10 {
		q.message(qsrc, qdst, msg)
	}
	if len(q.msgs) != msgsLen {
		t.Errorf("control queue holds %d, want its bound %d", len(q.msgs), msgsLen)
	}
}

// TestUnderlayBudget: a flood of underlay datagrams, drained as fast as it
// comes, gets at most underlayBurst plus underlayRate a second through to
// the control goroutine; the rest is dropped and counted.
func TestUnderlayBudget(t *testing.T) {
	q := newCtlQueue()
	from := netip.MustParseAddrPort("198.18.0.9:51820")
	pkt := []byte("PIAS not really a hello")
	start := time.Now()
	taken := 0
	const n = 20000
	for range n {
		q.underlayDatagram(true, from, pkt)
		select {
		case <-q.underlay:
			taken++
		default:
		}
	}
	el := time.Since(start)
	if most := underlayBurst + int(underlayRate*el.Seconds()) + 1; taken > most {
		t.Errorf("%d of %d datagrams taken in %v; the budget allows %d", taken, n, el, most)
	}
	if taken < underlayBurst/2 {
		t.Errorf("only %d datagrams taken: the burst is %d", taken, underlayBurst)
	}
	if d := q.dropped.Load(); d != uint64(n-taken) {
		t.Errorf("dropped %d, want %d", d, n-taken)
	}
}
