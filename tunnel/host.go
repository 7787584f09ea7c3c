package tunnel

import (
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// Host is an edge's host interface: the tun.Device its WireGuard device reads
// and writes, and, for the userspace netstack, the network stack that
// programs in this process use to dial and listen on overlay addresses.
// Kernel TUN interfaces (a later kind of Host) leave Net nil: the operating
// system's own stack serves programs there.
type Host struct {
	TUN tun.Device
	Net *netstack.Net
}

// NewNetstack makes a userspace gVisor netstack host interface that owns addrs.
// It needs no root and touches nothing on the machine.
func NewNetstack(addrs []netip.Addr, mtu int) (*Host, error) {
	t, n, err := netstack.CreateNetTUN(addrs, nil, mtu)
	if err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}
	return &Host{TUN: t, Net: n}, nil
}
