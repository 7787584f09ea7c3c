package tunnel

import (
	"encoding/binary"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.zx2c4.com/wireguard/device"
)

// A proxy's memory under load is wireguard-go's: it gives every packet it
// holds a 64 KiB buffer (device.MaxMessageSize), and on Linux its pools
// have no cap (PreallocatedBuffersPerPool is 0) and its queues hold 1024
// batches of up to 128 packets. A burst the device cannot drain at once
// (8 TCP windows through one proxy) becomes 4096 buffers, 256 MiB. pias
// owns both ends of each direction through the device and caps what is
// between them:
//
//   - in: from the SideBind's receive (a datagram read) to MemTUN.Write
//     (decrypted and handed to the router);
//   - out: from MemTUN.Read (handed to wireguard-go) to the SideBind's
//     Send (encrypted and sent).
//
// A full direction stops taking more: the receive goroutine does not read
// the socket (the kernel queues, then drops, as on any congested link),
// the TUN reader does not read the MemTUN (whose writers then wait).

// Default caps of a proxy's Gate. DefaultIn is what the receive functions
// may start a read under; each read takes up to a whole batch, so the
// bound is DefaultIn plus a batch (128) per receive function. A proxy is
// CPU-bound long before these fill: 8 TCP streams through the namespace
// lab ran as fast with 32 / 64 as with 128 / 256 (paired runs, median
// ratio 1.02), and each packet held is a 64 KiB buffer.
const (
	DefaultIn   = 32
	DefaultOut  = 64
	DefaultIdle = 50 * time.Millisecond
)

// Inflight is the packets inside wireguard-go in one direction, known by
// their buffers (wireguard-go hands the same 64 KiB buffer from the
// read to the write or send), and makes the side that adds them wait
// while there are Max or more.
//
// Repair: wireguard-go drops some packets without telling (an unknown
// receiver index, a bad MAC, a replay, a keepalive, a packet to no peer or
// to a peer without a session), so a count alone would leak. A dropped
// packet's buffer goes back to wireguard-go's pool, and from there, soon,
// to a read again (the receive functions' and MemTUN.Read's buffers come
// from that pool): a buffer handed to a read, or left in a slot of the
// previous read, is not inside the device, whatever it held. A buffer
// that never comes back (its pool let go of it) is covered by a
// look into the pool while waiting (Watch), and a backstop: a waiter
// that sees nothing leave for Idle, while the stage
// after the device is not itself waiting, takes it that the device is
// empty and forgets all it held. No leak wedges a direction.
type Inflight struct {
	g    *Gate
	max  int
	idle time.Duration
	busy func() bool // the next stage waits: the held packets are held for real

	held  ptrSet        // guarded by g.mu
	n     atomic.Int64  // len(held), for waiters
	moved atomic.Uint64 // releases so far: the progress a waiter looks for
	wake  chan struct{}

	// Resets counts the backstop's repairs.
	Resets atomic.Uint64
	// Waits counts the times a side found the direction full.
	Waits atomic.Uint64
	// Recycled counts the packets let go because their buffer came back
	// to a read: what wireguard-go dropped.
	Recycled atomic.Uint64
}

// Held is how many packets the direction holds now.
func (f *Inflight) Held() int { return int(f.n.Load()) }

// wait returns once the direction holds fewer than Max (how many more
// fit), or os.ErrClosed once closed is. *t is the caller's timer, made
// on first need and reused, so that waiting allocates nothing.
//
// A waiter that sees nothing leave looks into the device's pool (probe)
// after probeAfter, then after twice as long each time it finds nothing
// there, and gives up on what is held (the backstop) after Idle.
func (f *Inflight) wait(t **time.Timer, closed <-chan struct{}) (int, error) {
	waited := false
	seen, quiet, next := f.moved.Load(), time.Duration(0), probeAfter
	for {
		if n := int(f.n.Load()); n < f.max {
			if waited {
				signal(f.wake) // the next waiter, if there is room for it too
			}
			return f.max - n, nil
		}
		if !waited {
			f.Waits.Add(1)
			waited = true
		}
		if *t == nil {
			*t = time.NewTimer(tick)
		} else {
			(*t).Reset(tick)
		}
		select {
		case <-f.wake:
		case <-(*t).C:
			if m := f.moved.Load(); m != seen {
				seen, quiet, next = m, 0, probeAfter
				continue
			}
			quiet += tick
			if quiet >= next {
				next *= 2
				// While this side waits it draws no buffers from the
				// pool: the buffers of what the device dropped gather
				// there.
				if f.g.probe() > 0 {
					continue
				}
			}
			if quiet >= f.idle && (f.busy == nil || !f.busy()) {
				f.g.mu.Lock()
				if int(f.n.Load()) >= f.max {
					f.held.clear()
					f.n.Store(0)
					f.Resets.Add(1)
				}
				f.g.mu.Unlock()
				quiet, next = 0, probeAfter
			}
		case <-closed:
			(*t).Stop()
			return 0, os.ErrClosed
		}
		(*t).Stop()
	}
}

