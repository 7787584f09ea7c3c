package tunnel

import (
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/pias-net/pias/tunnel/rawbind"
)

// Rule is what a LossyBind does to the packets it sends to one destination.
// The zero Rule passes them untouched.
type Rule struct {
	Drop  bool          // drop every packet (a partition, one direction)
	Delay time.Duration // hold every packet this long before sending it
}

func (r Rule) zero() bool { return !r.Drop && r.Delay <= 0 }

// LossyBind wraps a conn.Bind and impairs what it sends, per destination
// UDP endpoint: drop (partition) or delay. It is the in-process lab's
// netem. Rules change at run time from any goroutine.
//
// Only sends are impaired: a partition between two nodes needs a Drop rule
// in both nodes' binds, one towards the other. Receives are passed through.
//
// With no rule set, Send costs one atomic load more than the inner bind's.
// Delayed packets are copied and sent by a timer, in order per destination
// (a burst stays in order; lowering a delay never overtakes packets already
// queued), so Send never blocks on a delay.
type LossyBind struct {
	conn.Bind
	rules atomic.Pointer[map[netip.AddrPort]Rule] // immutable; nil = none

	mu     sync.Mutex // guards rule writes, queues and closed
	queues map[netip.AddrPort]*delayQueue
	closed bool

	dropped, delayed atomic.Uint64
}

// NewLossyBind wraps inner; nil means rawbind.New().
func NewLossyBind(inner conn.Bind) *LossyBind {
	if inner == nil {
		inner = rawbind.New()
	}
	return &LossyBind{Bind: inner, queues: map[netip.AddrPort]*delayQueue{}}
}

// SetRule sets the rule for packets to dst; the zero Rule removes it.
func (b *LossyBind) SetRule(dst netip.AddrPort, r Rule) {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := map[netip.AddrPort]Rule{}
	if cur := b.rules.Load(); cur != nil {
		maps.Copy(next, *cur)
	}
	if r.zero() {
		delete(next, dst)
	} else {
		next[dst] = r
	}
	b.storeLocked(next)
}

// SetRules replaces every rule at once.
func (b *LossyBind) SetRules(rules map[netip.AddrPort]Rule) {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := map[netip.AddrPort]Rule{}
	for dst, r := range rules {
		if !r.zero() {
			next[dst] = r
		}
	}
	b.storeLocked(next)
}

// Clear removes every rule. Packets already delayed are still sent.
func (b *LossyBind) Clear() { b.SetRules(nil) }

func (b *LossyBind) storeLocked(next map[netip.AddrPort]Rule) {
	if len(next) == 0 {
		b.rules.Store(nil)
		return
	}
	b.rules.Store(&next)
}

// Rules returns a copy of the current rules.
func (b *LossyBind) Rules() map[netip.AddrPort]Rule {
	out := map[netip.AddrPort]Rule{}
	if cur := b.rules.Load(); cur != nil {
		maps.Copy(out, *cur)
	}
	return out
}

// Rule returns the rule for dst (the zero Rule if none).
func (b *LossyBind) Rule(dst netip.AddrPort) Rule {
	if cur := b.rules.Load(); cur != nil {
		return (*cur)[dst]
	}
	return Rule{}
}

// Stats counts the packets dropped and delayed so far.
func (b *LossyBind) Stats() (dropped, delayed uint64) {
	return b.dropped.Load(), b.delayed.Load()
}

// Send implements conn.Bind.
func (b *LossyBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	cur := b.rules.Load()
	if cur == nil {
		return b.Bind.Send(bufs, ep)
	}
	dst := endpointAddrPort(ep)
	r, ok := (*cur)[dst]
	if !ok {
		return b.Bind.Send(bufs, ep)
	}
	if r.Drop {
		b.dropped.Add(uint64(len(bufs)))
		return nil // lost on the way, as UDP is
	}
	b.delayed.Add(uint64(len(bufs)))
	b.enqueue(dst, ep, bufs, r.Delay)
	return nil
}

// endpointAddrPort is the UDP destination of ep.
func endpointAddrPort(ep conn.Endpoint) netip.AddrPort {
	if se, ok := ep.(*conn.StdNetEndpoint); ok {
		return se.AddrPort
	}
	ap, _ := netip.ParseAddrPort(ep.DstToString())
	return ap
}

// Close implements conn.Bind: it closes the inner bind and discards what is
// still delayed. Rules stay, so a reopened bind keeps them.
func (b *LossyBind) Close() error {
	b.mu.Lock()
	qs := b.queues
	b.queues = map[netip.AddrPort]*delayQueue{}
	b.closed = true
	b.mu.Unlock()
	for _, q := range qs {
		q.stop()
	}
	return b.Bind.Close()
}

// Open implements conn.Bind.
func (b *LossyBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, p, err := b.Bind.Open(port)
	if err == nil {
		b.mu.Lock()
		b.closed = false
		b.mu.Unlock()
	}
	return fns, p, err
}

// delayQueue holds the delayed packets to one destination, in send order.
type delayQueue struct {
	bind    conn.Bind
	sendMu  sync.Mutex // held while sending, so batches leave in order
	mu      sync.Mutex
	pending []delayed
	timer   *time.Timer
	stopped bool
}

type delayed struct {
	due  time.Time
	ep   conn.Endpoint
	bufs [][]byte
}

func (b *LossyBind) enqueue(dst netip.AddrPort, ep conn.Endpoint, bufs [][]byte, d time.Duration) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	q := b.queues[dst]
	if q == nil {
		q = &delayQueue{bind: b.Bind}
		b.queues[dst] = q
	}
	b.mu.Unlock()
	// WireGuard reuses bufs once Send returns.
	cp := make([][]byte, len(bufs))
	for i, p := range bufs {
		cp[i] = append([]byte(nil), p...)
	}
	q.push(delayed{due: time.Now().Add(d), ep: ep, bufs: cp})
}

func (q *delayQueue) push(p delayed) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return
	}
	// FIFO: a packet never leaves before one sent earlier, even if the
	// delay was lowered in between.
	if n := len(q.pending); n > 0 && p.due.Before(q.pending[n-1].due) {
		p.due = q.pending[n-1].due
	}
	q.pending = append(q.pending, p)
	if len(q.pending) == 1 {
		q.armLocked()
	}
}

func (q *delayQueue) armLocked() {
	d := time.Until(q.pending[0].due)
	if q.timer == nil {
		q.timer = time.AfterFunc(d, q.fire)
	} else {
		q.timer.Reset(d)
	}
}

func (q *delayQueue) fire() {
	q.sendMu.Lock()
	defer q.sendMu.Unlock()
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		return
	}
	now := time.Now()
	n := 0
	for n < len(q.pending) && !q.pending[n].due.After(now) {
		n++
	}
	due := q.pending[:n:n]
	q.pending = append([]delayed(nil), q.pending[n:]...)
	if len(q.pending) > 0 {
		q.armLocked()
	}
	q.mu.Unlock()
	// Senders are not held up while this sends; the next fire waits on
	// sendMu, so batches cannot overtake each other.
	for _, p := range due {
		_ = q.bind.Send(p.bufs, p.ep) // errors are losses, as on a link
	}
}

func (q *delayQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	q.pending = nil
	if q.timer != nil {
		q.timer.Stop()
	}
}
