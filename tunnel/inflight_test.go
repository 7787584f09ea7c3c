package tunnel

import (
	"encoding/binary"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// The gate alone, with a fake device: buffers from a fake pool, a reader's
// slots as wireguard-go keeps them (a slot passed on gets a new buffer
// from the pool, a slot dropped at once keeps its buffer).

type buf = *[device.MaxMessageSize]byte

// fakePool is a device's buffer pool that counts what it had to make.
type fakePool struct {
	mu   sync.Mutex
	free []buf
	made atomic.Int64
}

func (p *fakePool) GetMessageBuffer() buf {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b
	}
	p.made.Add(1)
	return new([device.MaxMessageSize]byte)
}

func (p *fakePool) PutMessageBuffer(b buf) {
	p.mu.Lock()
	p.free = append(p.free, b)
	p.mu.Unlock()
}

// slots is a reader's batch: n buffers from the pool.
type slots struct {
	arr  []buf
	bufs [][]byte
	r    reader
}

func newSlots(p *fakePool, n int) *slots {
	s := &slots{arr: make([]buf, n), bufs: make([][]byte, n)}
	for i := range s.arr {
		s.arr[i] = p.GetMessageBuffer()
		s.bufs[i] = s.arr[i][:]
	}
	return s
}

// read is a receive function's read of a whole batch of data messages,
// through the gate's in direction; the device then passes on the slots
// in pass (nil: all), which get new buffers from the pool, and returns
// the buffers it passed on.
func (s *slots) read(t *testing.T, g *Gate, p *fakePool, pass []int) []buf {
	t.Helper()
	g.recycle(&s.r, g.In, s.bufs)
	var tm *time.Timer
	if _, err := g.In.wait(&tm, nil); err != nil {
		t.Fatal(err)
	}
	sizes := make([]int, len(s.bufs))
	for i := range s.bufs {
		binary.LittleEndian.PutUint32(s.bufs[i], wgTransport)
		s.bufs[i][device.MessageTransportOffsetContent] = 0x45
		sizes[i] = 100
	}
	g.take(&s.r, g.In, s.bufs, sizes, len(s.bufs))
	if pass == nil {
		pass = make([]int, len(s.bufs))
		for i := range pass {
			pass[i] = i
		}
	}
	var out []buf
	for _, i := range pass {
		out = append(out, s.arr[i])
		s.arr[i] = p.GetMessageBuffer()
		s.bufs[i] = s.arr[i][:]
	}
	return out
}

func bytesOf(bs []buf) [][]byte {
	out := make([][]byte, len(bs))
	for i, b := range bs {
		out[i] = b[:100]
	}
	return out
}

func never() bool { return false }

// Packets written leave: the count follows the buffers in and out.
func TestInflightCountsWrites(t *testing.T) {
	p := &fakePool{}
	g := newGate(8, 8, time.Hour, never, never)
	s := newSlots(p, 4)
	got := s.read(t, g, p, nil)
	if n := g.In.Held(); n != 4 {
		t.Fatalf("held %d after a read of 4, want 4", n)
	}
	g.release(g.In, bytesOf(got[:3]))
	if n := g.In.Held(); n != 1 {
		t.Fatalf("held %d after 3 of 4 written, want 1", n)
	}
	g.release(g.In, bytesOf(got[:3])) // written twice: counted once
	if n := g.In.Held(); n != 1 {
		t.Fatalf("held %d after a second release of the same buffers, want 1", n)
	}
	g.release(g.In, bytesOf(got[3:]))
	if n := g.In.Held(); n != 0 {
		t.Fatalf("held %d after all written, want 0", n)
	}
	if r := g.In.Recycled.Load(); r != 0 {
		t.Fatalf("%d recycled with nothing dropped", r)
	}
}

// A packet the device dropped at once keeps its slot: the next read sees
// the same buffer there and lets it go.
func TestInflightSlotKept(t *testing.T) {
	p := &fakePool{}
	g := newGate(8, 8, time.Hour, never, never)
	s := newSlots(p, 4)
	passed := s.read(t, g, p, []int{0, 2}) // 1 and 3 dropped at once
	g.release(g.In, bytesOf(passed))
	if n := g.In.Held(); n != 2 {
		t.Fatalf("held %d, want 2 (the dropped ones, not yet seen)", n)
	}
	g.recycle(&s.r, g.In, s.bufs)
	if n := g.In.Held(); n != 0 {
		t.Fatalf("held %d after the next read saw the dropped buffers in their slots, want 0", n)
	}
	if r := g.In.Recycled.Load(); r != 2 {
		t.Fatalf("%d recycled, want 2", r)
	}
}

