package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

func TestCheckTUNName(t *testing.T) {
	for _, tc := range []struct {
		goos, name string
		ok         bool
	}{
		{"linux", "pias-t1", true},
		{"linux", "wg0", true},
		{"linux", "A_b.c-9", true},
		{"linux", "abcdefghijklmno", true},
		{"linux", "abcdefghijklmnop", false},
		{"linux", "", false},
		{"linux", ".", false},
		{"linux", "..", false},
		{"linux", "a/b", false},
		{"linux", "a b", false},
		{"linux", "wgé", false},
		{"linux", "utun", true},
		{"darwin", "utun", true},
		{"darwin", "utun0", true},
		{"darwin", "utun12", true},
		{"darwin", "utun012", false},
		{"darwin", "utunx", false},
		{"darwin", "utun-1", false},
		{"darwin", "pias-t1", false},
		{"darwin", "tun0", false},
	} {
		err := checkTUNName(tc.goos, tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("checkTUNName(%s, %q) = %v, want ok=%v", tc.goos, tc.name, err, tc.ok)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("error is not one line: %q", err)
		}
	}
	// UAPI names have no macOS rule.
	if err := CheckInterfaceName("pias-p1"); err != nil {
		t.Error(err)
	}
}

func TestNewKernelTUNBadArgs(t *testing.T) {
	a := []netip.Addr{netip.MustParseAddr("100.64.1.1")}
	for _, tc := range []struct {
		driver, name string
		addrs        []netip.Addr
		routes       []netip.Prefix
		mtu          int
		msg          string
	}{
		{"wintun", "wg0", a, nil, 1420, `driver "wintun"`},
		{"tun", "bad/name", a, nil, 1420, "interface name"},
		{"tun", "wg0", nil, nil, 1420, "no address"},
		{"water", "wg0", a, nil, 100, "MTU 100"},
		{"tun", "wg0", []netip.Addr{{}}, nil, 1420, "invalid address"},
		{"tun", "wg0", a, []netip.Prefix{{}}, 1420, "invalid route"},
	} {
		h, err := NewKernelTUN(tc.driver, tc.name, tc.addrs, tc.routes, tc.mtu)
		if err == nil {
			h.Close()
			t.Errorf("%+v: no error", tc)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: %v", tc, err)
		}
	}
}

func TestBSDSteps(t *testing.T) {
	steps := bsdSteps("utun7",
		[]netip.Addr{netip.MustParseAddr("100.64.1.1"), netip.MustParseAddr("fd64::1:1")},
		[]netip.Prefix{netip.MustParsePrefix("100.65.0.0/16"), netip.MustParsePrefix("fd65::/64")}, 1420)
	want := []cmdStep{
		{do: []string{"ifconfig", "utun7", "mtu", "1420", "up"}},
		{do: []string{"ifconfig", "utun7", "inet", "100.64.1.1", "100.64.1.1", "alias"}, undo: []string{"ifconfig", "utun7", "inet", "100.64.1.1", "-alias"}},
		{do: []string{"ifconfig", "utun7", "inet6", "fd64::1:1", "prefixlen", "128", "alias"}, undo: []string{"ifconfig", "utun7", "inet6", "fd64::1:1", "-alias"}},
		{do: []string{"route", "-q", "-n", "add", "-inet", "100.65.0.0/16", "-interface", "utun7"}, undo: []string{"route", "-q", "-n", "delete", "-inet", "100.65.0.0/16", "-interface", "utun7"}},
		{do: []string{"route", "-q", "-n", "add", "-inet6", "fd65::/64", "-interface", "utun7"}, undo: []string{"route", "-q", "-n", "delete", "-inet6", "fd65::/64", "-interface", "utun7"}},
	}
	if !reflect.DeepEqual(steps, want) {
		t.Fatalf("steps:\n%q\nwant\n%q", steps, want)
	}

	// A failure part-way undoes what was done, last first, and nothing else.
	var ran []string
	failAt := "route -q -n add -inet6 fd65::/64 -interface utun7"
	run := func(args []string) error {
		s := strings.Join(args, " ")
		ran = append(ran, s)
		if s == failAt {
			return errors.New(s + ": File exists")
		}
		return nil
	}
	undo, err := runSteps(steps, run)
	if err == nil || undo != nil || !strings.Contains(err.Error(), "File exists") {
		t.Fatalf("runSteps = %v, %v", undo, err)
	}
	wantRan := []string{
		"ifconfig utun7 mtu 1420 up",
		"ifconfig utun7 inet 100.64.1.1 100.64.1.1 alias",
		"ifconfig utun7 inet6 fd64::1:1 prefixlen 128 alias",
		"route -q -n add -inet 100.65.0.0/16 -interface utun7",
		failAt,
		"route -q -n delete -inet 100.65.0.0/16 -interface utun7",
		"ifconfig utun7 inet6 fd64::1:1 -alias",
		"ifconfig utun7 inet 100.64.1.1 -alias",
	}
	if !reflect.DeepEqual(ran, wantRan) {
		t.Fatalf("ran:\n%s\nwant\n%s", strings.Join(ran, "\n"), strings.Join(wantRan, "\n"))
	}

	// Success: the undo removes every route and address, last first.
	ran, failAt = nil, ""
	undo, err = runSteps(steps, run)
	if err != nil {
		t.Fatal(err)
	}
	ran = nil
	if err := undo.run(); err != nil {
		t.Fatal(err)
	}
	if len(ran) != 4 || ran[0] != "route -q -n delete -inet6 fd65::/64 -interface utun7" || ran[3] != "ifconfig utun7 inet 100.64.1.1 -alias" {
		t.Fatalf("undo ran %q", ran)
	}
}

