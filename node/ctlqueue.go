package node

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pias-net/pias/admit"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// ctlQueue is how wireguard-go's receive goroutines hand work to a proxy's
// control goroutine without waiting for it. Each kind of work has its own
// bound, so that a flood of one cannot crowd out another:
//
//   - control messages through the tunnels (health, registrations,
//     resolves, joins) wait in msgs, up to msgsLen, beyond which they
//     are dropped and counted;
//   - underlay datagrams (hellos and welcomes), which anyone can send,
//     are checked for size first, taken at most underlayRate a second
//     (a flood is dropped here, before it costs the control goroutine
//     anything), and wait in their own small queue;
//   - the router's signals (a group to resolve, a flow without target)
//     are kept as sets, so a burst of packets for one group is one
//     signal, and a resolve is never dropped unless maxSignals groups
//     wait at once.
type ctlQueue struct {
	msgs     chan ctlMsg
	underlay chan ctlMsg
	dropped  atomic.Uint64

	// budget: underlay datagrams taken, refilled at underlayRate a
	// second up to underlayBurst; at: when it was last refilled.
	budgetMu sync.Mutex
	budget   float64
	at       time.Time

	mu       sync.Mutex
	resolve  map[router.Group]bool
	noTarget map[noTarget]bool
	wake     chan struct{} // signals are waiting
}

// ctlMsg is a datagram for the control plane, copied off the packet path.
type ctlMsg struct {
	src, dst netip.AddrPort
	payload  []byte
}

type noTarget struct {
	iap netip.Addr
	g   router.Group
}

const (
	msgsLen     = 1024
	underlayLen = 64
	maxSignals  = 4096
	// underlayRate and underlayBurst bound the underlay datagrams a proxy
	// takes: far above what its nodes need (an edge renews every 20 s at
	// each of its proxies; a newcomer says hello once a second), far
	// below a flood. Admitted edges do not depend on it: their leases
	// live on their WireGuard sessions too.
	underlayRate  = 1000
	underlayBurst = 256
)

func newCtlQueue() *ctlQueue {
	return &ctlQueue{
		msgs: make(chan ctlMsg, msgsLen), underlay: make(chan ctlMsg, underlayLen),
		resolve: map[router.Group]bool{}, noTarget: map[noTarget]bool{}, wake: make(chan struct{}, 1),
	}
}

func (q *ctlQueue) put(c chan ctlMsg, m ctlMsg) {
	select {
	case c <- m:
	default:
		q.dropped.Add(1)
	}
}

// message queues a control message that arrived through the tunnels.
func (q *ctlQueue) message(src, dst netip.AddrPort, payload []byte) {
	q.put(q.msgs, ctlMsg{src, dst, slices.Clone(payload)})
}

// underlayDatagram queues a datagram from the WireGuard socket, if it can
// be one of the overlay's (a proxy that admits nobody at run time, with
// neither a mesh key nor a CA, takes none).
func (q *ctlQueue) underlayDatagram(admits bool, from netip.AddrPort, pkt []byte) {
	if !admits || len(pkt) > max(overlay.MaxUnderlayLen, admit.MaxLen) || len(q.underlay) == cap(q.underlay) || !q.spend() {
		// (Full: dropped before the copy, so that a flood costs
		// WireGuard's receive path as little as can be.)
		q.dropped.Add(1)
		return
	}
	q.put(q.underlay, ctlMsg{src: from, payload: slices.Clone(pkt)})
}

// spend takes one underlay datagram from the budget, if there is one.
func (q *ctlQueue) spend() bool {
	now := time.Now()
	q.budgetMu.Lock()
	defer q.budgetMu.Unlock()
	if q.at.IsZero() {
		q.budget, q.at = underlayBurst, now
	}
	q.budget = min(underlayBurst, q.budget+underlayRate*now.Sub(q.at).Seconds())
	q.at = now
	if q.budget < 1 {
		return false
	}
	q.budget--
	return true
}

// signal notes a group to resolve (iap invalid) or a flow without target
// from the IAP at iap.
func (q *ctlQueue) signal(g router.Group, iap netip.Addr) {
	q.mu.Lock()
	switch {
	case len(q.resolve)+len(q.noTarget) >= maxSignals:
		q.dropped.Add(1)
	case iap.IsValid():
		q.noTarget[noTarget{iap, g}] = true
	default:
		q.resolve[g] = true
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// signals takes the waiting signals.
func (q *ctlQueue) signals() (resolve map[router.Group]bool, noTargets map[noTarget]bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	resolve, noTargets = q.resolve, q.noTarget
	q.resolve, q.noTarget = map[router.Group]bool{}, map[noTarget]bool{}
	return resolve, noTargets
}
