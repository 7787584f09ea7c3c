// Package node assembles running pias nodes from their configuration: a
// proxy is a wireguard-go device joined to a router and its control plane; an
// edge (target or client) is a wireguard-go device on a host interface.
package node

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/tunnel"
)

// Options are the knobs a node's creator has beyond its config file.
type Options struct {
	// Logf receives wireguard-go's errors; nil discards them.
	Logf func(format string, args ...any)
	// OnEvent hears what the control plane does.
	OnEvent func(overlay.Event)
	// Bind is the WireGuard underlay; nil is UDP (package rawbind).
	Bind conn.Bind
	// Host, if set, is the host interface an edge uses instead of the one its
	// config names (tests use it for raw packet access).
	Host *tunnel.Host
	// Attach is an edge's probing and switching rule; zero fields take the
	// defaults of edge.DefaultAttachConfig. A target moves only away from a
	// dead proxy, whatever it says.
	Attach edge.AttachConfig
	// UAPI opens the node's WireGuard UAPI socket (/var/run/wireguard/NAME.sock,
	// NAME its interface_name) so that `wg show NAME` works. It needs write
	// access to that directory, usually root.
	UAPI bool
	// CheckNetstack: a netstack target's services listen on the netstack
	// itself (the lab's do), not on the host's loopback, so its health
	// checks dial them there.
	CheckNetstack bool
}

// tick is how often a proxy runs its timers.
const tick = 100 * time.Millisecond

// proxyKeepalive keeps the proxy mesh's WireGuard sessions (and any NAT on
// the way) alive.
const proxyKeepalive = 25 * time.Second

// Proxy is a running proxy: WireGuard ↔ router ↔ WireGuard, no host interface.
//
// Goroutines: wireguard-go's receive goroutines run the data path (handle);
// what they find for the control plane they put on ctl (bounded queues,
// see ctlqueue.go), and one control goroutine (control) takes it from
// there and runs the timers. So the control plane never runs on WireGuard's receive path, and
// WireGuard is never reconfigured from it.
type Proxy struct {
	Name    string
	Config  *config.Proxy
	Router  *router.Router
	Overlay *overlay.Proxy
	Device  *tunnel.Device
	tun     *tunnel.MemTUN
	bind    *tunnel.SideBind
	gate    *tunnel.Gate // caps the packets inside the device
	uapi    io.Closer
	clock   wallClock
	ctl     *ctlQueue
	stop    chan struct{}
	done    sync.WaitGroup
	once    sync.Once
	mu      sync.Mutex // guards Device while StartProxy sets it
	logf    func(format string, args ...any)
	awaited awaitedCalls // proxies that call this one first (callfirst.go)
	// peersMu orders the changes of the device's proxy peers: the control
	// goroutine's and a reload's (a revoked proxy is removed).
	peersMu sync.Mutex
	redials atomic.Uint64 // sessions that carried nothing, started afresh (redial.go)
	recalls atomic.Uint64 // peers without a session, started afresh by the lesser key
}

// wallClock is the system clock: monotonic nanoseconds since start, the
// router's and the overlay's time base.
type wallClock struct{ epoch time.Time }

func (c wallClock) Now() int64      { return int64(time.Since(c.epoch)) }
func (c wallClock) Wall() time.Time { return time.Now() }

// transport is how the overlay of a running proxy reaches the network.
type transport struct{ p *Proxy }

func (t transport) Send(src, dst netip.AddrPort, payload []byte) {
	buf := make([]byte, 60+8+len(payload))
	if n, err := router.BuildUDP(buf, src, dst, payload); err == nil && !t.p.awaited.hold(dst.Addr(), buf[:n]) {
		t.p.tun.Inject(buf[:n])
	}
}

func (t transport) Forward(pkt []byte) { t.p.tun.Inject(pkt) }

func (t transport) SendUnderlay(to netip.AddrPort, pkt []byte) { t.p.bind.SendTo(to, pkt) }

func (t transport) AddPeer(m overlay.Member, keepalive bool) error { return t.p.addPeer(m, keepalive) }

func (t transport) AddEdge(key [32]byte, addrs []netip.Addr, ep netip.AddrPort) error {
	dev, err := t.p.device()
	if err != nil {
		return err
	}
	return dev.AddPeer(tunnel.Peer{PublicKey: key, Endpoint: ep, AllowedIPs: hostPrefixes(addrs)})
}

func (t transport) LastHandshake(key [32]byte) time.Time {
	dev, err := t.p.device()
	if err != nil {
		return time.Time{}
	}
	at, err := dev.LastHandshake(key)
	if err != nil {
		return time.Time{}
	}
	return at
}

func (t transport) RemovePeer(key [32]byte) {
	t.p.peersMu.Lock()
	defer t.p.peersMu.Unlock()
	t.p.awaited.forget(key)
	dev, err := t.p.device()
	if err == nil {
		err = dev.RemovePeer(key)
	}
	if err != nil && t.p.logf != nil {
		t.p.logf("remove peer %x…: %v", key[:4], err)
	}
}