// A packet the device dropped later puts its buffer back in the pool; a
// read that gets it from there (any reader, either direction) lets it go.
func TestInflightBufferReused(t *testing.T) {
	p := &fakePool{}
	g := newGate(8, 8, time.Hour, never, never)
	s := newSlots(p, 4)
	passed := s.read(t, g, p, nil)
	for _, b := range passed[1:] {
		p.PutMessageBuffer(b) // dropped inside: a replay, a bad MAC
	}
	g.release(g.In, bytesOf(passed[:1]))
	if n := g.In.Held(); n != 3 {
		t.Fatalf("held %d, want 3", n)
	}
	other := newSlots(p, 3) // the TUN reader's next batch, from the pool
	g.recycle(&other.r, g.Out, other.bufs)
	if n := g.In.Held(); n != 0 {
		t.Fatalf("held %d after another reader got the dropped buffers, want 0", n)
	}
	if r := g.In.Recycled.Load(); r != 3 {
		t.Fatalf("%d recycled, want 3", r)
	}
}

// A full direction waits; a write lets a waiter on.
func TestInflightWaitsWhenFull(t *testing.T) {
	p := &fakePool{}
	g := newGate(4, 4, time.Hour, never, never)
	s := newSlots(p, 4)
	passed := s.read(t, g, p, nil)
	done := make(chan error, 1)
	go func() {
		var tm *time.Timer
		_, err := g.In.wait(&tm, nil)
		done <- err
	}()
	for t0 := time.Now(); g.In.Waits.Load() == 0; time.Sleep(time.Millisecond) { // until the waiter found it full
		if time.Since(t0) > 10*time.Second {
			t.Fatal("the waiter never found the direction full")
		}
	}
	select {
	case <-done:
		t.Fatal("a waiter went on while the direction was full")
	default:
	}
	g.release(g.In, bytesOf(passed[:1]))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write did not let the waiter on")
	}
}

