package overlay

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pias-net/pias/router"
)

// Member is a proxy of the overlay as every proxy knows it.
type Member struct {
	Name      string
	Addr      netip.Addr // IPv4 overlay address: where its control port listens
	Addr6     netip.Addr // IPv6 overlay address, if it has one
	Cluster   string
	PublicKey [32]byte       // WireGuard public key
	Endpoint  netip.AddrPort // WireGuard UDP address
}

// Addrs lists m's overlay addresses.
func (m *Member) Addrs() []netip.Addr {
	if m.Addr6.IsValid() {
		return []netip.Addr{m.Addr, m.Addr6}
	}
	return []netip.Addr{m.Addr}
}

// EdgePolicy is what a proxy lets one edge do: which groups it may join.
type EdgePolicy struct {
	Name      string
	PublicKey [32]byte // its WireGuard key: other proxies learn it admits the edge
	Groups    []router.Group
}

// ProxyConfig is what a proxy's control plane needs.
type ProxyConfig struct {
	Self Member
	// Members are the configured proxies (self may be included): a static
	// full mesh, or, with a MeshKey, seeds through which this proxy joins.
	Members []Member
	// MeshKey, if set, lets this proxy admit newcomers that prove it and
	// join through its seeds itself (see members.go).
	MeshKey []byte
	// AddPeer makes a proxy learned at run time a WireGuard peer (or
	// updates its endpoint); keepalive asks for a persistent keepalive,
	// which also starts the handshake at once.
	AddPeer func(m Member, keepalive bool) error
	// SendUnderlay sends a datagram from the WireGuard UDP socket, outside
	// the tunnels: the admission of newcomers.
	SendUnderlay func(to netip.AddrPort, pkt []byte) error
	// Health are the timers of proxy health monitoring (see health.go).
	Health HealthConfig
	// Edges maps each accepted edge's overlay addresses to its policy.
	Edges       map[netip.Addr]*EdgePolicy
	Replicas    int // RAPs per group (k)
	ControlPort uint16
	Router      *router.Router
	// Send hands a complete IP packet to WireGuard.
	Send func(pkt []byte) error
	// Now is a monotonic clock in nanoseconds, the router's time base.
	Now func() int64
	// OnEvent, if set, is told what the control plane did (logs, the demo).
	OnEvent func(Event)

	// TargetTimeout: a target silent this long is dropped; default 15s. A
	// target that says how often it sends keepalives is dropped sooner,
	// after four and a half of its intervals (three lost, the fourth late).
	TargetTimeout time.Duration
	RegisterTTL   time.Duration // soft-state lifetime at RAPs; default 30s
	// Inaccuracy is how far, in percent of the count last reported, a
	// group's target count at this JAP may drift before the JAP tells the
	// group's RAPs again (two-tier membership). Crossing zero is always
	// told at once, and every count is refreshed every RegisterTTL/3. Zero
	// means the default, 25; a negative value reports every change.
	Inaccuracy   float64
	CacheTTL     time.Duration // how long IAPs may cache an answer; default 10s
	ResolveRetry time.Duration // ask the next RAP after this; default 500ms
}

// Event is a control-plane happening worth telling a person about.
type Event struct {
	Proxy  string
	Kind   string // "join", "leave", "expire", "register", "resolve", "resolved", "refuse", "dead", "alive"; edges: "move", "learned"
	Group  router.Group
	Target netip.AddrPort // join, leave, expire
	Name   string         // the target's or JAP's name; dead, alive: the proxy's
	RAPs   []string       // register, resolve: the group's RAPs
	JAPs   []router.JAP   // resolved
	Reason string         // refuse
}

type target struct {
	name     string
	port     uint16
	lastSeen int64
	epoch    uint32        // of its last join here (see Message.Incarnation)
	weight   int           // its share of load (Message.Weight)
	timeout  time.Duration // silent this long, it is dropped
}

type rapEntry struct {
	name    string
	targets int
	weight  int
	policy  router.Policy
	since   int64 // first registered (while the entry lived)
	expires int64
}

