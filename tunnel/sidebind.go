package tunnel

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/pias-net/pias/tunnel/rawbind"
)

// SideBind wraps a conn.Bind and takes out of what it receives the
// datagrams that start with a magic prefix: pias's own messages outside the
// tunnels (a proxy admitting a newcomer), which share WireGuard's socket so
// that a proxy has one UDP port. WireGuard never sees them; Send sends them
// from the same socket.
type SideBind struct {
	conn.Bind
	magic  []byte
	handle atomic.Pointer[func(from netip.AddrPort, pkt []byte)]

	// gate, when set (NewGate), caps what the device holds; the bind
	// counts at its ends.
	gate    *Gate
	sending atomic.Int32 // Sends under way: the out direction moves
	mu      sync.Mutex
	closed  chan struct{} // closed by Close: wakes receives waiting at the gate
}

// NewSideBind wraps inner (nil: rawbind.New()) and diverts the
// datagrams that start with magic.
func NewSideBind(inner conn.Bind, magic string) *SideBind {
	if inner == nil {
		inner = rawbind.New()
	}
	return &SideBind{Bind: inner, magic: []byte(magic)}
}

// SetHandler sets who gets the diverted datagrams (nil drops them). It is
// called on WireGuard's receive goroutines and must not keep pkt.
func (b *SideBind) SetHandler(h func(from netip.AddrPort, pkt []byte)) {
	if h == nil {
		b.handle.Store(nil)
		return
	}
	b.handle.Store(&h)
}

// Open opens the inner bind and wraps its receive functions.
func (b *SideBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, p, err := b.Bind.Open(port)
	if err != nil {
		return nil, 0, err
	}
	closed := make(chan struct{})
	b.mu.Lock()
	b.closed = closed
	b.mu.Unlock()
	out := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		out[i] = b.wrap(fn, closed)
	}
	return out, p, nil
}

// Close closes the inner bind and wakes the receives waiting at the gate.
func (b *SideBind) Close() error {
	b.mu.Lock()
	if b.closed != nil {
		close(b.closed)
		b.closed = nil
	}
	b.mu.Unlock()
	return b.Bind.Close()
}

// Send sends bufs; with a gate, the packets among them leave the device.
func (b *SideBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if b.gate == nil {
		return b.Bind.Send(bufs, ep)
	}
	b.sending.Add(1)
	err := b.Bind.Send(bufs, ep)
	b.sending.Add(-1)
	b.gate.release(b.gate.Out, bufs)
	return err
}

func (b *SideBind) wrap(fn conn.ReceiveFunc, closed <-chan struct{}) conn.ReceiveFunc {
	var timer *time.Timer // this receive function's, for the gate
	var r reader
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		if b.gate != nil {
			b.gate.recycle(&r, b.gate.In, bufs)
			// Then a whole batch: with GRO one datagram read holds up
			// to 64 packets (rawbind, StdNetBind), so the read cannot
			// be smaller.
			if _, err := b.gate.In.wait(&timer, closed); err != nil {
				return 0, net.ErrClosed
			}
		}
		n, err := fn(bufs, sizes, eps)
		if b.gate != nil && n > 0 {
			b.gate.take(&r, b.gate.In, bufs, sizes, n)
		}
		for i := 0; i < n; i++ {
			if sizes[i] < len(b.magic) || !bytes.Equal(bufs[i][:len(b.magic)], b.magic) {
				continue
			}
			if h := b.handle.Load(); h != nil && eps[i] != nil {
				if from, err := netip.ParseAddrPort(eps[i].DstToString()); err == nil {
					(*h)(from, bufs[i][:sizes[i]])
				}
			}
			// WireGuard skips a datagram too short to be one of its own
			// (it indexes its buffers by position, so they cannot move).
			sizes[i] = 0
		}
		return n, err
	}
}

// SendTo sends pkt to the UDP address to from the bind's socket.
func (b *SideBind) SendTo(to netip.AddrPort, pkt []byte) error {
	ep, err := b.Bind.ParseEndpoint(to.String())
	if err != nil {
		return fmt.Errorf("underlay endpoint %v: %w", to, err)
	}
	return b.Bind.Send([][]byte{pkt}, ep)
}
