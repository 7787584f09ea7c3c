// Package membind is an in-memory UDP underlay for wireguard-go devices in
// tests and benchmarks: conn.Binds on one Network, each at a netip.AddrPort,
// that pass whole batches of datagrams to each other without sockets.
//
// A send copies each datagram once into the receiver's queue, and a receive
// copies it once out, as a kernel socket pair does; neither allocates once
// the queue's buffers have grown to the datagrams' size. A full queue
// blocks its senders instead of dropping, so a benchmark measures the
// devices, not losses.
package membind

import (
	"errors"
	"net"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
)

// QueueLen is how many datagrams wait at one bind before Send blocks.
const QueueLen = 1024

// Network joins binds by address.
type Network struct {
	mu    sync.RWMutex
	binds map[netip.AddrPort]*Bind
}

// NewNetwork returns an empty network.
func NewNetwork() *Network { return &Network{binds: map[netip.AddrPort]*Bind{}} }

// Bind returns a conn.Bind that listens at addr once opened (the port
// wireguard-go asks for is ignored: addr's is the one).
func (n *Network) Bind(addr netip.AddrPort) *Bind {
	return &Bind{net: n, self: &Endpoint{addr}, batch: conn.IdealBatchSize}
}

func (n *Network) lookup(a netip.AddrPort) *Bind {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.binds[a]
}

// Endpoint is a bind's address. A bind's own Endpoint is one pointer for
// all it sends, so a receive hands wireguard-go no new allocation.
type Endpoint struct{ AddrPort netip.AddrPort }

var _ conn.Endpoint = (*Endpoint)(nil)

func (e *Endpoint) ClearSrc()           {}
func (e *Endpoint) SrcToString() string { return "" }
func (e *Endpoint) DstToString() string { return e.AddrPort.String() }
func (e *Endpoint) DstIP() netip.Addr   { return e.AddrPort.Addr() }
func (e *Endpoint) SrcIP() netip.Addr   { return netip.Addr{} }
func (e *Endpoint) DstToBytes() []byte {
	b, _ := e.AddrPort.MarshalBinary()
	return b
}

// Bind is one node's socket on a Network.
type Bind struct {
	net   *Network
	self  *Endpoint
	batch int

	mu       sync.Mutex
	cond     *sync.Cond // waits on mu: data queued, room freed, closed
	open     bool
	ring     [QueueLen]datagram
	head, n  int
	closedCh chan struct{}
}

type datagram struct {
	b    []byte // reused; grows to the largest datagram seen
	from *Endpoint
}

var _ conn.Bind = (*Bind)(nil)

// SetBatchSize sets what BatchSize reports (default conn.IdealBatchSize);
// call it before the device opens the bind.
func (b *Bind) SetBatchSize(n int) { b.batch = max(n, 1) }

// Addr is the bind's address on its network.
func (b *Bind) Addr() netip.AddrPort { return b.self.AddrPort }

func (b *Bind) BatchSize() int       { return b.batch }
func (b *Bind) SetMark(uint32) error { return nil }
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &Endpoint{a}, nil
}

// Open registers the bind at its address.
func (b *Bind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.net.mu.Lock()
	defer b.net.mu.Unlock()
	if cur, ok := b.net.binds[b.self.AddrPort]; ok && cur != b {
		return nil, 0, errors.New("membind: address in use")
	}
	b.mu.Lock()
	if b.cond == nil {
		b.cond = sync.NewCond(&b.mu)
	}
	if b.open {
		b.mu.Unlock()
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	b.open = true
	b.head, b.n = 0, 0
	b.mu.Unlock()
	b.net.binds[b.self.AddrPort] = b
	return []conn.ReceiveFunc{b.receive}, b.self.AddrPort.Port(), nil
}

// Close unregisters the bind and wakes its receiver and senders.
func (b *Bind) Close() error {
	b.net.mu.Lock()
	if b.net.binds[b.self.AddrPort] == b {
		delete(b.net.binds, b.self.AddrPort)
	}
	b.net.mu.Unlock()
	b.mu.Lock()
	b.open = false
	if b.cond != nil {
		b.cond.Broadcast()
	}
	b.mu.Unlock()
	return nil
}

func (b *Bind) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.n == 0 && b.open {
		b.cond.Wait()
	}
	if !b.open {
		return 0, net.ErrClosed
	}
	k := min(len(bufs), b.n)
	for i := range k {
		d := &b.ring[(b.head+i)%QueueLen]
		sizes[i] = copy(bufs[i], d.b)
		eps[i] = d.from
	}
	b.head = (b.head + k) % QueueLen
	b.n -= k
	b.cond.Broadcast() // senders waiting for room
	return k, nil
}

// Send queues bufs at the bind at ep, blocking while its queue is full. A
// datagram to an address where no bind is open is lost, as on a network.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return errors.New("membind: foreign endpoint")
	}
	to := b.net.lookup(e.AddrPort)
	if to == nil {
		return nil
	}
	return to.deliver(bufs, b.self)
}

func (b *Bind) deliver(bufs [][]byte, from *Endpoint) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range bufs {
		for b.n == QueueLen && b.open {
			b.cond.Wait()
		}
		if !b.open {
			return nil // the receiver went away: lost
		}
		d := &b.ring[(b.head+b.n)%QueueLen]
		d.b = append(d.b[:0], p...)
		d.from = from
		if b.n++; b.n == 1 {
			b.cond.Broadcast()
		}
	}
	return nil
}
