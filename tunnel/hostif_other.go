//go:build !linux && !darwin

package tunnel

import (
	"errors"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

func createKernelTUN(driver, name string, addrs []netip.Addr, routes []netip.Prefix, mtu int) (tun.Device, string, func() error, error) {
	return nil, "", nil, errors.New("kernel TUN interfaces are supported on Linux and macOS only; use the netstack")
}