type pendingResolve struct {
	seq     uint32
	tries   int
	retryAt int64
}

// Proxy is the control plane of one proxy: JAP (targets that joined here and
// their registration with RAPs), RAP (which JAPs serve a group) and IAP
// (resolving groups for the router).
type Proxy struct {
	cfg       ProxyConfig
	members   atomic.Pointer[memberTable] // every known proxy, self included
	admission joinState                   // this proxy's admission through its seeds (guarded by mu)
	tblMu     sync.Mutex                  // serializes writes of members (and cfg.Self)
	mu        sync.Mutex
	seq       uint32
	local     map[router.Group]map[netip.Addr]*target // JAP: targets joined here
	policy    map[router.Group]router.Policy          // JAP: the policy of each group joined here
	imposed   map[router.Group]imposedPolicy          // JAP: policies RAPs told us after a conflict
	reported  map[router.Group]*report                // JAP: what each group's RAPs were last told
	regMu     sync.Mutex                              // orders registrations: a later count is never sent before an earlier one
	rap       map[router.Group]map[netip.Addr]*rapEntry
	pending   map[router.Group]*pendingResolve
	stats     ProxyStats
	// noTargetSent: when each IAP was last told this JAP has no target for
	// a group (guarded by mu).
	noTargetSent map[noTargetKey]int64
	// addedAt: when each proxy learned at run time was added (guarded by mu).
	addedAt map[string]int64
	// relays: resolves this proxy passes on for proxies cut off from RAPs
	// (guarded by mu), by the seq of its own ask.
	relays map[uint32]resolveRelay
	// nextDigest: when this proxy next compares member lists (guarded by mu).
	nextDigest int64
	// reregisterAt: when to register every local group again (guarded by
	// mu; 0: no need).
	reregisterAt int64
	// admits: the edge keys each member admits (guarded by mu); ownAdmits:
	// this proxy's (see admits.go).
	admits    map[string]*admitSet
	ownAdmits [][32]byte

	health *health
	live   atomic.Pointer[[]string] // names of live proxies: the RAP candidates
	memMu  sync.Mutex               // serializes membership changes
}

// ProxyStats counts control-plane work, for tests and status.
type ProxyStats struct {
	ResolvesSent, ResolvesAnswered, Registers, Joins uint64
	// RegistersSent counts registrations this proxy sent as JAP (one per
	// RAP, itself included); RegistersSuppressed counts target-count
	// changes it did not report because they stayed within Inaccuracy.
	RegistersSent, RegistersSuppressed uint64
	// ControlSent and ControlReceived count control messages this proxy
	// sent to or got from other nodes (edges included), health included.
	ControlSent, ControlReceived uint64
	// Health: probes sent (own and relayed), probe requests sent, deaths
	// declared by this proxy, Alive announcements sent by this proxy.
	Probes, ProbeReqs, FailsDeclared, AlivesSent uint64
	// MembershipChanges counts changes of the live proxy set applied here.
	MembershipChanges uint64
}

