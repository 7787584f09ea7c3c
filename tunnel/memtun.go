package tunnel

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// Handler decides the fate of one packet that WireGuard decrypted. The packet
// is buf[start:end], and buf has Headroom spare bytes before start, so the
// handler may rewrite it in place, prepend a header or cut one off. It returns
// the bytes to hand back to WireGuard (which routes them by destination), or
// emit=false when the packet stops here.
type Handler func(buf []byte, start, end int) (outStart, outEnd int, emit bool)

// Headroom is the space a Handler may prepend to a packet.
const Headroom = 64

// slotSize bounds the packets MemTUN carries: the largest overlay MTU a config
// allows, plus the headroom; bigger packets are dropped and counted.
const slotSize = Headroom + 9216

// queueDepth bounds the packets waiting for WireGuard to read them. Writers
// block when it is full, which pushes back on the senders instead of dropping.
const queueDepth = 1024

type slot struct {
	buf        [slotSize]byte
	start, end int
}

var slotPool = sync.Pool{New: func() any { return new(slot) }}

// MemTUN is the in-memory tun.Device that joins a wireguard-go device to a
// Handler (a proxy's router): packets WireGuard writes go through the Handler,
// and what the Handler emits, or Inject adds, is what WireGuard reads next.
// It has no host interface at all, which is why proxies need no root.
type MemTUN struct {
	name    string
	mtu     int
	handler Handler
	events  chan tun.Event

	mu       sync.Mutex
	queue    []*slot // FIFO; a ring would save a copy but the queue is short
	notEmpty chan struct{}
	notFull  chan struct{}
	closed   chan struct{}
	once     sync.Once

	// Oversize counts packets too big for a slot.
	Oversize atomic.Uint64
}

var _ tun.Device = (*MemTUN)(nil)

// NewMemTUN returns a MemTUN that passes WireGuard's packets to h.
func NewMemTUN(name string, mtu int, h Handler) *MemTUN {
	t := &MemTUN{
		name:     name,
		mtu:      mtu,
		handler:  h,
		events:   make(chan tun.Event, 1),
		queue:    make([]*slot, 0, queueDepth),
		notEmpty: make(chan struct{}, 1),
		notFull:  make(chan struct{}, 1),
		closed:   make(chan struct{}),
	}
	t.events <- tun.EventUp
	return t
}

func (t *MemTUN) File() *os.File           { return nil }
func (t *MemTUN) MTU() (int, error)        { return t.mtu, nil }
func (t *MemTUN) Name() (string, error)    { return t.name, nil }
func (t *MemTUN) Events() <-chan tun.Event { return t.events }
func (t *MemTUN) BatchSize() int           { return conn.IdealBatchSize }

// Close wakes blocked readers and writers; WireGuard's reader then stops.
func (t *MemTUN) Close() error {
	t.once.Do(func() {
		close(t.closed)
		close(t.events)
	})
	return nil
}

// Write is called by WireGuard with decrypted packets, one batch per call from
// each peer's receive goroutine.
func (t *MemTUN) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		pkt := b[offset:]
		if len(pkt) == 0 {
			continue
		}
		if len(pkt) > slotSize-Headroom {
			t.Oversize.Add(1)
			continue
		}
		s := slotPool.Get().(*slot)
		n := copy(s.buf[Headroom:], pkt)
		start, end, emit := t.handler(s.buf[:], Headroom, Headroom+n)
		if !emit {
			slotPool.Put(s)
			continue
		}
		s.start, s.end = start, end
		if err := t.enqueue(s); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

// Inject queues a packet built outside the data path (a control message) for
// WireGuard to send. It copies pkt.
func (t *MemTUN) Inject(pkt []byte) error {
	if len(pkt) > slotSize-Headroom {
		t.Oversize.Add(1)
		return errors.New("packet too large")
	}
	s := slotPool.Get().(*slot)
	s.start = Headroom
	s.end = Headroom + copy(s.buf[Headroom:], pkt)
	return t.enqueue(s)
}

func (t *MemTUN) enqueue(s *slot) error {
	for {
		t.mu.Lock()
		if len(t.queue) < queueDepth {
			t.queue = append(t.queue, s)
			t.mu.Unlock()
			signal(t.notEmpty)
			return nil
		}
		t.mu.Unlock()
		select {
		case <-t.notFull:
		case <-t.closed:
			slotPool.Put(s)
			return os.ErrClosed
		}
	}
}

// Read hands WireGuard up to len(bufs) queued packets, blocking until there is
// at least one.
func (t *MemTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		t.mu.Lock()
		n := min(len(bufs), len(t.queue))
		if n > 0 {
			for i := 0; i < n; i++ {
				s := t.queue[i]
				sizes[i] = copy(bufs[i][offset:], s.buf[s.start:s.end])
				t.queue[i] = nil
				slotPool.Put(s)
			}
			rest := copy(t.queue, t.queue[n:])
			clear(t.queue[rest:])
			t.queue = t.queue[:rest]
			more := rest > 0
			t.mu.Unlock()
			signal(t.notFull)
			if more {
				signal(t.notEmpty)
			}
			return n, nil
		}
		t.mu.Unlock()
		select {
		case <-t.notEmpty:
		case <-t.closed:
			return 0, os.ErrClosed
		}
	}
}

// signal wakes one waiter without blocking; a pending wake-up is enough.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