// A waiter looks for progress every tick; it first probes the pool
// after probeAfter without any, and then takes out at most probeLen
// buffers to look at (and puts them back), probeChunk at a time.
// probeLen is well above what a gated device's pool holds (its readers'
// batches, the gate's bounds: under 1,000 buffers) unless a handshake
// flood filled wireguard-go's handshake queue, whose buffers the backstop
// then covers.
const (
	tick       = time.Millisecond
	probeAfter = 2 * time.Millisecond
	probeLen   = 1024
	probeChunk = 32
)

// probe takes buffers out of the device's pool and puts them back: a
// held buffer among them has left the device. It looks through the whole
// pool, not only as many buffers as are held: the dropped ones may lie
// behind any number of others. (The pool is a sync.Pool: a Get takes its
// own P's newest first, and another P's oldest first. At in 32 / out 64,
// a replay flood at a proxy reached the backstop again and again with
// all it held in the pool, behind 65 to 170 others.)
//
// It stops once nothing is held any more, or at the first buffer the pool
// made for it (never used: all zero where a datagram or a packet starts):
// the pool was empty. That buffer it lets go of rather than put back, so
// probes never grow the pool; nor does one look at every buffer in it
// when what is held lies in front, which would keep them all from the
// collector (a sync.Pool lets go of what no Get took for two cycles).
// A blocked direction probes at most log2(Idle/probeAfter)+1 times before
// the backstop. It reports how many it let go.
func (g *Gate) probe() int {
	pool := g.pool.Load()
	if pool == nil {
		return 0
	}
	if !g.probing.TryLock() {
		return 0 // the other direction looks already
	}
	defer g.probing.Unlock()
	g.Probes.Add(1)
	bufs := &g.probed
	k, ki, ko := 0, 0, 0
	for empty := false; k < len(bufs) && !empty; {
		j := k
		for ; k < min(j+probeChunk, len(bufs)); k++ {
			b := (*pool).GetMessageBuffer()
			if unused(b) {
				g.Fresh.Add(1)
				empty = true
				break
			}
			bufs[k] = b
		}
		g.mu.Lock()
		for _, b := range bufs[j:k] {
			i, o := g.letGoLocked(uintptr(unsafe.Pointer(b)))
			ki, ko = ki+i, ko+o
		}
		done := g.In.n.Load()+g.Out.n.Load() == 0
		g.mu.Unlock()
		if done {
			break
		}
	}
	for i, b := range bufs[:k] {
		(*pool).PutMessageBuffer(b)
		bufs[i] = nil
	}
	g.In.Recycled.Add(uint64(ki))
	g.Out.Recycled.Add(uint64(ko))
	g.In.progress(ki)
	g.Out.progress(ko)
	return ki + ko
}

// letGoLocked forgets buffer p, back from the device, in whichever
// direction held it, and counts it (1) there.
func (g *Gate) letGoLocked(p uintptr) (in, out int) {
	if g.In.dropLocked(p) {
		in = 1
	}
	if g.Out.dropLocked(p) {
		out = 1
	}
	return in, out
}

// unused is whether a buffer from the pool never held a datagram (its
// message type, at 0) nor a packet (its IP version, at the transport
// header's end): the pool made it just now.
func unused(b *[device.MaxMessageSize]byte) bool {
	return binary.LittleEndian.Uint32(b[:4]) == 0 && b[device.MessageTransportOffsetContent] == 0
}

// Pool is the device's buffer pool (a *device.Device is one).
type Pool interface {
	GetMessageBuffer() *[device.MaxMessageSize]byte
	PutMessageBuffer(*[device.MaxMessageSize]byte)
}

// Watch lets waiters look into the pool of the device the gate serves,
// for the buffers of packets it dropped.
func (g *Gate) Watch(p Pool) { g.pool.Store(&p) }

// addLocked counts buffer p in.
func (f *Inflight) addLocked(p uintptr) {
	if f.held.add(p) {
		f.n.Add(1)
	}
}

// dropLocked counts buffer p out if it was in.
func (f *Inflight) dropLocked(p uintptr) bool {
	if f.held.remove(p) {
		f.n.Add(-1)
		return true
	}
	return false
}

// progress wakes a waiter after k packets left.
func (f *Inflight) progress(k int) {
	if k > 0 {
		f.moved.Add(1)
		signal(f.wake)
	}
}

