//go:build linux

package rawbind

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

const (
	// maxSegments is the most datagrams one GSO send carries and one GRO
	// receive holds (the kernel's UDP_MAX_SEGMENTS on older kernels, and
	// UDP_GRO_CNT_MAX).
	maxSegments = 64
	// maxPayload bounds what one GSO send carries: a UDP payload in one
	// IPv4 packet.
	maxPayload = 65535 - 20 - 8
	// sockBuf is each socket's send and receive buffer, as StdNetBind's.
	sockBuf = 7 << 20
	// oobLen has room for a packet-info and a GRO or GSO control message.
	oobLen = 128
)

// mmsghdr is the kernel's struct mmsghdr; Go pads it as C does.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// Bind is the Linux conn.Bind; see the package comment.
type Bind struct {
	mu     sync.Mutex // serializes Open, Close and SetMark
	v4, v6 atomic.Pointer[socket]
}

// New returns a Bind that is not open yet.
func New() conn.Bind { return &Bind{} }

type socket struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	v6   bool
	gro  bool        // UDP_GRO is on: a read may hold many datagrams
	gso  atomic.Bool // UDP_SEGMENT works; off after the device refused it (EIO)
	outs sync.Pool   // *sender, one per Send under way
}

// Open opens an IPv4 and an IPv6 socket on port (0: one free for both).
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.v4.Load() != nil || b.v6.Load() != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	for tries := 0; ; tries++ {
		v4, p, err := listen("udp4", int(port))
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			return nil, 0, err
		}
		if v4 == nil {
			p = int(port)
		}
		v6, p6, err := listen("udp6", p)
		if port == 0 && errors.Is(err, syscall.EADDRINUSE) && tries < 100 {
			v4.close()
			continue
		}
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			v4.close()
			return nil, 0, err
		}
		if v6 != nil {
			p = p6
		}
		var fns []conn.ReceiveFunc
		if v4 != nil {
			fns = append(fns, (&receiver{s: v4}).receiveIPv4)
		}
		if v6 != nil {
			fns = append(fns, (&receiver{s: v6}).receiveIPv6)
		}
		if len(fns) == 0 {
			return nil, 0, syscall.EAFNOSUPPORT
		}
		b.v4.Store(v4)
		b.v6.Store(v6)
		return fns, uint16(p), nil
	}
}

func listen(network string, port int) (*socket, int, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			f := int(fd)
			// Larger buffers are best effort: FORCE needs CAP_NET_ADMIN,
			// and without it the kernel clamps to net.core.*mem_max.
			if unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf) != nil {
				_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUF, sockBuf)
			}
			if unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf) != nil {
				_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_SNDBUF, sockBuf)
			}
			if network == "udp4" {
				serr = unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			} else {
				serr = unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, ":"+strconv.Itoa(port))
	if err != nil {
		return nil, 0, err
	}
	c := pc.(*net.UDPConn)
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	s := &socket{conn: c, rc: rc, v6: network == "udp6"}
	s.outs.New = func() any { return new(sender) }
	if err := rc.Control(func(fd uintptr) {
		_, gsoErr := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		s.gso.Store(gsoErr == nil)
		s.gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	}); err != nil {
		c.Close()
		return nil, 0, err
	}
	return s, c.LocalAddr().(*net.UDPAddr).Port, nil
}

func (s *socket) close() error {
	if s == nil {
		return nil
	}
	return s.conn.Close()
}

// Close closes both sockets; the receive functions then return
// net.ErrClosed.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var err error
	for _, p := range []*atomic.Pointer[socket]{&b.v4, &b.v6} {
		if cerr := p.Swap(nil).close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// SetMark sets SO_MARK on both sockets.
func (b *Bind) SetMark(mark uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range []*socket{b.v4.Load(), b.v6.Load()} {
		if s == nil {
			continue
		}
		var serr error
		if err := s.rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
	}
	return nil
}

// BatchSize is wireguard-go's ideal batch.
func (b *Bind) BatchSize() int { return conn.IdealBatchSize }

// ParseEndpoint parses "ip:port"; an IPv6 zone is an interface's name or
// index, looked up once here.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	e := &Endpoint{dst: netip.AddrPortFrom(ap.Addr().WithZone("").Unmap(), ap.Port())}
	if z := ap.Addr().Zone(); z != "" {
		if n, err := strconv.ParseUint(z, 10, 32); err == nil {
			e.scope = uint32(n)
		} else if ifi, err := net.InterfaceByName(z); err == nil {
			e.scope = uint32(ifi.Index)
		} else {
			return nil, fmt.Errorf("endpoint %q: no interface %q", s, z)
		}
	}
	return e, nil
}

