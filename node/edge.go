package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
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
	// Attach keeps the anycast and overlay prefixes on the nearest live
	// proxy of the config or learned (emulated native anycast); nil if the
	// config lists a single proxy and learns none.
	Attach *overlay.Attacher
	uapi   io.Closer // nil unless Options.UAPI
	once   sync.Once
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	done   sync.WaitGroup

	mu      sync.Mutex
	proxies []config.ProxyPeer // the attacher's candidates, by index: the config's, then learned ones
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
		// Emulated native anycast: the anycast prefix (and the rest of the
		// overlay) starts behind the preferred proxy; the attacher moves it
		// to the nearest live one.
		peers = append(peers, proxyPeer(cfg, pp, i, i == 0))
	}
	e := &Edge{Name: cfg.Name, Config: cfg, Host: host, proxies: slices.Clone(cfg.Proxies)}
	e.ctx, e.cancel = context.WithCancel(context.Background())
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
			groups = append(groups, overlay.Membership{Group: s.Group, Port: s.Port, Policy: s.Policy, Weight: s.Weight})
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
	// Probes (and questions about proxies) go to an overlay address of
	// the edge's own family; without one for every proxy, the edge stays
	// on its first.
	probeable := !slices.ContainsFunc(cfg.Proxies, func(pp config.ProxyPeer) bool { return !e.probeAddr(pp).IsValid() })
	if probeable && (len(cfg.Proxies) > 1 || cfg.LearnProxies) {
		if err := e.startAttacher(opts); err != nil {
			e.Close()
			return nil, fmt.Errorf("%s %s: %w", cfg.Role, cfg.Name, err)
		}
	}
	if e.Attach != nil && cfg.LearnProxies && len(cfg.Proxies) < config.MaxCandidates {
		e.done.Add(1)
		go e.learnLoop(opts)
	}
	return e, nil
}

// probeAddr is the overlay address of proxy pp the edge probes and asks:
// IPv4 if the edge has an IPv4 address, else IPv6 (invalid if pp has
// none of that family).
func (e *Edge) probeAddr(pp config.ProxyPeer) netip.Addr {
	if e.Config.Addr4().IsValid() {
		return pp.Addr4()
	}
	return pp.Addr6()
}

// proxy is candidate i.
func (e *Edge) proxy(i int) config.ProxyPeer {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.proxies[i]
}

// movedPrefixes are what emulated anycast moves between proxies.
func movedPrefixes(cfg *config.Edge) []netip.Prefix {
	return append(append([]netip.Prefix(nil), cfg.AnycastPrefix...), cfg.OverlayPrefix...)
}

// AttachConfig is the probing and switching rule of every edge this process
// starts; tests may change it before starting edges.
var AttachConfig = overlay.DefaultAttachConfig

func attachConfig(cfg *config.Edge) overlay.AttachConfig {
	c := AttachConfig
	c.OnlyOnFailure = c.OnlyOnFailure || cfg.Role == config.RoleTarget
	return c
}

// startAttacher probes every proxy of the config and moves the prefixes to
// the nearest live one; a target joins its groups again after each move.
func (e *Edge) startAttacher(opts Options) error {
	cfg := e.Config
	var names []string
	var addrs []netip.Addr
	for _, pp := range cfg.Proxies {
		names = append(names, pp.Name)
		addrs = append(addrs, e.probeAddr(pp))
	}
	var err error
	e.Attach, err = overlay.StartAttacher(overlay.AttacherConfig{
		Names:        names,
		Addrs:        addrs,
		AttachConfig: attachConfig(cfg),
		Probe:        e.Ping,
		Apply:        e.moveTo,
		Reset:        e.resetPeer,
		Logf:         opts.Logf,
		OnMove: func(m overlay.AttachMove) {
			from, to := e.proxy(m.From), e.proxy(m.To)
			if e.Target != nil {
				e.Target.Moved(e.probeAddr(from))
			}
			if opts.OnEvent != nil {
				opts.OnEvent(overlay.Event{
					Proxy:  to.Name,
					Kind:   "move",
					Name:   cfg.Name,
					Reason: fmt.Sprintf("%s → %s (%s)", from.Name, to.Name, m.Reason),
				})
			}
		},
	})
	return err
}

// proxyPeer is the WireGuard peer of candidate i, proxy pp: its own
// addresses, and the moved prefixes when it carries them. The preferred
// proxy (0) gets a keepalive, which keeps NAT mappings fresh.
func proxyPeer(cfg *config.Edge, pp config.ProxyPeer, i int, carries bool) tunnel.Peer {
	peer := tunnel.Peer{PublicKey: pp.PublicKey, Endpoint: pp.Endpoint, AllowedIPs: hostPrefixes(pp.Address)}
	if carries {
		peer.AllowedIPs = append(peer.AllowedIPs, movedPrefixes(cfg)...)
	}
	if i == 0 {
		peer.Keepalive = edgeKeepalive
	}
	return peer
}

// moveTo puts the moved prefixes on proxy to, leaving proxy from with only
// its own addresses (so probes keep reaching every proxy).
func (e *Edge) moveTo(from, to int) error {
	return e.Device.UpdateAllowedIPs([]tunnel.Peer{
		proxyPeer(e.Config, e.proxy(to), to, true),
		proxyPeer(e.Config, e.proxy(from), from, false),
	})
}

// resetPeer drops the WireGuard session with proxy i by replacing the peer
// with a fresh copy, so that the next packet to it starts a handshake. The
// peer keeps the prefixes it carries.
func (e *Edge) resetPeer(i int, current bool) {
	e.Device.ResetPeer(proxyPeer(e.Config, e.proxy(i), i, current))
}

// dialUDP opens a UDP socket from the edge's overlay address of raddr's
// family, on the netstack or, for a kernel TUN, the host's own stack.
func (e *Edge) dialUDP(raddr netip.AddrPort) (net.Conn, error) {
	a := e.Config.AddrLike(raddr.Addr())
	if !a.IsValid() {
		return nil, fmt.Errorf("no overlay address of the family of %s", raddr.Addr())
	}
	laddr := netip.AddrPortFrom(a, 0)
	if e.Host.Net == nil {
		return net.DialUDP("udp", net.UDPAddrFromAddrPort(laddr), net.UDPAddrFromAddrPort(raddr))
	}
	return e.Host.Net.DialUDPAddrPort(laddr, raddr)
}

// Close leaves the groups and stops the edge.
func (e *Edge) Close() {
	e.once.Do(func() {
		e.cancel()
		e.done.Wait()
		if e.Attach != nil {
			e.Attach.Close()
		}
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
