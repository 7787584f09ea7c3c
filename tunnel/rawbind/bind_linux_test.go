//go:build linux

package rawbind

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// packet is datagram seq of a test: size bytes, seq and size up front, the
// rest a pattern of both, so that a datagram cut short, merged or mixed
// with another is caught.
func packet(seq, size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(seq*7 + i)
	}
	if size >= 8 {
		binary.BigEndian.PutUint32(p, uint32(seq))
		binary.BigEndian.PutUint32(p[4:], uint32(size))
	}
	return p
}

// reader drains a receive function into a channel of what it got.
type got struct {
	pkt []byte
	ep  conn.Endpoint
}

type reader struct {
	ch    chan got
	calls chan int // packets per call that returned any
	done  chan error
}

func read(fn conn.ReceiveFunc) *reader {
	r := &reader{ch: make(chan got, 4096), calls: make(chan int, 4096), done: make(chan error, 1)}
	go func() {
		bufs := make([][]byte, conn.IdealBatchSize)
		for i := range bufs {
			bufs[i] = make([]byte, device.MaxMessageSize)
		}
		sizes := make([]int, len(bufs))
		eps := make([]conn.Endpoint, len(bufs))
		for {
			n, err := fn(bufs, sizes, eps)
			if err != nil {
				r.done <- err
				return
			}
			k := 0
			for i := range n {
				if sizes[i] == 0 {
					continue
				}
				k++
				r.ch <- got{bytes.Clone(bufs[i][:sizes[i]]), eps[i]}
			}
			if k > 0 {
				r.calls <- k
			}
		}
	}()
	return r
}

// expect waits until want (sequence numbers to packets) all arrived,
// exactly once and whole, and returns what they came with.
func (r *reader) expect(t *testing.T, want map[int][]byte) []got {
	t.Helper()
	var all []got
	deadline := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case g := <-r.ch:
			seq := int(binary.BigEndian.Uint32(g.pkt))
			w, ok := want[seq]
			if !ok || !bytes.Equal(g.pkt, w) {
				t.Fatalf("a datagram that was not sent, was sent before, or is not whole (%d bytes, seq %d)", len(g.pkt), seq)
			}
			delete(want, seq)
			all = append(all, g)
		case <-deadline:
			t.Fatalf("%d datagrams never arrived", len(want))
		}
	}
	return all
}

func open(t *testing.T, b conn.Bind) ([]conn.ReceiveFunc, uint16) {
	t.Helper()
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return fns, port
}

