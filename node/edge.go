package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pias-net/pias/admit"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/tunnel"
)

// edgeKeepalive keeps NAT mappings and the proxy's endpoint for us fresh.
const edgeKeepalive = 25 * time.Second

// Edge is a running target or client: a wireguard-go device on a host
// interface, attached to its first proxy, which it routes the anycast and
// overlay prefixes to. A target also keeps its groups joined.
//
// One goroutine (run) drives the edge's control plane, the machines of
// package edge: it owns the control sockets, starts the probes, and applies
// what the machines decide to the device.
type Edge struct {
	Name   string
	Config *config.Edge
	Host   *tunnel.Host
	Device *tunnel.Device
	Target *edge.Target // nil for clients
	// Attach keeps the anycast and overlay prefixes on the nearest live
	// proxy of the config or learned (emulated native anycast); nil if the
	// config lists a single proxy and learns none.
	Attach *edge.Attacher
	learn  *edge.Learner // nil unless the edge learns proxies
	opts   Options
	uapi   io.Closer // nil unless Options.UAPI
	epoch  time.Time // of now
	once   sync.Once
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	done   sync.WaitGroup

	// Owned by run.
	conns  map[bool]net.PacketConn // control sockets, by family (true: IPv4)
	in     chan datagram           // what they read
	probed chan probed             // the probes' outcomes
	ctl    chan edgeCtl            // admin requests (Drain, Undrain)
	ended  chan struct{}           // closed when run returns
	checks []*groupCheck           // a target's health checks
	// checkedc carries the checks' results to run.
	checkedc chan checked
	checkMu  sync.Mutex
	// CA mode: the admission by certificate at each proxy (nil in static
	// mode), and the handshake's datagrams from the WireGuard socket.
	admit    *admit.Client
	underlay chan datagram
	// waiting: proxies that admitted the edge before its home (the first
	// in its file) did, until homeBy; the home carries the prefix if it
	// admits the edge by then.
	waiting []admittedProxy
	homeBy  int64
	// cur is the edge's file as reloaded last (Reload), owned by run:
	// its groups, checks and drain timeout.
	cur  *config.Edge
	side *tunnel.SideBind
	// attachMu guards Attach where run sets it late (CA mode: at the
	// first admission), for readers on other goroutines (attacher).
	attachMu sync.Mutex
}

// attacher is Attach, for goroutines other than run.
func (e *Edge) attacher() *edge.Attacher {
	e.attachMu.Lock()
	defer e.attachMu.Unlock()
	return e.Attach
}

// edgeCtl is a request for run: do applies it to the target's machine at
// now; its error goes back on done.
type edgeCtl struct {
	do   func(now int64) ([]edge.Packet, error)
	done chan error
}