// NewProxy checks cfg and returns a proxy control plane.
func NewProxy(cfg ProxyConfig) (*Proxy, error) {
	if cfg.Router == nil || cfg.Send == nil || cfg.Now == nil {
		return nil, errors.New("overlay: proxy needs a router, a sender and a clock")
	}
	if !cfg.Self.Addr.Is4() {
		return nil, fmt.Errorf("overlay: proxy %s has no IPv4 overlay address", cfg.Self.Name)
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 2
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.TargetTimeout, 15*time.Second)
	def(&cfg.RegisterTTL, 30*time.Second)
	def(&cfg.CacheTTL, 10*time.Second)
	def(&cfg.ResolveRetry, 500*time.Millisecond)
	switch {
	case cfg.Inaccuracy == 0:
		cfg.Inaccuracy = DefaultInaccuracy
	case cfg.Inaccuracy < 0:
		cfg.Inaccuracy = 0
	}
	p := &Proxy{
		cfg:      cfg,
		local:    map[router.Group]map[netip.Addr]*target{},
		reported: map[router.Group]*report{},
		rap:      map[router.Group]map[netip.Addr]*rapEntry{},
		pending:  map[router.Group]*pendingResolve{},
		admits:   map[string]*admitSet{},

		ownAdmits: ownAdmits(cfg.Edges),
	}
	members := []Member{cfg.Self}
	for _, m := range cfg.Members {
		if m.Name != cfg.Self.Name {
			members = append(members, m)
			p.admission.seeds = append(p.admission.seeds, m)
		}
	}
	tbl := newMemberTable(members)
	p.members.Store(tbl)
	live := slices.Clone(tbl.names)
	p.live.Store(&live)
	cfg.Router.SetProxies(tbl.addrs())
	p.health = newHealth(cfg.Health, cfg.Self, members, cfg.Now, func(to netip.Addr, m *Message) {
		p.sendTo(to, m)
	}, p.membershipChanged)
	p.cfg.Health = p.health.cfg
	return p, nil
}

// RAPs names the live members that are the group's rendezvous proxies.
func (p *Proxy) RAPs(g router.Group) []string {
	return RAPs(g, *p.live.Load(), p.cfg.Replicas)
}

// Live names the proxies this proxy believes alive (suspects included),
// itself included, sorted.
func (p *Proxy) Live() []string { return slices.Clone(*p.live.Load()) }

// Members is a snapshot of every proxy's health as this proxy sees it: this
// proxy first, then the others by name.
func (p *Proxy) Members() []MemberInfo { return p.health.snapshot() }

// ProbeInterval is how often HealthTick must be called.
func (p *Proxy) ProbeInterval() time.Duration { return p.cfg.Health.ProbeInterval }

// HealthTick runs one round of health monitoring: call it every
// ProbeInterval. The first call announces this proxy (Alive).
func (p *Proxy) HealthTick() { p.health.tick() }

// Stats returns the control-plane counters.
func (p *Proxy) Stats() ProxyStats {
	p.health.mu.Lock()
	hs := p.health.stats
	p.health.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.Probes, st.ProbeReqs, st.FailsDeclared, st.AlivesSent = hs.probes, hs.probeReqs, hs.fails, hs.alives
	return st
}

