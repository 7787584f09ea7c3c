package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

var probeSeq atomic.Uint32

// Ping sends one ICMP echo request from the edge's overlay address to addr
// (a proxy's overlay address, which the proxy answers itself, or an anycast
// address) and waits for the reply until ctx ends.
func (e *Edge) Ping(ctx context.Context, addr netip.Addr) (time.Duration, error) {
	la := e.Config.AddrLike(addr)
	if !la.IsValid() {
		return 0, fmt.Errorf("no overlay address of the family of %s", addr)
	}
	var c net.Conn
	var err error
	if e.Host.Net != nil {
		// A fresh socket per request, its reader waiting before the request
		// leaves: gVisor's ping socket never wakes a reader for a reply that
		// was queued before the read began, and is deaf for good after.
		c, err = e.Host.Net.DialPingAddr(la, addr)
	} else {
		c, err = kernelPing(la, addr)
	}
	if err != nil {
		return 0, err
	}
	defer c.Close()
	seq := int(probeSeq.Add(1) & 0xffff)
	var typ icmp.Type = ipv4.ICMPTypeEcho
	proto := 1
	if addr.Is6() {
		typ, proto = ipv6.ICMPTypeEchoRequest, 58
	}
	// A random tail: the answer must echo what only this request said.
	data := fmt.Appendf(nil, "pias probe %d %016x", seq, rand.Uint64())
	req, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: 0x5049, Seq: seq, Data: data}}).Marshal(nil)
	if err != nil {
		return 0, err
	}
	if d, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	reading := make(chan struct{})
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		close(reading)
		for {
			n, err := c.Read(buf)
			if err != nil {
				got <- err
				return
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil {
				continue
			}
			if echo, ok := m.Body.(*icmp.Echo); ok && echo.Seq == seq && bytes.Equal(echo.Data, data) {
				got <- nil
				return
			}
		}
	}()
	<-reading
	start := time.Now()
	if _, err := c.Write(req); err != nil {
		c.Close()
		<-got
		return 0, err
	}
	if err := <-got; err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// kernelPing opens an ICMP socket on the host's own stack: an unprivileged
// ping socket where the system allows one (Linux's ping_group_range,
// macOS), else a raw socket (root).
func kernelPing(la, addr netip.Addr) (net.Conn, error) {
	network, raw := "udp4", "ip4:icmp"
	if addr.Is6() {
		network, raw = "udp6", "ip6:ipv6-icmp"
	}
	pc, err := icmp.ListenPacket(network, la.String())
	var dst net.Addr = &net.UDPAddr{IP: addr.AsSlice()}
	if err != nil {
		var err2 error
		if pc, err2 = icmp.ListenPacket(raw, la.String()); err2 != nil {
			return nil, errors.Join(err, err2)
		}
		dst = &net.IPAddr{IP: addr.AsSlice()}
	}
	return &packetConn{PacketConn: pc, dst: dst}, nil
}

// packetConn is an icmp.PacketConn that writes to one address.
type packetConn struct {
	*icmp.PacketConn
	dst net.Addr
}

func (c *packetConn) Read(b []byte) (int, error) {
	n, _, err := c.ReadFrom(b)
	return n, err
}

func (c *packetConn) Write(b []byte) (int, error) { return c.WriteTo(b, c.dst) }

func (c *packetConn) RemoteAddr() net.Addr { return c.dst }