// probed is the outcome of one probe.
type probed struct {
	i    int
	ok   bool
	late bool // an answer after the probe was counted lost
	rtt  time.Duration
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
		if cfg.CAMode() {
			break // known by endpoint only, until each admits the edge
		}
		// Emulated native anycast: the anycast prefix (and the rest of the
		// overlay) starts behind the preferred proxy; the attacher moves it
		// to the nearest live one.
		peers = append(peers, proxyPeer(cfg, pp, i, i == 0))
	}
	e := &Edge{Name: cfg.Name, Config: cfg, Host: host, opts: opts, epoch: time.Now(),
		conns: map[bool]net.PacketConn{}, in: make(chan datagram, 64), probed: make(chan probed), ctl: make(chan edgeCtl), ended: make(chan struct{})}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.cur = cfg
	bind := opts.Bind
	if cfg.CAMode() {
		var err error
		if e.admit, err = newAdmitClient(cfg); err != nil {
			host.Close()
			return nil, fmt.Errorf("%s %s: %w", cfg.Role, cfg.Name, err)
		}
		for _, pp := range cfg.Proxies {
			e.admit.Add(pp.Endpoint, e.now())
		}
		e.homeBy = e.now() + int64(homeGrace)
		e.underlay = make(chan datagram, 16)
		sb := tunnel.NewSideBind(opts.Bind, admit.Magic)
		sb.SetHandler(func(from netip.AddrPort, pkt []byte) {
			if len(pkt) > admit.MaxLen {
				return
			}
			select {
			case e.underlay <- datagram{from, bytes.Clone(pkt)}:
			default: // run is behind: the handshake retries
			}
		})
		bind, e.side = sb, sb
	}
	var err error
	e.Device, err = tunnel.NewDevice(host.TUN, bind, cfg.PrivateKey, cfg.Listen.Port(), peers, opts.Logf)
	if err != nil {
		host.Close()
		return nil, fmt.Errorf("%s %s: %w", cfg.Role, cfg.Name, err)
	}
	fail := func(err error) (*Edge, error) {
		e.Device.Close()
		return nil, fmt.Errorf("%s %s: %w", cfg.Role, cfg.Name, err)
	}
	if opts.UAPI {
		name := cfg.InterfaceName
		if host.Name != "" {
			name = host.Name // macOS picks utun numbers itself
		}
		if e.uapi, err = e.Device.ListenUAPI(name); err != nil {
			return fail(err)
		}
	}
	now := e.now()
	if cfg.Role == config.RoleTarget {
		var groups []edge.Membership
		for _, s := range cfg.Groups {
			if !cfg.AddrLike(s.Group.Addr).IsValid() {
				e.closeUAPI()
				return fail(fmt.Errorf("join %s: no overlay address of its family", s.Group))
			}
			groups = append(groups, edge.Membership{Group: s.Group, Port: s.Port, Policy: s.Policy, Weight: s.Weight})
		}
		e.Target = edge.NewTarget(edge.TargetConfig{
			Name:        cfg.Name,
			Groups:      groups,
			ControlPort: cfg.ControlPort,
			Keepalive:   cfg.Keepalive,
			Epoch:       uint32(time.Now().Unix()),
			FirstSeq:    rand.Uint32(),
			OnEvent:     opts.OnEvent,
			JAP:         e.attached,
		})
		e.checks = newChecks(cfg, host, opts.CheckNetstack)
		e.checkedc = make(chan checked)
	}
	// Probes (and questions about proxies) go to an overlay address of
	// the edge's own family; without one for every proxy, the edge stays
	// on its first.
	var cands []edge.Candidate
	for _, pp := range cfg.Proxies {
		cands = append(cands, edge.NewCandidate(cfg, pp, false))
	}
	probeable := !slices.ContainsFunc(cands, func(c edge.Candidate) bool { return !c.Addr.IsValid() })
	if probeable && !cfg.CAMode() && (len(cfg.Proxies) > 1 || cfg.LearnProxies) {
		if e.Attach, err = edge.NewAttacher(cands, attachConfig(cfg, opts), now); err != nil {
			e.closeUAPI()
			return fail(err)
		}
	}
	if e.Attach != nil && cfg.LearnProxies && len(cfg.Proxies) < config.MaxCandidates {
		e.learn = e.newLearner(now)
	}
	e.done.Add(1)
	go e.run()
	return e, nil
}

func (e *Edge) newLearner(now int64) *edge.Learner {
	return edge.NewLearner(edge.LearnerConfig{Edge: e.Config, OnEvent: e.opts.OnEvent, Logf: e.opts.Logf, FirstSeq: rand.Uint32()}, now)
}

// attached names the proxy the edge is attached to now.
func (e *Edge) attached() string {
	a := e.attacher()
	if a == nil {
		return e.Config.Proxies[0].Name
	}
	return a.Current()
}

// now is the time on the edge's clock, the one its machines run on.
func (e *Edge) now() int64 { return int64(time.Since(e.epoch)) }

// attachConfig is the probing and switching rule of the edge cfg: a target
// moves only away from a dead proxy.
func attachConfig(cfg *config.Edge, opts Options) edge.AttachConfig {
	c := opts.Attach
	c.OnlyOnFailure = c.OnlyOnFailure || cfg.Role == config.RoleTarget
	return c
}