// Closing wakes a waiter.
func TestInflightWaitClosed(t *testing.T) {
	g := newGate(1, 1, time.Hour, never, never)
	s := newSlots(&fakePool{}, 1)
	s.read(t, g, &fakePool{}, nil)
	closed := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		var tm *time.Timer
		_, err := g.In.wait(&tm, closed)
		done <- err
	}()
	close(closed)
	select {
	case err := <-done:
		if err != os.ErrClosed {
			t.Fatalf("wait returned %v, want os.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("closing did not wake the waiter")
	}
}

// The buffers of what the device dropped gather in its pool while the
// direction waits: a probe finds them.
func TestInflightProbeFindsDropped(t *testing.T) {
	p := &fakePool{}
	g := newGate(4, 4, time.Hour, never, never)
	g.Watch(p)
	s := newSlots(p, 4)
	passed := s.read(t, g, p, nil)
	for _, b := range passed {
		p.PutMessageBuffer(b) // all dropped inside
	}
	done := make(chan error, 1)
	go func() {
		var tm *time.Timer
		_, err := g.In.wait(&tm, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wedged: the probe did not find the dropped buffers in the pool")
	}
	if g.In.Recycled.Load() == 0 || g.In.Resets.Load() != 0 {
		t.Fatalf("%d recycled, %d resets: want the probe, not the backstop", g.In.Recycled.Load(), g.In.Resets.Load())
	}
}

// A probe of an empty pool makes at most one buffer, lets go of nothing
// held, and does not put that buffer in the pool: probes never grow it
// (each would add one, and a replay flood probes hundreds of times).
func TestInflightProbeEmptyPool(t *testing.T) {
	p := &fakePool{}
	g := newGate(4, 4, time.Hour, never, never)
	g.Watch(p)
	s := newSlots(p, 4)
	passed := s.read(t, g, p, nil) // held: the pool is empty
	for range 3 {
		made := p.made.Load()
		if k := g.probe(); k != 0 {
			t.Fatalf("a probe let go of %d held buffers that are not in the pool", k)
		}
		if m := p.made.Load() - made; m > 1 {
			t.Fatalf("a probe of an empty pool made %d buffers, want at most 1", m)
		}
		if n := len(p.free); n != 0 {
			t.Fatalf("%d buffers in the pool after probes of an empty one, want 0", n)
		}
	}
	if n := g.In.Held(); n != 4 {
		t.Fatalf("held %d, want 4", n)
	}
	p.PutMessageBuffer(passed[0]) // dropped
	if k := g.probe(); k != 1 {
		t.Fatalf("a probe let go of %d, want the 1 dropped", k)
	}
}

// The dropped buffers may lie in the pool behind many more buffers than
// are held (packets passed on, put back later, or on another P): a probe
// looks through the whole pool for them.
func TestInflightProbeLooksPastOthers(t *testing.T) {
	p := &fakePool{}
	g := newGate(4, 4, time.Hour, never, never)
	g.Watch(p)
	s := newSlots(p, 4)
	passed := s.read(t, g, p, nil)
	others := make([]buf, 100) // used, not held
	for i := range others {
		others[i] = new([device.MaxMessageSize]byte)
		binary.LittleEndian.PutUint32(others[i][:], wgTransport)
	}
	p.mu.Lock()
	p.free = append(append(p.free, passed...), others...) // the dropped beneath
	p.mu.Unlock()
	made := p.made.Load()
	if k := g.probe(); k != 4 {
		t.Fatalf("a probe let go of %d, want the 4 dropped beneath %d others", k, len(others))
	}
	if m := p.made.Load() - made; m > 1 {
		t.Fatalf("a probe made %d buffers, want at most 1", m)
	}
	if n := len(p.free); n != len(passed)+len(others) {
		t.Fatalf("%d buffers in the pool after a probe, want the %d it took", n, len(passed)+len(others))
	}
}

// A probe stops once nothing is held: it does not take every buffer out
// of the pool, nor make one.
func TestInflightProbeStopsWhenAllFound(t *testing.T) {
	p := &fakePool{}
	g := newGate(4, 4, time.Hour, never, never)
	g.Watch(p)
	s := newSlots(p, 4)
	passed := s.read(t, g, p, nil)
	others := make([]buf, 4*probeChunk) // used, not held
	for i := range others {
		others[i] = new([device.MaxMessageSize]byte)
		binary.LittleEndian.PutUint32(others[i][:], wgTransport)
	}
	p.mu.Lock()
	p.free = append(append(p.free, others...), passed...) // the dropped on top
	p.mu.Unlock()
	made := p.made.Load()
	var took atomic.Int64
	g.Watch(countingPool{p, &took})
	if k := g.probe(); k != 4 {
		t.Fatalf("a probe let go of %d, want the 4 dropped", k)
	}
	if n := took.Load(); n > probeChunk {
		t.Fatalf("a probe took %d buffers out of the pool, want at most %d: all it held was on top", n, probeChunk)
	}
	if m := p.made.Load() - made; m != 0 {
		t.Fatalf("a probe made %d buffers, want none: the pool was not empty", m)
	}
}

// countingPool counts the buffers taken out of a pool.
type countingPool struct {
	*fakePool
	took *atomic.Int64
}

func (c countingPool) GetMessageBuffer() buf {
	c.took.Add(1)
	return c.fakePool.GetMessageBuffer()
}

// A device that lets go of buffers where the gate cannot see them (the
// pool let go of them too) does not wedge a direction: the backstop
// forgets what it held after Idle, and not while the next stage waits.
func TestInflightBackstop(t *testing.T) {
	const idle = 20 * time.Millisecond
	var busy atomic.Bool
	busy.Store(true)
	p := &fakePool{}
	g := newGate(4, 4, idle, busy.Load, never)
	g.Watch(&fakePool{}) // not the device's: its buffers never show up there
	s := newSlots(p, 4)
	s.read(t, g, p, nil) // all lost
	done := make(chan error, 1)
	go func() {
		var tm *time.Timer
		_, err := g.In.wait(&tm, nil)
		done <- err
	}()
	t0 := time.Now()
	for time.Since(t0) < 5*idle { // the next stage waits: the packets are held for real
		select {
		case <-done:
			t.Fatal("the backstop let a waiter on while the next stage waited")
		case <-time.After(idle):
		}
	}
	busy.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wedged: no backstop")
	}
	if g.In.Resets.Load() != 1 || g.In.Held() != 0 {
		t.Fatalf("%d resets, held %d; want 1 reset, 0 held", g.In.Resets.Load(), g.In.Held())
	}
}

// A device that drops everything, each packet a different way (at once,
// later into the pool, lost), never wedges a receive loop, and the gate
// holds at most its cap plus a batch.
func TestInflightDeviceDropsAll(t *testing.T) {
	const max, batch = 16, 8
	p := &fakePool{}
	g := newGate(max, max, 5*time.Millisecond, never, never)
	g.Watch(p)
	s := newSlots(p, batch)
	deadline := time.Now().Add(20 * time.Second)
	for i := range 200 {
		if time.Now().After(deadline) {
			t.Fatalf("wedged after %d reads", i)
		}
		passed := s.read(t, g, p, []int{0, 1, 2, 3, 4, 5}) // 6, 7 dropped at once
		for j, b := range passed {
			if j%3 != 2 {
				p.PutMessageBuffer(b) // dropped inside
			} // else lost: its pool let go of it
		}
		if n := g.In.Held(); n > max+batch {
			t.Fatalf("held %d, more than %d + a batch", n, max)
		}
	}
	if g.In.Recycled.Load() == 0 {
		t.Fatal("nothing recycled")
	}
	t.Logf("%d recycled, %d resets, %d probes made %d buffers", g.In.Recycled.Load(), g.In.Resets.Load(), g.Probes.Load(), g.Fresh.Load())
}

// The address set: add, find, remove with deletion by backward shift
// among colliding entries.
func TestPtrSet(t *testing.T) {
	var s ptrSet
	// Addresses 64 bytes apart in a 4096-slot table: many share a home.
	var ps []uintptr
	for i := range 2000 {
		ps = append(ps, uintptr(0x10000+i*64*4096))
	}
	for _, p := range ps {
		if !s.add(p) {
			t.Fatalf("add %#x: not added", p)
		}
	}
	if s.add(ps[0]) {
		t.Fatal("added twice")
	}
	for i, p := range ps {
		if i%2 == 0 && !s.remove(p) {
			t.Fatalf("remove %#x: not found", p)
		}
	}
	for i, p := range ps {
		if got := s.remove(p); got != (i%2 == 1) {
			t.Fatalf("remove %#x = %v, want %v", p, got, i%2 == 1)
		}
	}
	if s.n != 0 {
		t.Fatalf("%d left", s.n)
	}
}