// membershipChanged applies a change of the live proxy set: RAPs move by
// the hash over live proxies, the router stops using dead JAPs and forgets
// cached JAP lists naming them, RAP state of dead JAPs and of groups this
// proxy no longer is a RAP of is dropped, and every local group is
// registered again at once with its (maybe new) RAPs. A refutation of this
// proxy's own death registers every local group again too: the RAPs that
// held it dead dropped its entries.
func (p *Proxy) membershipChanged(c change) {
	p.memMu.Lock()
	defer p.memMu.Unlock()
	live := p.health.live()
	cut := p.health.unreachableAddrs()
	names := make([]string, len(live))
	addrs := make([]netip.Addr, 0, len(live))
	for i, m := range live {
		names[i] = m.Name
		// A proxy cut off from this one is no JAP for its new flows.
		if !cut[m.Addr] {
			addrs = append(addrs, m.Addr)
		}
	}
	p.live.Store(&names)
	p.cfg.Router.SetProxies(addrs)
	for _, m := range c.unreachable {
		p.cfg.Router.ForgetJAP(m.Addr)
		p.emit(Event{Kind: "unreachable", Name: m.Name})
	}
	for _, m := range c.reachable {
		p.emit(Event{Kind: "reachable", Name: m.Name})
	}
	if c.onlyReach() {
		return
	}
	gone := append(slices.Clone(c.dead), c.reset...)
	for _, m := range gone {
		p.cfg.Router.ForgetJAP(m.Addr)
	}
	p.mu.Lock()
	p.stats.MembershipChanges++
	for g, japs := range p.rap {
		if !slices.Contains(RAPs(g, names, p.cfg.Replicas), p.cfg.Self.Name) {
			delete(p.rap, g)
			continue
		}
		for _, m := range gone {
			delete(japs, m.Addr)
		}
		if len(japs) == 0 {
			delete(p.rap, g)
		}
	}
	groups := make([]router.Group, 0, len(p.local))
	var mine []Message // a TypeMoved for every target joined here
	for g, ts := range p.local {
		groups = append(groups, g)
		for addr, t := range ts {
			mine = append(mine, Message{Type: TypeMoved, Group: g, Name: t.name, Target: addr, Incarnation: t.epoch})
		}
	}
	p.mu.Unlock()
	for _, m := range c.dead {
		p.emit(Event{Kind: "dead", Name: m.Name})
	}
	for _, m := range c.added {
		p.emit(Event{Kind: "alive", Name: m.Name})
	}
	back := append(slices.Clone(c.revived), c.reset...)
	p.forgetAdmits(back)
	for _, m := range back {
		p.syncMissed(m)
		p.emit(Event{Kind: "alive", Name: m.Name})
		// A proxy cut off for a while may still hold targets that have
		// joined here since: it missed the TypeMoved then, so tell it now.
		for i := range mine {
			p.sendTo(m.Addr, &mine[i])
		}
	}
	// New RAPs must learn everything: always send, drift or not.
	for _, g := range groups {
		p.register(g, true)
	}
	if len(c.revived)+len(c.reset) > 0 || c.refuted {
		// And once more a little later: a proxy that restarted has a new
		// WireGuard session with us, but until its first packet on it
		// arrives our side still sends on the old one, which it cannot
		// read, and the registrations above may be lost. (After a
		// refutation, RAPs that hear our registration before our Alive
		// would not take it.)
		p.mu.Lock()
		p.reregisterAt = p.cfg.Now() + int64(reregisterAfter)
		p.mu.Unlock()
	}
}

// reregisterAfter is when a JAP registers everything again after a proxy
// came back (see membershipChanged).
const reregisterAfter = time.Second

func (p *Proxy) emit(e Event) {
	if p.cfg.OnEvent != nil {
		e.Proxy = p.cfg.Self.Name
		p.cfg.OnEvent(e)
	}
}

// send encodes m and sends it from src to dst through WireGuard.
func (p *Proxy) send(src, dst netip.AddrPort, m *Message) {
	payload, err := m.AppendBinary(nil)
	if err != nil {
		return
	}
	buf := make([]byte, 60+8+len(payload))
	n, err := router.BuildUDP(buf, src, dst, payload)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.stats.ControlSent++
	p.mu.Unlock()
	p.cfg.Send(buf[:n])
}

// sendTo sends m to the control port of the node at a.
func (p *Proxy) sendTo(a netip.Addr, m *Message) {
	p.send(p.selfPort(), netip.AddrPortFrom(a, p.cfg.ControlPort), m)
}

func (p *Proxy) selfPort() netip.AddrPort {
	return netip.AddrPortFrom(p.cfg.Self.Addr, p.cfg.ControlPort)
}