// run drives the machines until Close, then until the target has left its
// groups.
func (e *Edge) run() {
	defer e.done.Done()
	defer e.closeConns()
	defer close(e.ended)
	timer := time.NewTimer(0)
	defer timer.Stop()
	stopping := false
	if e.Target != nil {
		e.holdChecked(e.now())
	}
	for {
		now := e.now()
		next := int64(1<<63 - 1)
		if e.Target != nil {
			e.send(e.Target.Tick(now))
			next = min(next, e.Target.Next())
			if !stopping {
				next = min(next, e.dueChecks(now))
			}
			if stopping && e.Target.Done() {
				return
			}
		} else if stopping {
			return
		}
		if !stopping && e.Attach != nil {
			for _, p := range e.Attach.Due(now) {
				e.startProbe(p)
			}
			next = min(next, e.Attach.Next())
		}
		if !stopping && e.learn != nil {
			cur, _ := e.Attach.Attached()
			e.send(e.learn.Tick(now, cur))
			next = min(next, e.learn.Next())
		}
		if !stopping && e.admit != nil {
			e.sendUnderlay(e.admit.Tick(now, time.Now()))
			next = min(next, e.admit.Next())
			if len(e.waiting) > 0 {
				if now >= e.homeBy {
					e.addWaiting(now)
				} else {
					next = min(next, e.homeBy)
				}
			}
		}
		timer.Reset(time.Duration(max(next-e.now(), 0))) // no stale tick since Go 1.23
		ctxDone := e.ctx.Done()
		if stopping {
			ctxDone = nil
		}
		select {
		case <-timer.C:
		case <-ctxDone:
			stopping = true
			if e.Target != nil {
				e.send(e.Target.Stop(e.now()))
			}
		case d := <-e.in:
			e.handle(e.now(), d.from, d.b)
		case d := <-e.underlay:
			if !stopping {
				e.admitted(d)
			}
		case p := <-e.probed:
			if !stopping {
				e.observe(p)
			}
		case r := <-e.checkedc:
			if !stopping {
				e.checkResult(r)
			}
		case c := <-e.ctl:
			if stopping {
				c.done <- errors.New("the target is stopping")
				continue
			}
			out, err := c.do(e.now())
			e.send(out)
			c.done <- err
		}
	}
}

// Drain takes the target's group g (the zero Group: every group) out of
// selection for new flows at its JAP, which lets the live flows finish
// until timeout (0: the JAP's default); Status shows it draining, then
// drained. See edge.Target.Drain.
func (e *Edge) Drain(ctx context.Context, g router.Group, timeout time.Duration) error {
	return e.control(ctx, func(now int64) ([]edge.Packet, error) { return e.Target.Drain(now, g, timeout) })
}

// Undrain ends the drain of g (the zero Group: of every group): it joins
// again.
func (e *Edge) Undrain(ctx context.Context, g router.Group) error {
	return e.control(ctx, func(now int64) ([]edge.Packet, error) { return e.Target.Undrain(now, g) })
}

