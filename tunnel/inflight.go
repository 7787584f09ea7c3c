package tunnel

import (
	"encoding/binary"
	"os"
	"sync"
	"sync/atomic"
	"time"
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
// bound is DefaultIn plus a batch (128) per receive function.
const (
	DefaultIn   = 128
	DefaultOut  = 256
	DefaultIdle = 50 * time.Millisecond
)

// Inflight counts the packets inside wireguard-go in one direction and
// makes the side that adds them wait while there are Max or more.
//
// Repair rule: wireguard-go drops some packets without telling (a bad MAC,
// a replay, a keepalive, a packet to a peer without a session, a full
// queue), so the count can leak upwards. A waiter that sees no packet
// leave for Idle, while the stage after the device is not itself waiting
// (which would hold packets for real), takes it that the device is empty
// and sets the count to zero. A real packet leaves within about a
// millisecond (the cap is a few hundred packets of a microsecond's
// cipher each), so a leak costs at most Idle of stall per Max packets
// leaked, and no leak wedges a direction.
type Inflight struct {
	max  int64
	idle time.Duration
	busy func() bool // the next stage waits: the held packets are held for real

	n     atomic.Int64
	moved atomic.Uint64 // releases so far: the progress a waiter looks for
	wake  chan struct{}

	// Resets counts the repairs: the count set to zero after Idle with
	// no progress.
	Resets atomic.Uint64
	// Waits counts the times a side found the direction full.
	Waits atomic.Uint64
}

func newInflight(max int, idle time.Duration, busy func() bool) *Inflight {
	return &Inflight{max: int64(max), idle: idle, busy: busy, wake: make(chan struct{}, 1)}
}

// Held is how many packets the count holds now.
func (g *Inflight) Held() int { return int(g.n.Load()) }

// wait returns once the count is below Max (how many more fit), or
// os.ErrClosed once closed is. *t is the caller's timer, made on first
// need and reused, so that waiting allocates nothing.
func (g *Inflight) wait(t **time.Timer, closed <-chan struct{}) (int, error) {
	waited := false
	for {
		if n := g.n.Load(); n < g.max {
			if waited {
				signal(g.wake) // the next waiter, if there is room for it too
			}
			return int(g.max - n), nil
		}
		if !waited {
			g.Waits.Add(1)
			waited = true
		}
		seen := g.moved.Load()
		if *t == nil {
			*t = time.NewTimer(g.idle)
		} else {
			(*t).Reset(g.idle)
		}
		select {
		case <-g.wake:
		case <-(*t).C:
			if g.moved.Load() == seen && (g.busy == nil || !g.busy()) && g.n.Load() >= g.max {
				g.n.Store(0)
				g.Resets.Add(1)
			}
		case <-closed:
			(*t).Stop()
			return 0, os.ErrClosed
		}
		(*t).Stop()
	}
}

func (g *Inflight) take(k int) {
	if k > 0 {
		g.n.Add(int64(k))
	}
}

// release counts k packets out; the count does not go below zero (a
// repair may have zeroed it while they were inside).
func (g *Inflight) release(k int) {
	if k <= 0 {
		return
	}
	for {
		n := g.n.Load()
		if g.n.CompareAndSwap(n, max(n-int64(k), 0)) {
			break
		}
	}
	g.moved.Add(1)
	signal(g.wake)
}

// Gate is the two caps of a proxy's device.
type Gate struct {
	In, Out *Inflight
}

// NewGate caps the packets inside the wireguard-go device that joins t and
// b: in (at most, plus a batch per receive function) between b's receive
// and t's Write, out between t's Read and b's Send, with the repair rule
// of Inflight after idle. Call it before the device starts.
func NewGate(t *MemTUN, b *SideBind, in, out int, idle time.Duration) *Gate {
	g := &Gate{
		In:  newInflight(in, idle, func() bool { return t.writing.Load() > 0 }),
		Out: newInflight(out, idle, func() bool { return b.sending.Load() > 0 }),
	}
	t.gate = g
	b.gate = g
	return g
}

// WireGuard's message types and sizes (device.Message*), read off the
// wire by the gate.
const (
	wgInitiation    = 1
	wgResponse      = 2
	wgTransport     = 4
	wgInitiationLen = 148
	wgResponseLen   = 92
	wgTransportMin  = 32 // header and tag: a keepalive, no packet
)

// indexSet is the receiver indexes this device handed out: the sender
// index of each handshake initiation and response it sent. A transport
// datagram to an index outside it is dropped by wireguard-go as soon as it
// is read, holding nothing, so the gate does not count it: a flood of made
// up datagrams cannot fill the count. Two generations, each up to
// maxIndexes; the older goes after indexLife (a session lives at most
// 180 s, WireGuard's RejectAfterTime) or when the newer is full. An index
// lost so early is only no longer counted.
type indexSet struct {
	mu       sync.RWMutex
	cur, old map[uint32]struct{}
	since    time.Time // when cur began
}

const (
	maxIndexes = 8192
	indexLife  = 200 * time.Second
)

// learn reads the sender index of a handshake message p this device sends.
func (s *indexSet) learn(p []byte, now func() time.Time) {
	if len(p) < 8 {
		return
	}
	switch typ := binary.LittleEndian.Uint32(p); {
	case typ == wgInitiation && len(p) == wgInitiationLen, typ == wgResponse && len(p) == wgResponseLen:
	default:
		return
	}
	idx := binary.LittleEndian.Uint32(p[4:])
	t := now()
	s.mu.Lock()
	if s.cur == nil || len(s.cur) >= maxIndexes || t.Sub(s.since) >= indexLife {
		s.old, s.cur, s.since = s.cur, make(map[uint32]struct{}), t
	}
	s.cur[idx] = struct{}{}
	s.mu.Unlock()
}

// counts is how many of the n datagrams in bufs are transport messages to
// an index of s: those wireguard-go will hold.
func (s *indexSet) counts(bufs [][]byte, sizes []int, n int) int {
	k := 0
	s.mu.RLock()
	for i := range n {
		p := bufs[i][:sizes[i]]
		if len(p) <= wgTransportMin || binary.LittleEndian.Uint32(p) != wgTransport {
			continue // a keepalive holds a buffer too, but is never written
		}
		idx := binary.LittleEndian.Uint32(p[4:])
		if _, ok := s.cur[idx]; ok {
			k++
		} else if _, ok := s.old[idx]; ok {
			k++
		}
	}
	s.mu.RUnlock()
	return k
}