// StartProxy starts the proxy that cfg describes.
func StartProxy(cfg *config.Proxy, opts Options) (*Proxy, error) {
	self := cfg.Addr4()
	r, err := router.New(router.Config{
		Self:        cfg.Address,
		Anycast:     cfg.AnycastPrefix,
		ControlPort: cfg.ControlPort,
		MTU:         cfg.MTU,
		MaxFlows:    cfg.MaxFlows,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", cfg.Name, err)
	}
	p := &Proxy{Name: cfg.Name, Config: cfg, Router: r, clock: wallClock{time.Now()}, ctl: newCtlQueue(), stop: make(chan struct{}), logf: opts.Logf}
	p.awaited.self = cfg.PublicKey
	members := []overlay.Member{{Name: cfg.Name, Addr: self, Addr6: cfg.Addr6(), Cluster: cfg.Cluster, PublicKey: cfg.PublicKey, Endpoint: cfg.Listen}}
	var peers []tunnel.Peer
	for _, pp := range cfg.Proxies {
		m := overlay.Member{Name: pp.Name, Addr: pp.Addr4(), Addr6: pp.Addr6(), Cluster: pp.Cluster, PublicKey: pp.PublicKey, Endpoint: pp.Endpoint}
		members = append(members, m)
		// The keepalive makes every proxy handshake with every other as soon
		// as it starts (the one of each pair that calls first: callfirst.go).
		peers = append(peers, p.awaited.peer(memberPeer(m, true), time.Now()))
	}
	edges := edgePolicies(cfg)
	for _, e := range cfg.Edges {
		peers = append(peers, tunnel.Peer{PublicKey: e.PublicKey, AllowedIPs: hostPrefixes(e.Address)})
	}
	p.tun, p.bind, p.gate = newDataPath(cfg.Name, cfg.MTU, p.clock.Now, p.handle, opts.Bind)
	var meshKey []byte
	if cfg.MeshKey != nil {
		meshKey = cfg.MeshKey[:]
	}
	var certs *overlay.CertConfig
	if cfg.CAMode() {
		// Admission by certificate: the [[proxy]] entries are seeds,
		// known by endpoint only.
		pool, err := cert.NewPool(cfg.CA)
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", cfg.Name, err)
		}
		certs = &overlay.CertConfig{Pool: pool, Cert: cfg.Cert, PrivateKey: cfg.PrivateKey, Revoked: cfg.Revocation}
		for _, s := range cfg.Proxies {
			certs.Seeds = append(certs.Seeds, s.Endpoint)
		}
		members, peers = members[:1], nil
	}
	p.Overlay, err = overlay.NewProxy(overlay.ProxyConfig{
		Self:        members[0],
		Members:     members,
		MeshKey:     meshKey,
		Certs:       certs,
		Edges:       edges,
		Replicas:    cfg.RAPReplicas,
		ControlPort: cfg.ControlPort,
		Router:      r,
		Clock:       p.clock,
		Transport:   transport{p},
		Rand:        rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		OnEvent:     opts.OnEvent,

		TargetTimeout: cfg.TargetTimeout,
		CacheTTL:      cfg.CacheTTL,
		Inaccuracy:    inaccuracy(cfg.Inaccuracy),
		Health:        overlay.HealthConfig{ProbeInterval: cfg.ProbeInterval, ProbeMisses: cfg.ProbeMisses},
	})
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", cfg.Name, err)
	}
	p.bind.SetHandler(func(from netip.AddrPort, pkt []byte) {
		p.ctl.underlayDatagram(cfg.MeshKey != nil || cfg.CAMode(), from, pkt)
	})
	dev, err := tunnel.NewDevice(p.tun, p.bind, cfg.PrivateKey, cfg.Listen.Port(), peers, opts.Logf)
	if err != nil {
		p.tun.Close()
		return nil, fmt.Errorf("proxy %s: %w", cfg.Name, err)
	}
	p.gate.Watch(dev.Device)
	p.mu.Lock()
	p.Device = dev
	p.mu.Unlock()
	if cfg.Listen.Port() == 0 {
		if port, err := dev.ListenPort(); err == nil {
			p.Overlay.SetEndpoint(netip.AddrPortFrom(cfg.Listen.Addr(), port))
		}
	}
	if opts.UAPI {
		if p.uapi, err = p.Device.ListenUAPI(cfg.InterfaceName); err != nil {
			p.Device.Close()
			return nil, fmt.Errorf("proxy %s: %w", cfg.Name, err)
		}
	}
	p.done.Add(1)
	go p.control()
	return p, nil
}

// newDataPath is a proxy's data path around its wireguard-go device: the
// MemTUN that joins it to the router (h) and the bind it reads the
// underlay through (inner; nil: the default bind), with a gate that caps
// the packets (64 KiB of buffer each) inside the device.
func newDataPath(name string, mtu int, clock func() int64, h tunnel.Handler, inner conn.Bind) (*tunnel.MemTUN, *tunnel.SideBind, *tunnel.Gate) {
	t, b := tunnel.NewMemTUN(name, mtu, clock, h), tunnel.NewSideBind(inner, overlay.UnderlayMagic)
	return t, b, tunnel.NewGate(t, b, tunnel.DefaultIn, tunnel.DefaultOut, tunnel.DefaultIdle)
}

