package node

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/tunnel"
)

// edgeKeepalive keeps NAT mappings and the proxy's endpoint for us fresh.
const edgeKeepalive = 25 * time.Second

// Edge is a running target or client: a wireguard-go device on a host
// interface, attached to its first proxy, which it routes the anycast and
// overlay prefixes to. A target also keeps its groups joined.
type Edge struct {
	Name   string
	Config *config.Edge
	Host   *tunnel.Host
	Device *tunnel.Device
	Target *overlay.Target // nil for clients
	uapi   io.Closer       // nil unless Options.UAPI
	once   sync.Once
}

// StartEdge starts the target or client that cfg describes. It returns
// once the device is up; a target's joins go on in the background
// (Edge.Target.WaitJoined waits for them).
func StartEdge(cfg *config.Edge, opts Options) (*Edge, error) {
	host := opts.Host
	if host == nil {
		var err error
		switch cfg.Interface {
		case config.InterfaceNetstack:
			host, err = tunnel.NewNetstack(cfg.Address, cfg.MTU)
		default:
			// A kernel interface with the overlay addresses, and the anycast
			// and overlay prefixes routed into it.
			routes := append(append([]netip.Prefix(nil), cfg.AnycastPrefix...), cfg.OverlayPrefix...)
			host, err = tunnel.NewKernelTUN(cfg.Interface, cfg.InterfaceName, cfg.Address, routes, cfg.MTU)
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", cfg.Role, cfg.Name, err)
		}
	}
	var peers []tunnel.Peer
	for i, pp := range cfg.Proxies {
		allowed := hostPrefixes(pp.Address)
		peer := tunnel.Peer{PublicKey: pp.PublicKey, Endpoint: pp.Endpoint}
		if i == 0 {
			// Emulated native anycast, first cut: the anycast prefix (and
			// the rest of the overlay) lives behind the preferred proxy.
			allowed = append(append(allowed, cfg.AnycastPrefix...), cfg.OverlayPrefix...)
			peer.Keepalive = edgeKeepalive
		}
		peer.AllowedIPs = allowed
		peers = append(peers, peer)
	}
	e := &Edge{Name: cfg.Name, Config: cfg, Host: host}
	var err error
	e.Device, err = tunnel.NewDevice(host.TUN, opts.Bind, cfg.PrivateKey, cfg.Listen.Port(), peers, opts.Logf)
	if err != nil {
		host.Close()
		return nil, fmt.Errorf("%s %s: %w", cfg.Role, cfg.Name, err)
	}
	if opts.UAPI {
		name := cfg.InterfaceName
		if host.Name != "" {
			name = host.Name // macOS picks utun numbers itself
		}
		if e.uapi, err = e.Device.ListenUAPI(name); err != nil {
			e.Device.Close()
			host.Close()
			return nil, fmt.Errorf("%s %s: %w", cfg.Role, cfg.Name, err)
		}
	}
	if cfg.Role == config.RoleTarget {
		var groups []overlay.Membership
		for _, s := range cfg.Groups {
			groups = append(groups, overlay.Membership{Group: s.Group, Port: s.Port})
		}
		e.Target, err = overlay.StartTarget(overlay.TargetConfig{
			Name:        cfg.Name,
			Groups:      groups,
			ControlPort: cfg.ControlPort,
			Keepalive:   cfg.Keepalive,
			Dial:        e.dialUDP,
			OnEvent:     opts.OnEvent,
		})
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("target %s: %w", cfg.Name, err)
		}
	}
	return e, nil
}

// dialUDP opens a UDP socket from the edge's overlay address of raddr's
// family, on the netstack or, for a kernel TUN, the host's own stack.
func (e *Edge) dialUDP(raddr netip.AddrPort) (net.Conn, error) {
	for _, a := range e.Config.Address {
		if a.Is4() == raddr.Addr().Is4() {
			laddr := netip.AddrPortFrom(a, 0)
			if e.Host.Net == nil {
				return net.DialUDP("udp", net.UDPAddrFromAddrPort(laddr), net.UDPAddrFromAddrPort(raddr))
			}
			return e.Host.Net.DialUDPAddrPort(laddr, raddr)
		}
	}
	return nil, fmt.Errorf("no overlay address of the family of %s", raddr.Addr())
}

// Close leaves the groups and stops the edge.
func (e *Edge) Close() {
	e.once.Do(func() {
		if e.Target != nil {
			e.Target.Close()
		}
		if e.uapi != nil {
			e.uapi.Close()
		}
		// The device closes the host interface; a kernel TUN removes its
		// routes and addresses first.
		e.Device.Close()
	})
}
