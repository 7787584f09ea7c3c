package tunnel

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
)

// Kernel TUN drivers of NewKernelTUN.
const (
	DriverTUN   = "tun"   // golang.zx2c4.com/wireguard/tun: offloads and batching on Linux
	DriverWater = "water" // github.com/songgao/water, one packet per call
)

// NewKernelTUN creates a kernel TUN interface called name with driver
// DriverTUN or DriverWater and configures it: every address of addrs as a
// host address (/32, /128), a route through the interface for every prefix
// of routes (the caller passes the anycast and overlay prefixes), the MTU,
// and the link up. Linux does this over netlink in the calling thread's
// network namespace; macOS with ifconfig and route (name must be "utun" or
// "utunN"; Host.Name is the name the system gave). It needs root (or
// CAP_NET_ADMIN).
//
// The Host has TUN set and Net nil. Closing the TUN (Host.Close, or the
// WireGuard device's Close) first removes the routes and addresses that
// NewKernelTUN added, exactly once, then closes the TUN, which deletes the
// interface. When anything fails part-way, NewKernelTUN undoes what it did
// and returns one error.
func NewKernelTUN(driver, name string, addrs []netip.Addr, routes []netip.Prefix, mtu int) (*Host, error) {
	if driver != DriverTUN && driver != DriverWater {
		return nil, fmt.Errorf("kernel TUN %s: driver %q: want %q or %q", name, driver, DriverTUN, DriverWater)
	}
	if err := CheckTUNName(name); err != nil {
		return nil, err
	}
	if mtu < 576 || mtu > 65535 {
		return nil, fmt.Errorf("kernel TUN %s: MTU %d out of range 576..65535", name, mtu)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("kernel TUN %s: no address", name)
	}
	as := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		if !a.IsValid() {
			return nil, fmt.Errorf("kernel TUN %s: invalid address", name)
		}
		as[i] = a.Unmap().WithZone("")
	}
	ps := make([]netip.Prefix, len(routes))
	for i, p := range routes {
		if !p.IsValid() {
			return nil, fmt.Errorf("kernel TUN %s: invalid route prefix", name)
		}
		ps[i] = p.Masked()
	}
	dev, real, unconfigure, err := createKernelTUN(driver, name, as, ps, mtu)
	if err != nil {
		return nil, fmt.Errorf("kernel TUN %s (%s): %s", name, driver, oneLine(err.Error()))
	}
	return &Host{TUN: &onceTUN{Device: dev, before: unconfigure}, Name: real}, nil
}

// oneLine folds a multi-line message (command output) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// undoStack collects the inverse of each configuration step done so far.
type undoStack []func() error

func (u *undoStack) push(f func() error) { *u = append(*u, f) }

// run undoes every step, last first, and returns the first error.
func (u undoStack) run() error {
	var first error
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// rwTUN is a tun.Device on a packet-at-a-time io.ReadWriteCloser (a
// songgao/water interface): each Read and Write of rw carries one IP packet,
// with no header. BatchSize is 1.
type rwTUN struct {
	rw     io.ReadWriteCloser
	name   string
	mtu    int
	events chan tun.Event
	once   sync.Once
	err    error
}

var _ tun.Device = (*rwTUN)(nil)

func newRWTUN(rw io.ReadWriteCloser, name string, mtu int) *rwTUN {
	t := &rwTUN{rw: rw, name: name, mtu: mtu, events: make(chan tun.Event, 1)}
	t.events <- tun.EventUp
	return t
}

func (t *rwTUN) File() *os.File           { return nil }
func (t *rwTUN) MTU() (int, error)        { return t.mtu, nil }
func (t *rwTUN) Name() (string, error)    { return t.name, nil }
func (t *rwTUN) Events() <-chan tun.Event { return t.events }
func (t *rwTUN) BatchSize() int           { return 1 }

// Read reads one packet into bufs[0][offset:].
func (t *rwTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	n, err := t.rw.Read(bufs[0][offset:])
	if n > 0 {
		sizes[0] = n
		return 1, err
	}
	return 0, err
}

// Write writes each packet bufs[i][offset:] with its own call.
func (t *rwTUN) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if len(b) <= offset {
			continue
		}
		if _, err := t.rw.Write(b[offset:]); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

func (t *rwTUN) Close() error {
	t.once.Do(func() {
		close(t.events)
		t.err = t.rw.Close()
	})
	return t.err
}
