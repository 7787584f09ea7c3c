package tunnel

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/songgao/water"
	"golang.zx2c4.com/wireguard/tun"
)

// createKernelTUN creates a utun interface and configures it with ifconfig
// and route.
func createKernelTUN(driver, name string, addrs []netip.Addr, routes []netip.Prefix, mtu int) (dev tun.Device, real string, unconfigure func() error, err error) {
	switch driver {
	case DriverTUN:
		dev, err = tun.CreateTUN(name, mtu)
	default:
		params := water.PlatformSpecificParams{Driver: water.MacOSDriverSystem}
		if name != "utun" {
			params.Name = name
		}
		var ifce *water.Interface
		ifce, err = water.New(water.Config{DeviceType: water.TUN, PlatformSpecificParams: params})
		if err == nil {
			dev = newRWTUN(&utunReader{ifce}, ifce.Name(), mtu)
		}
	}
	if err != nil {
		return nil, "", nil, fmt.Errorf("create: %w", err)
	}
	if real, err = dev.Name(); err != nil {
		dev.Close()
		return nil, "", nil, fmt.Errorf("name of the new interface: %w", err)
	}
	undo, err := runSteps(bsdSteps(real, addrs, routes, mtu), runCommand)
	if err != nil {
		dev.Close()
		return nil, "", nil, err
	}
	return dev, real, sync.OnceValue(undo.run), nil
}

// utunReader fixes songgao/water's macOS Read, which returns n-4 (a negative
// count) when reading the 4-byte header fails.
type utunReader struct{ *water.Interface }

func (u *utunReader) Read(b []byte) (int, error) {
	n, err := u.Interface.Read(b)
	return max(n, 0), err
}
