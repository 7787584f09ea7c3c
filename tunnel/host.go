package tunnel

import (
	"fmt"
	"net/netip"
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// Host is an edge's host interface: the tun.Device its WireGuard device reads
// and writes, and, for the userspace netstack, the network stack that
// programs in this process use to dial and listen on overlay addresses.
// Kernel TUN interfaces (NewKernelTUN) leave Net nil: the operating system's
// own stack serves programs there.
type Host struct {
	TUN tun.Device
	Net *netstack.Net
	// Name is the kernel interface's actual name, which on macOS the system
	// may have picked ("utun" becomes "utun7"); "" for a netstack.
	Name string
}

// Close releases the host interface: for a kernel TUN it removes the routes
// and addresses it added, then closes the TUN (which makes the interface
// disappear). The TUN of a Host from NewNetstack or NewKernelTUN closes only
// once, so Close is harmless after the WireGuard device on it closed it (and
// the device's Close is harmless after Host.Close), and a second Close
// returns the first one's result.
func (h *Host) Close() error { return h.TUN.Close() }

// NewNetstack makes a userspace gVisor netstack host interface that owns addrs.
// It needs no root and touches nothing on the machine.
func NewNetstack(addrs []netip.Addr, mtu int) (*Host, error) {
	t, n, err := netstack.CreateNetTUN(addrs, nil, mtu)
	if err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}
	return &Host{TUN: &onceTUN{Device: t, drain: true}, Net: n}, nil
}

// onceTUN makes a tun.Device's Close idempotent (wireguard-go's netstack
// panics on a second Close) and runs an optional clean-up first. For the
// netstack, no Write is under way when the device closes, and none reaches
// it after.
type onceTUN struct {
	tun.Device
	before func() error // run once, before the device closes; may be nil
	// drain: the device is wireguard-go's netstack, which hands what its
	// stack sends to Read over an unbuffered channel and closes that
	// channel at Close: a sender still waiting there panics ("send on
	// closed channel") and takes the process down. A Write waits there
	// when the packet it delivers makes the stack answer at once (an
	// ICMP error), and the stack's own timers send too. So Close reads
	// and drops what comes until the device is closed.
	drain  bool
	once   sync.Once
	err    error
	writes sync.RWMutex // held for reading by Write, for writing by Close
	closed bool         // guarded by writes
}

func (t *onceTUN) Write(bufs [][]byte, offset int) (int, error) {
	if !t.drain {
		return t.Device.Write(bufs, offset) // a kernel TUN refuses Writes after Close itself
	}
	t.writes.RLock()
	defer t.writes.RUnlock()
	if t.closed {
		return 0, os.ErrClosed
	}
	return t.Device.Write(bufs, offset)
}

func (t *onceTUN) Close() error {
	t.once.Do(func() {
		var err1 error
		if t.before != nil {
			err1 = t.before()
		}
		if t.drain {
			go t.drainReads()
		}
		// Wait for the Writes under way (the drain takes the packets they
		// wait to hand over), and refuse the later ones.
		t.writes.Lock()
		t.closed = true
		t.writes.Unlock()
		err2 := t.Device.Close()
		if err1 != nil {
			t.err = err1
		} else {
			t.err = err2
		}
	})
	return t.err
}

// drainReads reads and drops packets until the device is closed.
func (t *onceTUN) drainReads() {
	bufs, sizes := [][]byte{make([]byte, 1<<16)}, []int{0}
	for {
		if _, err := t.Device.Read(bufs, sizes, 0); err != nil {
			return
		}
	}
}