// ControlDropped counts the control events dropped because the control
// goroutine was behind (or an underlay datagram could not be the
// overlay's).
func (p *Proxy) ControlDropped() uint64 { return p.ctl.dropped.Load() }

// handle is the data path: every packet WireGuard decrypted goes through the
// router; control messages and resolve requests go to the control plane.
func (p *Proxy) handle(buf []byte, start, end int, now int64) (int, int, bool) {
	res := p.Router.Route(buf, start, end, now)
	switch res.Action {
	case router.Forward:
		if res.Copies > 0 {
			p.injectCopies(&res)
		}
		return res.Start, res.End, true
	case router.Control:
		p.ctl.message(res.Src, res.Dst, buf[res.Start:res.End])
	case router.Queued:
		if res.Resolve {
			p.ctl.signal(res.Group, netip.Addr{})
		}
	case router.Drop:
		if res.Reason == router.DropNoTarget && res.Src.IsValid() {
			p.ctl.signal(res.Group, res.Src.Addr())
		}
	}
	return 0, 0, false
}

// control is the control goroutine: the only caller of the overlay's
// entry points in a running proxy.
func (p *Proxy) control() {
	defer p.done.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	hc := time.NewTicker(p.Overlay.ProbeInterval())
	defer hc.Stop()
	var quiet burstEnd
	p.Overlay.HealthTick() // announce this proxy at once
	for {
		select {
		case <-p.stop:
			return
		case m := <-p.ctl.msgs:
			p.Overlay.HandleControl(m.src, m.dst, m.payload)
		case m := <-p.ctl.underlay:
			p.Overlay.HandleUnderlay(m.src, m.payload)
		case <-p.ctl.wake:
			resolve, noTargets := p.ctl.signals()
			for g := range resolve {
				p.Overlay.Resolve(g)
			}
			for n := range noTargets {
				p.Overlay.NoTarget(n.iap, n.g)
			}
		case <-t.C:
			p.Overlay.Tick()
			p.Router.Expire(p.clock.Now())
			p.endAwaitedCalls(time.Now())
			if quiet.tick(p.tun.Written.Load()) {
				releaseAfterBurst() // see release.go
			}
		case <-hc.C:
			p.Overlay.HealthTick()
		}
	}
}

// injectCopies sends the extra packets of a replicated datagram (a group
// with replicate ≥ 2); the main packet goes the usual way.
func (p *Proxy) injectCopies(res *router.Result) {
	dst := make([]byte, res.End-res.Start)
	for i := range res.Copies {
		if s, e, ok := p.Router.Copy(res, i, dst); ok {
			p.tun.Inject(dst[s:e])
		}
	}
}

// addPeer makes a proxy learned at run time a WireGuard peer.
func (p *Proxy) addPeer(m overlay.Member, keepalive bool) error {
	p.peersMu.Lock()
	defer p.peersMu.Unlock()
	dev, err := p.device()
	if err != nil {
		return err
	}
	return dev.AddPeer(p.awaited.peer(memberPeer(m, keepalive), time.Now()))
}

// device is the WireGuard device once StartProxy has set it; the overlay
// may call out before that (the proxy's own endpoint), but no peer is
// added until the control goroutine runs.
func (p *Proxy) device() (*tunnel.Device, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Device == nil {
		return nil, fmt.Errorf("device not up yet")
	}
	return p.Device, nil
}

// memberPeer is the WireGuard peer of another proxy; keepalive asks for a
// persistent keepalive.
func memberPeer(m overlay.Member, keepalive bool) tunnel.Peer {
	pr := tunnel.Peer{PublicKey: m.PublicKey, Endpoint: m.Endpoint, AllowedIPs: hostPrefixes(m.Addrs())}
	if keepalive {
		pr.Keepalive = proxyKeepalive
	}
	return pr
}

// ListenPort is the UDP port WireGuard listens on.
func (p *Proxy) ListenPort() (uint16, error) { return p.Device.ListenPort() }

// Close stops the proxy and releases its socket.
func (p *Proxy) Close() {
	p.once.Do(func() {
		close(p.stop)
		p.done.Wait()
		if p.uapi != nil {
			p.uapi.Close()
		}
		p.Device.Close() // closes the MemTUN too
	})
}

// inaccuracy maps the config's percent to the overlay's, which reads 0 as
// its default and a negative value as "report every change".
func inaccuracy(percent int) float64 {
	if percent == 0 {
		return -1
	}
	return float64(percent)
}

// hostPrefixes turns addresses into single-host prefixes (WireGuard AllowedIPs).
func hostPrefixes(addrs []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, len(addrs))
	for i, a := range addrs {
		out[i] = netip.PrefixFrom(a, a.BitLen())
	}
	return out
}
