package tunnel

import (
	"bytes"
	"fmt"
	"net/netip"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
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
}

// NewSideBind wraps inner (nil: conn.NewDefaultBind()) and diverts the
// datagrams that start with magic.
func NewSideBind(inner conn.Bind, magic string) *SideBind {
	if inner == nil {
		inner = conn.NewDefaultBind()
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
	out := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		out[i] = b.wrap(fn)
	}
	return out, p, nil
}

func (b *SideBind) wrap(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
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