// Endpoint is a peer's address (and, link-local, the interface it is
// on), and the local address and interface its last datagram came in on
// (the source a reply leaves from).
type Endpoint struct {
	dst     netip.AddrPort // no zone: scope holds it
	scope   uint32         // IPv6 scope (interface index), 0 for none
	src     netip.Addr     // invalid: the kernel picks
	ifindex int32
	cleared atomic.Bool // ClearSrc: src is no longer used
}

func (e *Endpoint) source() (netip.Addr, int32) {
	if e.cleared.Load() {
		return netip.Addr{}, 0
	}
	return e.src, e.ifindex
}

func (e *Endpoint) ClearSrc()         { e.cleared.Store(true) }
func (e *Endpoint) SrcIP() netip.Addr { a, _ := e.source(); return a }
func (e *Endpoint) DstIP() netip.Addr { return e.dst.Addr() }
func (e *Endpoint) DstToString() string {
	if e.scope != 0 {
		return netip.AddrPortFrom(e.dst.Addr().WithZone(strconv.FormatUint(uint64(e.scope), 10)), e.dst.Port()).String()
	}
	return e.dst.String()
}
func (e *Endpoint) DstToBytes() []byte { b, _ := e.dst.MarshalBinary(); return b }
func (e *Endpoint) SrcToString() string {
	if a := e.SrcIP(); a.IsValid() {
		return a.String()
	}
	return ""
}

// receiver is one receive function's state; wireguard-go calls each from
// one goroutine.
type receiver struct {
	s     *socket
	hdrs  [conn.IdealBatchSize]mmsghdr
	iovs  [conn.IdealBatchSize]unix.Iovec
	names [conn.IdealBatchSize]unix.RawSockaddrInet6
	oobs  [conn.IdealBatchSize][oobLen]byte
	// Recent endpoints, reused while the same peer writes to the same
	// local address, so that a packet costs no allocation.
	recent [8]*Endpoint
	next   int
}

// receiveIPv4 and receiveIPv6 are the receive functions, named so that
// wireguard-go's logs tell them apart.
func (r *receiver) receiveIPv4(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return r.receive(bufs, sizes, eps)
}

func (r *receiver) receiveIPv6(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return r.receive(bufs, sizes, eps)
}

func (r *receiver) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	n := min(len(bufs), len(r.hdrs))
	if n == 0 {
		return 0, nil
	}
	// With GRO a datagram read may hold up to maxSegments packets, which
	// are split into bufs from the first: so read into the last few
	// slots only, few enough that splitting never overwrites a datagram
	// not yet split (see split).
	at, k := 0, n
	if r.s.gro {
		k = max(1, n/maxSegments)
		at = n - k
	}
	for i := range k {
		buf := bufs[at+i]
		r.iovs[i].Base = unsafe.SliceData(buf)
		r.iovs[i].SetLen(len(buf))
		h := &r.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Control = &r.oobs[i][0]
		h.SetControllen(oobLen)
		h.Flags = 0
		r.hdrs[i].n = 0
	}
	var got int
	var errno syscall.Errno
	err := r.s.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(k), unix.MSG_DONTWAIT, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // nothing to read: wait on the netpoller
			}
			got, errno = int(m), e
			return true
		}
	})
	for i := range k {
		r.iovs[i].Base = nil // keep no caller's buffer alive
	}
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			return 0, net.ErrClosed
		}
		return 0, err
	}
	if errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", errno)
	}
	if !r.s.gro {
		// Each datagram was read in place (at is 0), and one that is
		// skipped keeps its slot at size 0: wireguard-go finds its
		// packets by slot, in buffers of its own.
		for i := range got {
			sizes[i], eps[i], _ = r.datagram(i)
		}
		return got, nil
	}
	out := 0
	for i := range got {
		if size, ep, seg := r.datagram(i); size > 0 {
			out = split(bufs, sizes, eps, out, at+i, size, seg, ep)
		}
	}
	return out, nil
}

// datagram is read i's size (0: skip it), its endpoint, and its GRO
// segment size.
func (r *receiver) datagram(i int) (size int, ep conn.Endpoint, seg int) {
	h := &r.hdrs[i]
	if h.n == 0 || h.hdr.Flags&unix.MSG_TRUNC != 0 {
		return 0, nil, 0
	}
	dst, scope, ok := sockaddr(&r.names[i])
	if !ok {
		return 0, nil, 0
	}
	src, ifindex, seg := control(r.oobs[i][:h.hdr.Controllen])
	return int(h.n), r.endpoint(dst, scope, src, ifindex), seg
}