// packetRW is a packet-at-a-time io.ReadWriteCloser like a water interface.
type packetRW struct {
	in     chan []byte // what Read returns
	out    [][]byte    // what Write got
	mu     sync.Mutex
	closed chan struct{}
	closes int
}

func newPacketRW() *packetRW {
	return &packetRW{in: make(chan []byte, 8), closed: make(chan struct{})}
}

func (p *packetRW) Read(b []byte) (int, error) {
	select {
	case pkt := <-p.in:
		return copy(b, pkt), nil
	case <-p.closed:
		return 0, io.ErrClosedPipe
	}
}

func (p *packetRW) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out = append(p.out, bytes.Clone(b))
	return len(b), nil
}

func (p *packetRW) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closes++
	if p.closes == 1 {
		close(p.closed)
	}
	return nil
}

func TestRWTUN(t *testing.T) {
	rw := newPacketRW()
	var dev tun.Device = newRWTUN(rw, "wg7", 1400)
	if ev := <-dev.Events(); ev != tun.EventUp {
		t.Fatalf("first event %v", ev)
	}
	if n, _ := dev.Name(); n != "wg7" {
		t.Errorf("name %q", n)
	}
	if m, _ := dev.MTU(); m != 1400 || dev.BatchSize() != 1 || dev.File() != nil {
		t.Errorf("mtu %d batch %d", m, dev.BatchSize())
	}

	rw.in <- []byte("packet one")
	bufs := [][]byte{make([]byte, 100), make([]byte, 100)}
	sizes := make([]int, 2)
	n, err := dev.Read(bufs, sizes, 16)
	if err != nil || n != 1 || string(bufs[0][16:16+sizes[0]]) != "packet one" {
		t.Fatalf("Read = %d, %v, %q", n, err, bufs[0][16:16+sizes[0]])
	}

	w := [][]byte{append(make([]byte, 16), "a"...), make([]byte, 16), append(make([]byte, 16), "bc"...)}
	if n, err := dev.Write(w, 16); err != nil || n != 3 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(rw.out) != 2 || string(rw.out[0]) != "a" || string(rw.out[1]) != "bc" {
		t.Fatalf("wrote %q", rw.out)
	}

	// Close wakes a blocked Read, closes Events, and is idempotent.
	done := make(chan error, 1)
	go func() { _, err := dev.Read(bufs, sizes, 0); done <- err }()
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Error("Read after Close: no error")
	}
	if _, ok := <-dev.Events(); ok {
		t.Error("events still open")
	}
	if err := dev.Close(); err != nil || rw.closes != 1 {
		t.Errorf("second Close: %v, %d closes", err, rw.closes)
	}
}

// nopRW reads and writes without allocating.
type nopRW struct{ pkt []byte }

func (r *nopRW) Read(b []byte) (int, error)  { return copy(b, r.pkt), nil }
func (r *nopRW) Write(b []byte) (int, error) { return len(b), nil }
func (r *nopRW) Close() error                { return nil }

func TestRWTUNNoAllocs(t *testing.T) {
	dev := newRWTUN(&nopRW{pkt: make([]byte, 1400)}, "wg7", 1420)
	bufs := [][]byte{make([]byte, 1500)}
	sizes := make([]int, 1)
	if a := testing.AllocsPerRun(100, func() {
		dev.Read(bufs, sizes, 16)
		dev.Write(bufs, 16)
	}); a != 0 {
		t.Errorf("%v allocations per packet", a)
	}
}

// A Host's TUN closes once: closing it again, or closing the Host after the
// WireGuard device closed it, is harmless (the netstack alone would panic).
func TestHostCloseTwice(t *testing.T) {
	h, err := NewNetstack([]netip.Addr{netip.MustParseAddr("100.64.1.1")}, 1420)
	if err != nil {
		t.Fatal(err)
	}
	k := newKeypair(t)
	d, err := NewDevice(h.TUN, nil, k.priv, 0, nil, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	d.Close() // closes h.TUN
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	// The clean-up before the close runs exactly once.
	runs := 0
	ot := &onceTUN{Device: newRWTUN(newPacketRW(), "x", 1420), before: func() error { runs++; return errors.New("boom") }}
	host := &Host{TUN: ot}
	if err := host.Close(); err == nil || err.Error() != "boom" {
		t.Fatalf("Close = %v", err)
	}
	if err := ot.Close(); err == nil || runs != 1 {
		t.Fatalf("second Close = %v, %d runs", err, runs)
	}
}
