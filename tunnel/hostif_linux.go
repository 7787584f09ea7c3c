package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// createKernelTUN creates the TUN and configures it over netlink, in the
// network namespace of the calling thread. unconfigure removes the routes and
// addresses it added; it works from any thread, since the netlink handle
// keeps its sockets in the namespace it was made in.
func createKernelTUN(driver, name string, addrs []netip.Addr, routes []netip.Prefix, mtu int) (dev tun.Device, real string, unconfigure func() error, err error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, "", nil, fmt.Errorf("netlink: %w", err)
	}
	// A TUN of that name that someone else holds would refuse us anyway, but
	// a persistent one would let us attach to it: refuse any existing link.
	if _, err := h.LinkByName(name); err == nil {
		h.Close()
		return nil, "", nil, fmt.Errorf("interface %s already exists", name)
	}
	switch driver {
	case DriverTUN:
		dev, err = tun.CreateTUN(name, mtu)
	default:
		var ifce *water.Interface
		ifce, err = water.New(water.Config{DeviceType: water.TUN, PlatformSpecificParams: water.PlatformSpecificParams{Name: name}})
		if err == nil {
			dev = newRWTUN(ifce, ifce.Name(), mtu)
		}
	}
	if err != nil {
		h.Close()
		return nil, "", nil, fmt.Errorf("create: %w", err)
	}
	undo, err := configureLinux(h, name, addrs, routes, mtu)
	if err != nil {
		dev.Close()
		h.Close()
		return nil, "", nil, err
	}
	return dev, name, sync.OnceValue(func() error {
		defer h.Close()
		return undo.run()
	}), nil
}

// configureLinux sets the MTU, brings the link up, adds the addresses and
// the routes. On failure it has undone its steps.
func configureLinux(h *netlink.Handle, name string, addrs []netip.Addr, routes []netip.Prefix, mtu int) (undo undoStack, err error) {
	defer func() {
		if err != nil {
			undo.run()
			undo = nil
		}
	}()
	link, err := h.LinkByName(name)
	if err != nil {
		return undo, fmt.Errorf("find the new interface: %w", err)
	}
	if err := h.LinkSetMTU(link, mtu); err != nil {
		return undo, fmt.Errorf("set MTU %d: %w", mtu, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return undo, fmt.Errorf("set link up: %w", err)
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: hostNet(a)}
		if a.Is6() {
			addr.Flags = unix.IFA_F_NODAD // a point-to-point TUN has no neighbours
		}
		if err := h.AddrAdd(link, addr); err != nil {
			return undo, fmt.Errorf("add address %s: %w", a, err)
		}
		undo.push(func() error {
			if err := h.AddrDel(link, addr); err != nil && !gone(err) {
				return fmt.Errorf("remove address %s from %s: %w", a, name, err)
			}
			return nil
		})
	}
	for _, p := range routes {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixNet(p)}
		if p.Addr().Is4() {
			r.Scope = netlink.SCOPE_LINK
		}
		if err := h.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return undo, fmt.Errorf("add route %s dev %s: a route to %s exists already (another node or interface on this host?)", p, name, p)
			}
			return undo, fmt.Errorf("add route %s dev %s: %w", p, name, err)
		}
		undo.push(func() error {
			if err := h.RouteDel(r); err != nil && !gone(err) {
				return fmt.Errorf("remove route %s dev %s: %w", p, name, err)
			}
			return nil
		})
	}
	// IPv6 brings an address into service (its local route) a moment after
	// adding it: wait, so that the interface is ready when we return.
	for _, a := range addrs {
		if err := waitLocal(h, a); err != nil {
			return undo, err
		}
	}
	return undo, nil
}

// waitLocal waits until the kernel delivers packets to a locally.
func waitLocal(h *netlink.Handle, a netip.Addr) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		rs, err := h.RouteGet(a.AsSlice())
		if err == nil && len(rs) > 0 && rs[0].Type == unix.RTN_LOCAL {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("address %s is still not in service after 3s", a)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// gone reports the errors of removing what is not there any more (the
// interface vanished, taking its addresses and routes with it).
func gone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT)
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