func endpoint(t *testing.T, b conn.Bind, s string) conn.Endpoint {
	t.Helper()
	ep, err := b.ParseEndpoint(s)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// sizes of one Send: runs of full datagrams, short ones among them, a
// run longer than one GSO message holds, and the batch's whole length.
var batches = [][]int{
	{1452},
	{1452, 1452, 1452, 100},
	{1452, 1452, 100, 1452, 1452, 1452, 30, 30, 30},
	func() []int {
		s := make([]int, 128)
		for i := range s {
			s[i] = 1452
		}
		return s
	}(),
	func() []int {
		s := make([]int, 128)
		for i := range s {
			s[i] = 200 + i%3
		}
		return s
	}(),
	{60000, 60000, 10},
}

// sendBatches sends every batch to ep and returns what was sent, by seq.
func sendBatches(t *testing.T, b conn.Bind, ep conn.Endpoint, seq *int) map[int][]byte {
	t.Helper()
	want := map[int][]byte{}
	for _, sizes := range batches {
		bufs := make([][]byte, len(sizes))
		for i, n := range sizes {
			bufs[i] = packet(*seq, n)
			want[*seq] = bufs[i]
			*seq++
		}
		if err := b.Send(bufs, ep); err != nil {
			t.Fatalf("Send of %d datagrams: %v", len(bufs), err)
		}
	}
	return want
}

// TestLoopback sends batches of every shape from one Bind to another and
// checks each datagram arrives once, whole, with the sender's address and
// the local address it was sent to; and that GSO and GRO carried them
// where the kernel has both (many datagrams from one read).
func TestLoopback(t *testing.T) {
	for _, family := range []struct{ name, lo string }{{"ipv4", "127.0.0.1"}, {"ipv6", "::1"}} {
		t.Run(family.name, func(t *testing.T) {
			a, b := New(), New()
			_, pa := open(t, a)
			fns, pb := open(t, b)
			if family.name == "ipv6" && b.(*Bind).v6.Load() == nil {
				t.Skip("no IPv6")
			}
			r := read(fns[map[string]int{"ipv4": 0, "ipv6": len(fns) - 1}[family.name]])
			seq := 0
			want := sendBatches(t, a, endpoint(t, a, net.JoinHostPort(family.lo, fmt.Sprint(pb))), &seq)
			for _, g := range r.expect(t, want) {
				if g.ep.DstToString() != net.JoinHostPort(family.lo, fmt.Sprint(pa)) {
					t.Fatalf("from %s, want %s port %d", g.ep.DstToString(), family.lo, pa)
				}
				if g.ep.SrcIP() != netip.MustParseAddr(family.lo) {
					t.Fatalf("sent to %v, want %s", g.ep.SrcIP(), family.lo)
				}
			}
			s, sa := b.(*Bind).v4.Load(), a.(*Bind).v4.Load()
			if family.name == "ipv6" {
				s, sa = b.(*Bind).v6.Load(), a.(*Bind).v6.Load()
			}
			most := 0
			for len(r.calls) > 0 {
				most = max(most, <-r.calls)
			}
			t.Logf("GRO %v, GSO %v: at most %d datagrams from one read", s.gro, sa.gso.Load(), most)
			if s.gro && sa.gso.Load() {
				if most < 2 {
					t.Fatalf("with GSO and GRO, one read never gave more than %d datagrams", most)
				}
			}
		})
	}
}

// TestWithoutOffloads covers the paths a kernel without GSO (or a device
// that refused it) and without GRO takes: a datagram per message, read in
// place.
func TestWithoutOffloads(t *testing.T) {
	a, b := New(), New()
	open(t, a)
	fns, pb := open(t, b)
	a.(*Bind).v4.Load().gso.Store(false)
	s := b.(*Bind).v4.Load()
	if err := s.rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0) }); err != nil {
		t.Fatal(err)
	}
	s.gro = false
	r := read(fns[0])
	seq := 0
	r.expect(t, sendBatches(t, a, endpoint(t, a, fmt.Sprintf("127.0.0.1:%d", pb)), &seq))
}

// TestStdNetBind: rawbind and wireguard-go's StdNetBind talk to each other
// both ways.
func TestStdNetBind(t *testing.T) {
	raw, std := New(), conn.NewStdNetBind()
	rawFns, pr := open(t, raw)
	stdFns, ps := open(t, std)
	seq := 0
	toStd := sendBatches(t, raw, endpoint(t, raw, fmt.Sprintf("127.0.0.1:%d", ps)), &seq)
	read(stdFns[0]).expect(t, toStd)
	toRaw := sendBatches(t, std, endpoint(t, std, fmt.Sprintf("127.0.0.1:%d", pr)), &seq)
	read(rawFns[0]).expect(t, toRaw)
}

// TestClose: a receive function waiting for a datagram returns
// net.ErrClosed once the Bind closes, and Send then fails.
func TestClose(t *testing.T) {
	b := New()
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(fns))
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bufs := [][]byte{make([]byte, device.MaxMessageSize)}
			_, err := fn(bufs, make([]int, 1), make([]conn.Endpoint, 1))
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // let them wait in the netpoller (a late start is tested too)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("receive after Close: %v, want net.ErrClosed", err)
		}
	}
	if err := b.Send([][]byte{{1}}, endpoint(t, b, fmt.Sprintf("127.0.0.1:%d", port))); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send after Close: %v, want net.ErrClosed", err)
	}
	if _, _, err := b.Open(port); err != nil {
		t.Fatalf("open again: %v", err)
	}
	b.Close()
}