func key(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// Gate is the two directions of a proxy's device.
type Gate struct {
	In, Out *Inflight
	mu      sync.Mutex // guards both held sets
	pool    atomic.Pointer[Pool]

	probing sync.Mutex                             // one probe at a time
	probed  [probeLen]*[device.MaxMessageSize]byte // what it took out; guarded by probing

	// Probes counts the looks into the pool; Fresh the buffers the pool
	// made for them (at most one a look, when it was empty, let go of).
	Probes, Fresh atomic.Uint64
}

// NewGate caps the packets inside the wireguard-go device that joins t and
// b: in (at most, plus a batch per receive function) between b's receive
// and t's Write, out between t's Read and b's Send, repaired as Inflight
// says, with the backstop after idle. Call it before the device starts.
func NewGate(t *MemTUN, b *SideBind, in, out int, idle time.Duration) *Gate {
	g := newGate(in, out, idle, func() bool { return t.writing.Load() > 0 }, func() bool { return b.sending.Load() > 0 })
	t.gate = g
	b.gate = g
	return g
}

// newGate is a gate without its ends; busyIn and busyOut tell whether
// the stage after each direction waits.
func newGate(in, out int, idle time.Duration, busyIn, busyOut func() bool) *Gate {
	g := &Gate{}
	g.In = &Inflight{g: g, max: in, idle: idle, busy: busyIn, wake: make(chan struct{}, 1)}
	g.Out = &Inflight{g: g, max: out, idle: idle, busy: busyOut, wake: make(chan struct{}, 1)}
	return g
}

// reader is what the gate remembers of one reader's previous call (a
// receive function's, MemTUN.Read's): the buffers in its slots, and which
// it counted in.
type reader struct {
	last    []uintptr
	counted []bool
	n       int // packets the previous call took: wireguard-go refills only those slots
}

// recycle looks at the buffers wireguard-go hands a reader: a slot that
// still has the buffer of the previous call was not passed on (its packet
// was dropped at once); a new buffer in a slot came from the pool, so
// whatever it held has left the device.
func (g *Gate) recycle(r *reader, f *Inflight, bufs [][]byte) {
	walk := bufs[:min(r.n, len(bufs))]
	if len(r.last) != len(bufs) {
		// The first call: every slot is a buffer from the pool.
		r.last, r.counted = make([]uintptr, len(bufs)), make([]bool, len(bufs))
		walk = bufs
	}
	r.n = 0
	ki, ko := 0, 0
	g.mu.Lock()
	for i, b := range walk {
		p := key(b)
		if p == r.last[i] {
			if r.counted[i] && f.dropLocked(p) {
				if f == g.In {
					ki++
				} else {
					ko++
				}
			}
		} else {
			in, out := g.letGoLocked(p)
			ki, ko = ki+in, ko+out
			r.last[i] = p
		}
		r.counted[i] = false
	}
	g.mu.Unlock()
	g.In.Recycled.Add(uint64(ki))
	g.Out.Recycled.Add(uint64(ko))
	g.In.progress(ki)
	g.Out.progress(ko)
}

// take counts in the buffers of bufs[:n]: all, or with sizes those that
// hold a data message.
func (g *Gate) take(r *reader, f *Inflight, bufs [][]byte, sizes []int, n int) {
	g.mu.Lock()
	for i := range n {
		if sizes == nil || isData(bufs[i][:sizes[i]]) {
			f.addLocked(key(bufs[i]))
			r.counted[i] = true
		}
	}
	g.mu.Unlock()
	r.n = n
}

// release counts out the buffers of bufs: written or sent.
func (g *Gate) release(f *Inflight, bufs [][]byte) {
	k := 0
	g.mu.Lock()
	for _, b := range bufs {
		if f.dropLocked(key(b)) {
			k++
		}
	}
	g.mu.Unlock()
	f.progress(k)
}

// isData is whether a datagram is a WireGuard data message with a packet
// in it (a keepalive holds a buffer too, but is never written).
func isData(p []byte) bool {
	return len(p) > wgTransportMin && binary.LittleEndian.Uint32(p) == wgTransport
}

const (
	wgTransport    = 4  // device.MessageTransportType
	wgTransportMin = 32 // header and tag: a keepalive
)

// ptrSet is a set of buffer addresses: open addressing, linear probing,
// deletion by backward shift; no allocation after the first add.
type ptrSet struct {
	slots []uintptr // 0: empty
	n     int
}

const ptrSetSize = 4096 // a power of two, well above what a gate holds

func (s *ptrSet) home(p uintptr) int {
	return int((uint64(p) >> 6 * 0x9E3779B97F4A7C15) >> 52) // 12 bits
}

func (s *ptrSet) add(p uintptr) bool {
	if s.slots == nil {
		s.slots = make([]uintptr, ptrSetSize)
	}
	if s.n >= ptrSetSize*3/4 {
		return false // not counted: only uncapped
	}
	for i := s.home(p); ; i = (i + 1) & (ptrSetSize - 1) {
		switch s.slots[i] {
		case p:
			return false
		case 0:
			s.slots[i] = p
			s.n++
			return true
		}
	}
}

func (s *ptrSet) remove(p uintptr) bool {
	if s.n == 0 {
		return false
	}
	i := s.home(p)
	for ; s.slots[i] != p; i = (i + 1) & (ptrSetSize - 1) {
		if s.slots[i] == 0 {
			return false
		}
	}
	// Shift back the entries after i that would not be found past the hole.
	for j := i; ; {
		j = (j + 1) & (ptrSetSize - 1)
		q := s.slots[j]
		if q == 0 {
			break
		}
		h := s.home(q)
		// q stays if its home lies cyclically in (i, j].
		if (i < j && i < h && h <= j) || (j < i && (h > i || h <= j)) {
			continue
		}
		s.slots[i] = q
		i = j
	}
	s.slots[i] = 0
	s.n--
	return true
}

func (s *ptrSet) clear() {
	clear(s.slots)
	s.n = 0
}
