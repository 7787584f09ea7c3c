package tunnel

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Forwarding joins a netstack edge to programs on the host, without root:
// a target relays connections that reach its overlay address to its service
// on the host's loopback, and a client relays a local port to a group.

// udpIdle ends a UDP relay session that has been quiet this long.
const udpIdle = 60 * time.Second

// Forwarder is a running relay; Close stops it and its sessions.
type Forwarder struct {
	closers []io.Closer
	mu      sync.Mutex
	conns   map[io.Closer]bool
	wg      sync.WaitGroup
	once    sync.Once
}

func (f *Forwarder) track(c io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		return false // closed
	}
	f.conns[c] = true
	return true
}

func (f *Forwarder) untrack(c io.Closer) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

// Close stops accepting, ends every session and waits for them.
func (f *Forwarder) Close() error {
	f.once.Do(func() {
		for _, c := range f.closers {
			c.Close()
		}
		f.mu.Lock()
		conns := f.conns
		f.conns = nil
		f.mu.Unlock()
		for c := range conns {
			c.Close()
		}
		f.wg.Wait()
	})
	return nil
}

// ForwardTCP accepts connections on ln and joins each to a connection that
// dial opens.
func ForwardTCP(ln net.Listener, dial func(context.Context) (net.Conn, error)) *Forwarder {
	f := &Forwarder{closers: []io.Closer{ln}, conns: map[io.Closer]bool{}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			if !f.track(in) {
				in.Close()
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer f.untrack(in)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				out, err := dial(ctx)
				cancel()
				if err != nil {
					return
				}
				if !f.track(out) {
					out.Close()
					return
				}
				defer f.untrack(out)
				splice(in, out)
			}()
		}
	}()
	return f
}

// splice copies both ways until both directions end, passing half-closes on.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go pipe(a, b)
	go pipe(b, a)
	<-done
	<-done
}

// ForwardUDP reads datagrams on pc and relays each sender's datagrams over
// its own socket that dial opens, sending the answers back to the sender.
func ForwardUDP(pc net.PacketConn, dial func() (net.Conn, error)) *Forwarder {
	f := &Forwarder{closers: []io.Closer{pc}, conns: map[io.Closer]bool{}}
	sessions := map[string]net.Conn{}
	var mu sync.Mutex
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			key := from.String()
			mu.Lock()
			out := sessions[key]
			mu.Unlock()
			if out == nil {
				if out, err = dial(); err != nil || !f.track(out) {
					continue
				}
				mu.Lock()
				sessions[key] = out
				mu.Unlock()
				f.wg.Add(1)
				go func() {
					defer f.wg.Done()
					defer func() {
						mu.Lock()
						delete(sessions, key)
						mu.Unlock()
						f.untrack(out)
					}()
					reply := make([]byte, 65536)
					for {
						out.SetReadDeadline(time.Now().Add(udpIdle))
						m, err := out.Read(reply)
						if err != nil {
							return
						}
						pc.WriteTo(reply[:m], from)
					}
				}()
			}
			out.Write(buf[:n])
		}
	}()
	return f
}

// loopbackOf is the host loopback address of a's family.
func loopbackOf(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.IPv6Loopback()
	}
	return netip.MustParseAddr("127.0.0.1")
}

// ServeFromHost relays a target's service: what reaches the netstack at `at`
// goes to the same port on the host's loopback, where the real service runs.
func (h *Host) ServeFromHost(at netip.AddrPort, udp bool) (*Forwarder, error) {
	to := netip.AddrPortFrom(loopbackOf(at.Addr()), at.Port())
	if udp {
		pc, err := h.Net.ListenUDPAddrPort(at)
		if err != nil {
			return nil, err
		}
		return ForwardUDP(pc, func() (net.Conn, error) { return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to)) }), nil
	}
	ln, err := h.Net.ListenTCPAddrPort(at)
	if err != nil {
		return nil, err
	}
	return ForwardTCP(ln, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", to.String())
	}), nil
}

// ForwardToOverlay relays a host port to an overlay or anycast address: a
// program on the host connects to listen and reaches `to` from the
// netstack's address `from`.
func (h *Host) ForwardToOverlay(listen netip.AddrPort, to netip.AddrPort, from netip.Addr, udp bool) (*Forwarder, error) {
	if udp {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
		if err != nil {
			return nil, err
		}
		return ForwardUDP(pc, func() (net.Conn, error) {
			return h.Net.DialUDPAddrPort(netip.AddrPortFrom(from, 0), to)
		}), nil
	}
	ln, err := net.Listen("tcp", listen.String())
	if err != nil {
		return nil, err
	}
	return ForwardTCP(ln, func(ctx context.Context) (net.Conn, error) {
		return h.Net.DialContextTCPAddrPort(ctx, to)
	}), nil
}