// TestSplit: a GRO datagram of any shape the kernel might hand over is
// split into slots without overwriting one not yet split; what does not
// fit is dropped, never mixed.
func TestSplit(t *testing.T) {
	for _, c := range []struct {
		name               string
		slots, own, out    int
		size, seg          int
		wantOut, wantFirst int
	}{
		{"one packet", 128, 126, 0, 1452, 0, 1, 0},
		{"segment larger than the datagram", 128, 126, 0, 1000, 1452, 1, 0},
		{"64 segments", 128, 126, 0, 64 * 100, 100, 64, 0},
		{"the second datagram fills to its own slot", 128, 127, 64, 64 * 100, 100, 128, 64},
		{"more segments than slots before it", 4, 3, 0, 10 * 100, 100, 4, 0},
		{"short last segment", 128, 127, 0, 250, 100, 3, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			bufs := make([][]byte, c.slots)
			for i := range bufs {
				bufs[i] = make([]byte, device.MaxMessageSize)
			}
			dgram := make([]byte, c.size)
			for i := range dgram {
				dgram[i] = byte(i / max(c.seg, 1))
			}
			copy(bufs[c.own], dgram)
			sizes := make([]int, c.slots)
			eps := make([]conn.Endpoint, c.slots)
			out := split(bufs, sizes, eps, c.out, c.own, c.size, c.seg, &Endpoint{})
			if out != c.wantOut {
				t.Fatalf("next slot %d, want %d", out, c.wantOut)
			}
			seg := c.seg
			if seg <= 0 || seg > c.size {
				seg = c.size
			}
			for i, off := c.out, 0; i < out; i, off = i+1, off+seg {
				w := dgram[off:min(off+seg, c.size)]
				if !bytes.Equal(bufs[i][:sizes[i]], w) || eps[i] == nil {
					t.Fatalf("slot %d holds %d bytes that are not segment %d", i, sizes[i], (off / seg))
				}
			}
		})
	}
}

// TestStaleSource: an endpoint whose sticky source is not (or no longer)
// an address of this host still gets its datagrams, from an address the
// kernel picks, and forgets that source.
func TestStaleSource(t *testing.T) {
	a, b := New(), New()
	open(t, a)
	fns, pb := open(t, b)
	ep := &Endpoint{dst: netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", pb)), src: netip.MustParseAddr("192.0.2.1")}
	r := read(fns[0])
	seq := 0
	for _, g := range r.expect(t, sendBatches(t, a, ep, &seq)) {
		if g.ep.SrcIP() != netip.MustParseAddr("127.0.0.1") {
			t.Fatalf("arrived at %v", g.ep.SrcIP())
		}
	}
	if ep.SrcIP().IsValid() {
		t.Fatalf("the endpoint still leaves from %v", ep.SrcIP())
	}
}

// TestParseEndpoint: IPv4-mapped addresses go out over IPv4, and an IPv6
// zone is an interface's name or index, kept for link-local sends.
func TestParseEndpoint(t *testing.T) {
	b := New()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo")
	}
	for _, c := range []struct{ in, dst string }{
		{"[::ffff:127.0.0.1]:51820", "127.0.0.1:51820"},
		{"[fe80::1%lo]:51820", fmt.Sprintf("[fe80::1%%%d]:51820", lo.Index)},
		{fmt.Sprintf("[fe80::1%%%d]:51820", lo.Index), fmt.Sprintf("[fe80::1%%%d]:51820", lo.Index)},
	} {
		ep, err := b.ParseEndpoint(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if ep.DstToString() != c.dst {
			t.Fatalf("%s: %s, want %s", c.in, ep.DstToString(), c.dst)
		}
	}
	for _, bad := range []string{"[fe80::1%nosuchif0]:51820", "1.2.3.4", "host:80"} {
		if _, err := b.ParseEndpoint(bad); err == nil {
			t.Fatalf("%s parsed", bad)
		}
	}
}