// split copies the packets of the datagram read into bufs[own] (size
// bytes, seg each, the last maybe shorter; seg 0: one packet) to bufs[out:],
// and returns the next free slot. Its own slot is the last it writes, so a
// datagram with more packets than there are slots up to its own (more than
// maxSegments) loses the rest; the datagrams after it lie in later slots.
func split(bufs [][]byte, sizes []int, eps []conn.Endpoint, out, own, size, seg int, ep conn.Endpoint) int {
	if seg <= 0 || seg > size {
		seg = size
	}
	src := bufs[own][:size]
	for off := 0; off < size && out <= own; off += seg {
		sizes[out] = copy(bufs[out], src[off:min(off+seg, size)])
		eps[out] = ep
		out++
	}
	return out
}

// endpoint is the Endpoint of a datagram from dst to local address src.
func (r *receiver) endpoint(dst netip.AddrPort, scope uint32, src netip.Addr, ifindex int32) *Endpoint {
	for _, e := range r.recent {
		if e != nil && e.dst == dst && e.scope == scope && e.src == src && e.ifindex == ifindex && !e.cleared.Load() {
			return e
		}
	}
	e := &Endpoint{dst: dst, scope: scope, src: src, ifindex: ifindex}
	r.recent[r.next] = e
	r.next = (r.next + 1) % len(r.recent)
	return e
}

// sockaddr reads the kernel's sockaddr_in or sockaddr_in6, and its scope.
func sockaddr(sa *unix.RawSockaddrInet6) (netip.AddrPort, uint32, bool) {
	port := func(p *uint16) uint16 { return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(p))[:]) }
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(&sa4.Port)), 0, true
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port(&sa.Port)), sa.Scope_id, true
	}
	return netip.AddrPort{}, 0, false
}

// control reads the local address and interface a datagram came in on
// (IP_PKTINFO, IPV6_PKTINFO) and its GRO segment size (UDP_GRO).
func control(oob []byte) (src netip.Addr, ifindex int32, seg int) {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return
		}
		oob = rest
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			src, ifindex = netip.AddrFrom4(info.Spec_dst), info.Ifindex
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			src, ifindex = netip.AddrFrom16(info.Addr), int32(info.Ifindex)
		case h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			seg = int(binary.NativeEndian.Uint32(data)) // the kernel puts an int
		}
	}
	return
}

// sender is one Send's messages.
type sender struct {
	hdrs   [conn.IdealBatchSize]mmsghdr
	iovs   [conn.IdealBatchSize]unix.Iovec
	first  [conn.IdealBatchSize]int // the first of bufs in each message
	oobs   [conn.IdealBatchSize][oobLen]byte
	info   [oobLen]byte // the packet-info message, the same for every message
	name   unix.RawSockaddrInet6
	namlen uint32
}

// Send sends bufs to ep: runs of datagrams of one size go out as one GSO
// message each, from the source address ep last came in on.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	v4, v6 := b.v4.Load(), b.v6.Load()
	s := v4
	if !e.dst.Addr().Is4() {
		s = v6
	}
	if s == nil {
		if v4 == nil && v6 == nil {
			return net.ErrClosed
		}
		return syscall.EAFNOSUPPORT // open, but not for this family
	}
	if len(bufs) > conn.IdealBatchSize {
		return errors.New("rawbind: more buffers than BatchSize")
	}
	return s.send(bufs, e, s.gso.Load(), true)
}

