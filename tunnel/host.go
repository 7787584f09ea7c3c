package tunnel

import (
	"fmt"
	"net/netip"
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
	return &Host{TUN: &onceTUN{Device: t}, Net: n}, nil
}

// onceTUN makes a tun.Device's Close idempotent (wireguard-go's netstack
// panics on a second Close) and runs an optional clean-up first.
type onceTUN struct {
	tun.Device
	before func() error // run once, before the device closes; may be nil
	once   sync.Once
	err    error
}

func (t *onceTUN) Close() error {
	t.once.Do(func() {
		var err1 error
		if t.before != nil {
			err1 = t.before()
		}
		err2 := t.Device.Close()
		if err1 != nil {
			t.err = err1
		} else {
			t.err = err2
		}
	})
	return t.err
}
