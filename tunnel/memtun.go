package tunnel

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// Handler decides the fate of one packet that WireGuard decrypted. The packet
// is buf[start:end], and buf has Headroom spare bytes before start, so the
// handler may rewrite it in place, prepend a header or cut one off. now is
// the MemTUN's clock, read once per batch. It returns the bytes to hand back
// to WireGuard (which routes them by destination), or emit=false when the
// packet stops here.
type Handler func(buf []byte, start, end int, now int64) (outStart, outEnd int, emit bool)

// Headroom is the space a Handler may prepend to a packet.
const Headroom = 64

// slotSize bounds the packets MemTUN carries: the largest overlay MTU a config
// allows, plus the headroom; bigger packets are dropped and counted.
const slotSize = Headroom + 9216

// queueDepth bounds the packets waiting for WireGuard to read them: two of
// its batches. Writers block when it is full, which pushes back on the
// senders instead of dropping. Each waiting packet holds one slot, and a
// deeper queue only holds more memory: the reader takes a batch at a time.
const queueDepth = 2 * conn.IdealBatchSize

// slot holds one packet, at buf[start:end]. Most slots are the MemTUN's MTU
// plus Headroom (a 9 KiB slot for a 1420-byte packet would be most of a
// proxy's memory under load); a bigger packet (a peer with a larger MTU, up
// to slotSize) takes a big slot.
type slot struct {
	buf        []byte
	start, end int
}

var bigSlots = sync.Pool{New: func() any { return &slot{buf: make([]byte, slotSize)} }}

// MemTUN is the in-memory tun.Device that joins a wireguard-go device to a
// Handler (a proxy's router): packets WireGuard writes go through the Handler,
// and what the Handler emits, or Inject adds, is what WireGuard reads next.
// It has no host interface at all, which is why proxies need no root.
type MemTUN struct {
	name     string
	mtu      int
	handler  Handler
	clock    func() int64
	events   chan tun.Event
	slots    sync.Pool // of *slot of smallLen bytes
	smallLen int

	mu       sync.Mutex
	ring     [queueDepth]*slot // FIFO of n slots from head
	head, n  int
	notEmpty chan struct{}
	notFull  chan struct{}
	closed   chan struct{}
	once     sync.Once

	gate      *Gate        // NewGate: counts what the device holds
	writing   atomic.Int32 // writers waiting for room: the in direction holds for real
	readTimer *time.Timer  // the reader's, for the gate
	reader    reader       // the reader's previous buffers, for the gate

	// Oversize counts packets too big for a slot.
	Oversize atomic.Uint64
	// Written counts the packets WireGuard wrote (decrypted), one add per
	// batch: how busy the data path is.
	Written atomic.Uint64
}

var _ tun.Device = (*MemTUN)(nil)

// NewMemTUN returns a MemTUN that passes WireGuard's packets to h, with the
// time clock tells once per batch (a clock read per packet costs a few
// percent of a proxy's CPU; nil passes 0).
func NewMemTUN(name string, mtu int, clock func() int64, h Handler) *MemTUN {
	if clock == nil {
		clock = func() int64 { return 0 }
	}
	t := &MemTUN{
		name:     name,
		mtu:      mtu,
		handler:  h,
		clock:    clock,
		events:   make(chan tun.Event, 1),
		notEmpty: make(chan struct{}, 1),
		notFull:  make(chan struct{}, 1),
		closed:   make(chan struct{}),
	}
	t.smallLen = min(Headroom+max(mtu, 576), slotSize)
	t.slots.New = func() any { return &slot{buf: make([]byte, t.smallLen)} }
	t.events <- tun.EventUp
	return t
}

// getSlot is a slot with room for Headroom plus n bytes (n ≤ slotSize−Headroom).
func (t *MemTUN) getSlot(n int) *slot {
	if Headroom+n <= t.smallLen {
		return t.slots.Get().(*slot)
	}
	return bigSlots.Get().(*slot)
}