// control has run apply do to the target, and waits for its outcome.
func (e *Edge) control(ctx context.Context, do func(now int64) ([]edge.Packet, error)) error {
	if e.Target == nil {
		return fmt.Errorf("%s is a %s: only a target's groups drain", e.Name, e.Config.Role)
	}
	c := edgeCtl{do: do, done: make(chan error, 1)}
	select {
	case e.ctl <- c:
	case <-e.ended:
		return errors.New("the target has stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-c.done // run answers every request it takes
}

// handle gives a datagram from a control socket to the machine that waits
// for it.
func (e *Edge) handle(now int64, from netip.AddrPort, b []byte) {
	if e.Target != nil {
		if ok, out := e.Target.Handle(now, from, b); ok {
			e.send(out)
			return
		}
	}
	if e.learn != nil {
		e.learn.Handle(now, from, b, e.Attach.Candidates(), func(c edge.Candidate) error {
			if e.admit != nil {
				// CA mode: it becomes a candidate once it admits us.
				e.admit.Add(c.Peer.Endpoint, now)
				return nil
			}
			// Its index in the attacher is the next one: only run adds.
			if err := e.Device.AddPeer(proxyPeer(e.Config, c.Peer, len(e.Attach.Candidates()), false)); err != nil {
				return err
			}
			e.Attach.Add(c, now)
			return nil
		})
	}
}

// startProbe pings a candidate in the background; the outcome comes back
// to run: an answer, or a loss at p.Timeout and then, if the answer comes
// within p.Late more, that late answer.
func (e *Edge) startProbe(p edge.Probe) {
	e.done.Add(1)
	go func() {
		defer e.done.Done()
		ctx, cancel := context.WithTimeout(e.ctx, p.Timeout+p.Late)
		defer cancel()
		type pong struct {
			rtt time.Duration
			err error
		}
		answer := make(chan pong, 1)
		go func() {
			rtt, err := e.Ping(ctx, p.Addr)
			answer <- pong{rtt, err}
		}()
		lost := time.NewTimer(p.Timeout)
		defer lost.Stop()
		var a pong
		select {
		case a = <-answer:
		case <-lost.C:
			select {
			case a = <-answer: // it came as the timer fired (a stall ended): in time
			default:
				e.report(probed{i: p.Index})
				if a = <-answer; a.err == nil {
					e.report(probed{i: p.Index, ok: true, late: true, rtt: a.rtt})
				}
				return
			}
		}
		e.report(probed{i: p.Index, ok: a.err == nil, rtt: a.rtt})
	}()
}

// report hands a probe's outcome to run, unless the edge has stopped.
func (e *Edge) report(p probed) {
	select {
	case e.probed <- p:
	case <-e.ended:
	}
}

// observe applies what a probe's outcome decides: a reset, a move, and a
// target's joins through its new proxy.
func (e *Edge) observe(p probed) {
	now := e.now()
	var act edge.Action
	if p.late {
		act = e.Attach.Late(p.i, p.rtt, now)
	} else {
		act = e.Attach.Observe(p.i, p.ok, p.rtt, now)
	}
	if act.Reset {
		e.Device.ResetPeer(proxyPeer(e.Config, e.Attach.Candidates()[p.i].Peer, p.i, act.Current))
	}
	m := act.Move
	if m == nil {
		return
	}
	if err := e.moveTo(m); err != nil {
		// The attacher asks again at the next outcome.
		if e.opts.Logf != nil {
			e.opts.Logf("attach: move %q → %q: %v", m.From.Name, m.To.Name, err)
		}
		return
	}
	e.Attach.Applied(*m)
	if e.Target != nil {
		e.send(e.Target.Moved(now, m.From.Addr))
	}
	if e.opts.OnEvent != nil {
		e.opts.OnEvent(m.Event(e.Name))
	}
}

// send sends control messages from the edge's overlay address of each
// one's family. A message that cannot be sent counts as lost: the machines
// retry.
func (e *Edge) send(pkts []edge.Packet) {
	for _, p := range pkts {
		c, err := e.conn(p.To.Addr())
		if err != nil {
			if e.opts.Logf != nil {
				e.opts.Logf("%s: control socket: %v", e.Name, err)
			}
			continue
		}
		c.WriteTo(p.Data, net.UDPAddrFromAddrPort(p.To))
	}
}

// conn is the control socket of a's family, opened at the first use: on
// the netstack or, for a kernel TUN, the host's own stack. A goroutine
// reads it into e.in.
func (e *Edge) conn(a netip.Addr) (net.PacketConn, error) {
	if c := e.conns[a.Is4()]; c != nil {
		return c, nil
	}
	la := e.Config.AddrLike(a)
	if !la.IsValid() {
		return nil, fmt.Errorf("no overlay address of the family of %s", a)
	}
	laddr := netip.AddrPortFrom(la, 0)
	var c net.PacketConn
	var err error
	if e.Host.Net == nil {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(laddr))
	} else {
		c, err = e.Host.Net.ListenUDPAddrPort(laddr)
	}
	if err != nil {
		return nil, err
	}
	e.conns[a.Is4()] = c
	e.done.Add(1)
	go e.read(c)
	return c, nil
}

// datagram is what a control socket read, and from where.
type datagram struct {
	from netip.AddrPort
	b    []byte
}

// read passes what c reads to run, until c closes.
func (e *Edge) read(c net.PacketConn) {
	defer e.done.Done()
	buf := make([]byte, 1<<16)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		select {
		case e.in <- datagram{netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port()), bytes.Clone(buf[:n])}:
		case <-e.ended:
			return
		}
	}
}

func (e *Edge) closeConns() {
	for _, c := range e.conns {
		// A netstack socket's reader may not wake at Close alone.
		c.SetReadDeadline(time.Now())
		c.Close()
	}
}

// movedPrefixes are what emulated anycast moves between proxies.
func movedPrefixes(cfg *config.Edge) []netip.Prefix {
	return append(append([]netip.Prefix(nil), cfg.AnycastPrefix...), cfg.OverlayPrefix...)
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

// moveTo puts the moved prefixes on the proxy m moves to, leaving the one
// it moves from with only its own addresses (so probes keep reaching every
// proxy).
func (e *Edge) moveTo(m *edge.Move) error {
	return e.Device.UpdateAllowedIPs([]tunnel.Peer{
		proxyPeer(e.Config, m.To.Peer, m.ToIdx, true),
		proxyPeer(e.Config, m.From.Peer, m.FromIdx, false),
	})
}

func (e *Edge) closeUAPI() {
	if e.uapi != nil {
		e.uapi.Close()
	}
}

// Close leaves the groups and stops the edge.
func (e *Edge) Close() {
	e.once.Do(func() {
		e.cancel()
		e.done.Wait()
		e.closeUAPI()
		// The device closes the host interface; a kernel TUN removes its
		// routes and addresses first.
		e.Device.Close()
	})
}