func (s *socket) send(bufs [][]byte, e *Endpoint, gso, sticky bool) error {
	if len(bufs) == 0 {
		return nil
	}
	o := s.outs.Get().(*sender)
	defer s.outs.Put(o)
	if !o.setName(e.dst, e.scope, s.v6) {
		return syscall.EAFNOSUPPORT
	}
	defer o.drop()
	src, ifindex := e.source()
	if !sticky {
		src = netip.Addr{}
	}
	info := appendPktinfo(o.info[:0], src, ifindex)
	msgs := 0
	for i := 0; i < len(bufs); msgs++ {
		start, seg := i, len(bufs[i])
		total := seg
		for i++; gso && i < len(bufs) && i-start < maxSegments && len(bufs[i-1]) == seg && len(bufs[i]) <= seg && total+len(bufs[i]) <= maxPayload; i++ {
			total += len(bufs[i])
		}
		for j := start; j < i; j++ {
			o.iovs[j].Base = unsafe.SliceData(bufs[j])
			o.iovs[j].SetLen(len(bufs[j]))
		}
		h := &o.hdrs[msgs].hdr
		h.Name = (*byte)(unsafe.Pointer(&o.name))
		h.Namelen = o.namlen
		h.Iov = &o.iovs[start]
		h.SetIovlen(i - start)
		oob := append(o.oobs[msgs][:0], info...)
		if i-start > 1 {
			oob = appendSegment(oob, seg)
		}
		h.Control = nil
		if len(oob) > 0 {
			h.Control = &o.oobs[msgs][0]
		}
		h.SetControllen(len(oob))
		h.Flags = 0
		o.first[msgs] = start
	}
	for sent := 0; sent < msgs; {
		var m int
		var errno syscall.Errno
		err := s.rc.Write(func(fd uintptr) bool {
			for {
				r, _, en := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&o.hdrs[sent])), uintptr(msgs-sent), unix.MSG_DONTWAIT, 0, 0)
				switch en {
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false // the socket buffer is full: wait on the netpoller
				}
				m, errno = int(r), en
				return true
			}
		})
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return net.ErrClosed
			}
			return err
		}
		switch {
		case errno == 0 && m > 0:
			sent += m
			continue
		case errno == 0:
			return os.NewSyscallError("sendmmsg", unix.EIO) // sent nothing, said nothing
		case errno == unix.EIO && gso:
			// The device cannot checksum for UDP_SEGMENT: no GSO on
			// this socket from now on, and these go out one by one.
			s.gso.Store(false)
			return s.send(bufs[o.first[sent]:], e, false, sticky)
		case errno == unix.EINVAL && gso:
			// A segment longer than the path allows: these one by one.
			return s.send(bufs[o.first[sent]:], e, false, sticky)
		case src.IsValid() && staleSource(errno):
			// The source address, or the way out through its
			// interface, is gone: let the kernel pick from now on.
			e.ClearSrc()
			return s.send(bufs[o.first[sent]:], e, gso, false)
		}
		return os.NewSyscallError("sendmmsg", errno)
	}
	return nil
}

// staleSource is whether a send may have failed for its sticky source
// (wireguard-go's route listener, which clears those on a route change,
// runs only for its own StdNetBind).
func staleSource(errno syscall.Errno) bool {
	switch errno {
	case unix.EINVAL, unix.ENETUNREACH, unix.EHOSTUNREACH, unix.ENODEV, unix.EADDRNOTAVAIL:
		return true
	}
	return false
}

// drop forgets the caller's buffers, so that a pooled sender keeps none
// alive.
func (o *sender) drop() {
	for i := range o.iovs {
		if o.iovs[i].Base == nil {
			break
		}
		o.iovs[i].Base = nil
	}
}

// setName writes dst as the socket's kind of sockaddr.
func (o *sender) setName(dst netip.AddrPort, scope uint32, v6 bool) bool {
	a := dst.Addr()
	if v6 == a.Is4() {
		return false
	}
	o.name = unix.RawSockaddrInet6{}
	p := (*[2]byte)(unsafe.Pointer(&o.name.Port))
	binary.BigEndian.PutUint16(p[:], dst.Port())
	if !v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&o.name))
		sa4.Family = unix.AF_INET
		sa4.Addr = a.As4()
		o.namlen = unix.SizeofSockaddrInet4
		return true
	}
	o.name.Family = unix.AF_INET6
	o.name.Addr = a.As16()
	o.name.Scope_id = scope
	o.namlen = unix.SizeofSockaddrInet6
	return true
}

// appendPktinfo adds the source address a datagram is to leave from.
func appendPktinfo(oob []byte, src netip.Addr, ifindex int32) []byte {
	if !src.IsValid() {
		return oob
	}
	if src.Is4() {
		info := unix.Inet4Pktinfo{Ifindex: ifindex, Spec_dst: src.As4()}
		return appendCmsg(oob, unix.IPPROTO_IP, unix.IP_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&info)), unix.SizeofInet4Pktinfo))
	}
	info := unix.Inet6Pktinfo{Addr: src.As16(), Ifindex: uint32(ifindex)}
	return appendCmsg(oob, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&info)), unix.SizeofInet6Pktinfo))
}

// appendSegment adds UDP_SEGMENT: the kernel cuts the message into
// datagrams of seg bytes.
func appendSegment(oob []byte, seg int) []byte {
	var v [2]byte
	binary.NativeEndian.PutUint16(v[:], uint16(seg))
	return appendCmsg(oob, unix.IPPROTO_UDP, unix.UDP_SEGMENT, v[:])
}

func appendCmsg(oob []byte, level, typ int32, data []byte) []byte {
	start := len(oob)
	oob = oob[:start+unix.CmsgSpace(len(data))]
	clear(oob[start:])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[start]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(oob[start+unix.CmsgLen(0):], data)
	return oob
}