func (t *MemTUN) putSlot(s *slot) {
	if len(s.buf) == t.smallLen {
		t.slots.Put(s)
	} else {
		bigSlots.Put(s)
	}
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
// each peer's receive goroutine. The batch is routed packet by packet and
// queued whole: one lock and one wake-up of the reader per batch. The
// packets leave the device's in direction when it returns.
func (t *MemTUN) Write(bufs [][]byte, offset int) (int, error) {
	n, err := t.write(bufs, offset)
	if t.gate != nil {
		t.gate.release(t.gate.In, bufs)
	}
	return n, err
}

func (t *MemTUN) write(bufs [][]byte, offset int) (int, error) {
	var batch [conn.IdealBatchSize]*slot
	n := 0
	now := t.clock()
	t.Written.Add(uint64(len(bufs)))
	for i, b := range bufs {
		pkt := b[offset:]
		if len(pkt) == 0 {
			continue
		}
		if len(pkt) > slotSize-Headroom {
			t.Oversize.Add(1)
			continue
		}
		s := t.getSlot(len(pkt))
		k := copy(s.buf[Headroom:], pkt)
		start, end, emit := t.handler(s.buf, Headroom, Headroom+k, now)
		if !emit {
			t.putSlot(s)
			continue
		}
		s.start, s.end = start, end
		batch[n] = s
		if n++; n == len(batch) {
			if err := t.enqueue(batch[:n]); err != nil {
				return i, err
			}
			n = 0
		}
	}
	if err := t.enqueue(batch[:n]); err != nil {
		return 0, err
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
	s := t.getSlot(len(pkt))
	s.start = Headroom
	s.end = Headroom + copy(s.buf[Headroom:], pkt)
	return t.enqueue([]*slot{s})
}

// enqueue appends ss to the queue, waiting for room while it is full.
func (t *MemTUN) enqueue(ss []*slot) error {
	for len(ss) > 0 {
		t.mu.Lock()
		k := min(len(ss), queueDepth-t.n)
		for _, s := range ss[:k] {
			t.ring[(t.head+t.n)%queueDepth] = s
			t.n++
		}
		t.mu.Unlock()
		if k > 0 {
			signal(t.notEmpty)
			ss = ss[k:]
			continue
		}
		t.writing.Add(1)
		select {
		case <-t.notFull:
		case <-t.closed:
			t.writing.Add(-1)
			for _, s := range ss {
				t.putSlot(s)
			}
			return os.ErrClosed
		}
		t.writing.Add(-1)
	}
	return nil
}

// Read hands WireGuard up to len(bufs) queued packets, blocking until there is
// at least one (and, with a gate, until its out direction has room). The
// packets are copied out after the lock is released, so writers are not
// held up by the copies. WireGuard reads from one goroutine.
func (t *MemTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var batch [conn.IdealBatchSize]*slot
	room := len(batch)
	if t.gate != nil {
		t.gate.recycle(&t.reader, t.gate.Out, bufs)
		var err error
		if room, err = t.gate.Out.wait(&t.readTimer, t.closed); err != nil {
			return 0, err
		}
	}
	for {
		t.mu.Lock()
		n := min(len(bufs), len(batch), t.n, room)
		if n > 0 {
			for i := range n {
				j := (t.head + i) % queueDepth
				batch[i], t.ring[j] = t.ring[j], nil
			}
			t.head = (t.head + n) % queueDepth
			t.n -= n
			more := t.n > 0
			t.mu.Unlock()
			signal(t.notFull)
			if more {
				signal(t.notEmpty)
			}
			for i, s := range batch[:n] {
				sizes[i] = copy(bufs[i][offset:], s.buf[s.start:s.end])
				t.putSlot(s)
			}
			if t.gate != nil {
				t.gate.take(&t.reader, t.gate.Out, bufs, nil, n)
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