// HandleControl takes a control message the router classified as ours.
func (p *Proxy) HandleControl(src, dst netip.AddrPort, payload []byte) {
	var m Message
	if err := m.UnmarshalBinary(payload); err != nil {
		return
	}
	fromProxy := p.isProxy(src.Addr())
	p.mu.Lock()
	p.stats.ControlReceived++
	p.mu.Unlock()
	switch m.Type {
	case TypeProbe, TypeProbeAck, TypeProbeReq, TypeFail, TypeAlive:
		if fromProxy && dst.Addr() == p.cfg.Self.Addr {
			p.health.handle(src.Addr(), &m)
		}
	case TypeJoin, TypeLeave, TypeKeepalive:
		// Edges speak to the group's anycast address; emulated anycast made
		// this proxy the one that hears them, so it becomes their JAP. A
		// target that moved away also tells its old JAP, at the JAP's own
		// address, to drop it (no answer: it has already moved).
		if fromProxy {
			return
		}
		if m.Type == TypeLeave && dst.Addr() == p.cfg.Self.Addr {
			p.leave(src.Addr(), m.Group, "leave")
			return
		}
		if dst.Addr() != m.Group.Addr {
			return
		}
		p.handleEdge(src, dst, &m)
	case TypeRegister:
		if fromProxy {
			p.handleRegister(src.Addr(), &m)
		}
	case TypeResolve:
		if fromProxy {
			p.handleResolve(src, &m)
		}
	case TypeResolveReply:
		if fromProxy {
			p.handleResolveReply(&m)
		}
	case TypeNoTarget:
		if fromProxy {
			p.cfg.Router.ForgetJAPFor(m.Group, src.Addr())
		}
	case TypeDigest:
		if fromProxy && dst.Addr() == p.cfg.Self.Addr {
			p.handleDigest(src.Addr(), &m)
		}
	case TypePolicy:
		if fromProxy {
			p.handlePolicy(src.Addr(), &m)
		}
	case TypeMember:
		if fromProxy && dst.Addr() == p.cfg.Self.Addr {
			p.handleMember(src.Addr(), &m)
		}
	case TypeAdmitsReq:
		if fromProxy && dst.Addr() == p.cfg.Self.Addr {
			p.handleAdmitsReq(src.Addr())
		}
	case TypeAdmits:
		if fromProxy && dst.Addr() == p.cfg.Self.Addr {
			p.handleAdmits(src.Addr(), &m)
		}
	case TypeProxiesReq:
		// An edge asks which proxies would admit it (it learns them), at
		// this proxy's address of its own family.
		if !fromProxy && (dst.Addr() == p.cfg.Self.Addr || dst.Addr() == p.cfg.Self.Addr6) {
			p.handleProxiesReq(src, dst, &m)
		}
	case TypeMoved:
		// Another proxy is now this target's JAP: drop it here if it was
		// ours, whether or not it could tell us itself.
		if fromProxy && p.joinedBefore(m.Target, m.Group, m.Incarnation) {
			p.leave(m.Target, m.Group, "moved")
		}
	}
}

// Tick runs the timers: resolve retries, silent targets, registration refresh
// and soft-state expiry. Call it often (every 100 ms or so).
func (p *Proxy) Tick() {
	now := p.cfg.Now()
	p.joinTick(now)
	p.digestTick(now)
	p.admitsTick(now)
	type gone struct {
		g    router.Group
		addr netip.Addr
	}
	var retry []router.Group
	var expired []gone
	var refresh []router.Group
	p.mu.Lock()
	for g, pr := range p.pending {
		if now >= pr.retryAt {
			if pr.tries >= 2*p.cfg.Replicas {
				delete(p.pending, g) // the router times the queue out
				continue
			}
			retry = append(retry, g)
		}
	}
	for g, ts := range p.local {
		for addr, t := range ts {
			if now-t.lastSeen > int64(t.timeout) {
				expired = append(expired, gone{g, addr})
			}
		}
	}
	again := p.reregisterAt != 0 && now >= p.reregisterAt
	if again {
		p.reregisterAt = 0
	}
	for g, r := range p.reported {
		if again || now-r.at > int64(p.cfg.RegisterTTL/3) {
			refresh = append(refresh, g)
		}
	}
	for g, japs := range p.rap {
		for addr, e := range japs {
			if e.expires <= now {
				delete(japs, addr)
			}
		}
		if len(japs) == 0 {
			delete(p.rap, g)
		}
	}
	p.mu.Unlock()
	for _, g := range retry {
		p.mu.Lock()
		pr := p.pending[g]
		p.mu.Unlock()
		if pr != nil {
			p.askRAP(g, pr)
		}
	}
	for _, e := range expired {
		p.leave(e.addr, e.g, "expire")
	}
	// The slow refresh: RAP state is soft, and a count within the
	// inaccuracy threshold is brought up to date here.
	for _, g := range refresh {
		p.report(g, true)
	}
}
