package overlay

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pias-net/pias/admit"
	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/router"
)

// Clock is the control plane's time: a monotonic clock for every timer and
// soft state, and a wall clock only where another host must agree on the
// time (hello timestamps, a proxy's incarnation at start).
type Clock interface {
	Now() int64 // monotonic nanoseconds: the router's time base
	Wall() time.Time
}

// Transport is how a proxy's control plane reaches other nodes.
type Transport interface {
	// Send sends a control message from src to dst through WireGuard.
	// payload is the caller's again when Send returns.
	Send(src, dst netip.AddrPort, payload []byte)
	// Forward sends a complete IP packet the router released (packets
	// that waited for a resolve).
	Forward(pkt []byte)
	// SendUnderlay sends a datagram from the WireGuard UDP socket, outside
	// the tunnels: the admission of newcomers.
	SendUnderlay(to netip.AddrPort, pkt []byte)
	// AddPeer makes a proxy learned at run time a WireGuard peer (or
	// updates its endpoint); keepalive asks for a persistent keepalive,
	// which also starts the handshake at once. It must not call back into
	// the proxy.
	AddPeer(m Member, keepalive bool) error
}

// Redialer is a Transport that can start a session with a proxy afresh.
// Two proxies that call each other at the same moment may each answer the
// other while wireguard-go's handshake workers run both exchanges at once:
// one side is then left with a session whose answers it cannot read (its
// peer sends to an index it dropped), and wireguard-go starts again only
// after 15 s of silence; or neither has a session until its retry 5 s
// later. The overlay sees either sooner, as a silence (node/redial.go).
type Redialer interface {
	// Redial is handed the members this proxy cannot reach (alive for
	// others, silent here) as each becomes so, and every redialEvery while
	// it stays so; and those never heard from as each becomes a suspect,
	// before a helper's answer (which might not come back either) or a
	// death. A session that began within a member's silence carried
	// nothing from it, and is to be started afresh; an older one is on a
	// cut path, or to a dead proxy, and is left alone (it works again the
	// moment the path does); what to do without one is the transport's
	// call. It must not call back into the proxy. A redial may drop what
	// was sent to the member, so the proxy sends it again what it may
	// have missed once the member answers (change.missed); with a
	// Redialer, so it does for a member heard but no longer answering.
	Redial(silent []SilentMember)
}

// SilentMember is a member this proxy has not heard from for Silent (since
// its clock's zero, if never).
type SilentMember struct {
	Member Member
	Silent time.Duration
}

// redialEvery is how often a member that stays unreachable is handed to
// the Redialer again: a fresh handshake is a round trip, and one that
// crossed the peer's own again is tried once more.
const redialEvery = 2 * time.Second

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

// EdgePolicy is what a proxy lets one edge do: which groups it may join,
// whether its targets may set those groups' policy, and how much weight
// each may ask for.
type EdgePolicy struct {
	Name      string
	PublicKey [32]byte // its WireGuard key: other proxies learn it admits the edge
	Groups    []router.Group
	// SetsPolicy: its targets' joins set their group's policy. A target
	// without it takes the group's own (see Proxy.join), so that one
	// admitted target cannot impose a policy on the others' traffic.
	SetsPolicy bool
	// MaxWeight bounds the weight one of its joins may ask for; 0 means 1.
	// A join asking for more is refused.
	MaxWeight int
	// Rights are the groups an edge admitted by certificate may join (its
	// certificate's), and Role its role there; Groups is then empty.
	Rights []cert.GroupRight
	Role   cert.Role
}

// allows reports whether e may join g.
func (e *EdgePolicy) allows(g router.Group) bool {
	return slices.Contains(e.Groups, g) || cert.AllowsGroup(e.Rights, g)
}

// isTarget reports whether e may join groups at all.
func (e *EdgePolicy) isTarget() bool {
	return len(e.Groups) > 0 || e.Role == cert.RoleTarget
}

// maxWeight is the most weight e's joins may ask for.
func (e *EdgePolicy) maxWeight() uint32 {
	return uint32(min(max(e.MaxWeight, 1), MaxWeight))
}

// ProxyConfig is what a proxy's control plane needs.
type ProxyConfig struct {
	Self Member
	// Members are the configured proxies (self may be included): a static
	// full mesh, or, with a MeshKey, seeds through which this proxy joins.
	Members []Member
	// Shared, if set, stands for Members (which must then be empty): the
	// same proxies, Self among them, in a table built once for every proxy
	// configured with it. Each proxy copies it only when it learns a
	// proxy, so a simulated full mesh of N proxies holds one table, not N.
	Shared *MemberList
	// MeshKey, if set, lets this proxy admit newcomers that prove it and
	// join through its seeds itself (see members.go).
	MeshKey []byte
	// Health are the timers of proxy health monitoring (see health.go).
	Health HealthConfig
	// Edges maps each accepted edge's overlay addresses to its policy
	// (static mode).
	Edges map[netip.Addr]*EdgePolicy
	// Certs, if set, is CA mode: nodes are admitted by certificate
	// (certs.go). Then MeshKey, Members (but Self) and Edges are empty, and
	// Transport must be an EdgeTransport.
	Certs       *CertConfig
	Replicas    int // RAPs per group (k)
	ControlPort uint16
	Router      *router.Router
	Clock       Clock
	Transport   Transport
	// Rand is the proxy's only source of randomness; nil: one seeded from
	// the proxy's name, so that a run can be repeated exactly.
	Rand *rand.Rand
	// OnEvent, if set, is told what the control plane did (logs, the
	// demo). It runs on the caller's goroutine and must not call back in.
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
	// DigestEvery is how often this proxy compares member lists with a
	// live proxy at random (anti-entropy); 0: 2 s. Negative: never, for a
	// simulator whose proxies know only part of the mesh on purpose.
	DigestEvery time.Duration
	// JoinRate and JoinBurst bound the joins and leaves that change
	// something (a new target, port, weight or policy; a target gone) one
	// edge address may make here: JoinBurst at once (at least twice its
	// groups), then JoinRate a second. A join past it is refused, saying
	// when to retry; a leave past it is delayed. Defaults DefaultJoinRate
	// and DefaultJoinBurst.
	JoinRate  float64
	JoinBurst int
}

// Defaults of ProxyConfig's JoinRate and JoinBurst.
const (
	DefaultJoinRate  = 2
	DefaultJoinBurst = 16
)

// Proxy is the control plane of one proxy. It composes four parts, each
// owning its state and its lock:
//
//   - membership and health (members.go, health.go, admits.go): which
//     proxies exist and which are alive;
//   - JAP (jap.go): the targets that joined here and their registrations;
//   - RAP (rap.go): which JAPs serve the groups this proxy is a RAP of;
//   - IAP (iap.go): resolves for the router.
//
// Goroutines. The entry points that change state (HandleControl,
// HandleUnderlay, Resolve, NoTarget, Tick, HealthTick, SetEndpoint) are
// meant for one goroutine, the node's control goroutine; they serialize on
// ctl all the same, so tests may call from several. The readers (Stats,
// Live, Known, Members, RAPs, RAPTable, Admitting) may be called from any
// goroutine (status, tests) and take only the lock of the part they read.
// Nothing here starts a goroutine, reads the system clock, or touches a
// socket: time is the Clock, the network the Transport.
//
// Lock ordering: ctl, then at most one of members.mu, health.mu, jap.mu,
// rap.mu, iap.mu. A part never calls out (another part, the router, the
// transport, OnEvent) while holding its own lock. What an entry point
// sends is queued in outbox and sent when it returns, after every part's
// lock is released; messages to this proxy itself are handled then, in
// order, so no handler re-enters another.
type Proxy struct {
	// First what every control message touches, together: in a simulated
	// overlay of 10,000 proxies each message goes to a proxy out of the
	// cache, and every cache line read is a miss.
	ctl    sync.Mutex
	health *health
	net    Transport
	outbox []outgoing // guarded by ctl
	wire   []byte     // guarded by ctl: where flush encodes a message
	// edges: the edges this proxy admits, by overlay address: cfg.Edges,
	// and those admitted by certificate. banned: proxies cut off
	// (revoked). certs: CA mode (nil in static mode). Guarded by ctl.
	banned map[string]bool
	edges  map[netip.Addr]*EdgePolicy
	certs  *certState

	cfg   ProxyConfig
	clock Clock
	rng   *rand.Rand // guarded by ctl
	seq   uint32     // guarded by ctl: the last seq of a question sent

	mem   members
	jap   jap
	rap   rap
	iap   iap
	live  atomic.Pointer[liveView] // the live proxies: the RAP candidates
	rapc  rapCache
	stats counters
}

// rapCache keeps each group's RAPs over one live list: hashing every live
// proxy for every Register a RAP takes costs 0.4 ms at 10,000 proxies.
type rapCache struct {
	mu   sync.Mutex
	live *liveView    // the list the entries were computed over
	tbl  *memberTable // the table their addresses come from
	m    map[router.Group]rapSet
}

// rapSet is a group's RAPs, by name and IPv4 overlay address: a JAP
// registers with them at every change, and looking the names up each
// time was a tenth of its cost.
type rapSet struct {
	names []string
	addrs []netip.Addr
}

// maxRAPCache bounds rapCache: when full, it starts again.
const maxRAPCache = 4096

// maxOutboxKept is the most room for queued messages a proxy keeps between
// entry points.
const maxOutboxKept = 256

// outgoing is a control message an entry point sends when it returns.
type outgoing struct {
	src, dst netip.AddrPort
	seq      uint32
	m        Msg
}

// counters count control-plane work (see ProxyStats).
type counters struct {
	resolvesSent, resolvesAnswered, registers, joins           atomic.Uint64
	registersSent, registersSuppressed                         atomic.Uint64
	controlSent, controlReceived, membershipChanges, malformed atomic.Uint64
	refused                                                    [typeEnd]atomic.Uint64 // by type (rules.go)
	helloRefused                                               atomic.Uint64          // CA mode (certs.go)
	sent, received                                             [typeEnd]atomic.Uint64 // control messages by type
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
	// Malformed counts control messages that did not parse; Refused, by
	// type, those whose sender may not send them, or not to where they
	// were sent (rules.go).
	Malformed uint64
	Refused   map[Type]uint64
	// Health: probes sent (own and relayed), probe requests sent, deaths
	// declared by this proxy, Alive announcements sent by this proxy.
	Probes, ProbeReqs, FailsDeclared, AlivesSent uint64
	// MembershipChanges counts changes of the live proxy set applied here.
	MembershipChanges uint64
	// Sent and Received count ControlSent and ControlReceived by type.
	Sent, Received map[Type]uint64
	// Deaths counts the proxies that turned dead here, whoever declared
	// it; DetectTime sums, over them, the time from the last word this
	// proxy heard from each to its death here.
	Deaths     uint64
	DetectTime time.Duration
	// HellosRefused counts, in CA mode, the hellos of nodes that proved
	// their key and were refused, and told why (certs.go).
	HellosRefused uint64
}

// NewProxy checks cfg and returns a proxy control plane.
func NewProxy(cfg ProxyConfig) (*Proxy, error) {
	if cfg.Router == nil || cfg.Transport == nil || cfg.Clock == nil {
		return nil, errors.New("overlay: proxy needs a router, a transport and a clock")
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
	if cfg.DigestEvery == 0 {
		cfg.DigestEvery = digestEvery
	}
	if cfg.JoinRate <= 0 {
		cfg.JoinRate = DefaultJoinRate
	}
	if cfg.JoinBurst <= 0 {
		cfg.JoinBurst = DefaultJoinBurst
	}
	switch {
	case cfg.Inaccuracy == 0:
		cfg.Inaccuracy = DefaultInaccuracy
	case cfg.Inaccuracy < 0:
		cfg.Inaccuracy = 0
	}
	if cfg.Health.Incarnation == 0 {
		// The wall clock in seconds, so that a restarted proxy outranks
		// its past self.
		cfg.Health.Incarnation = uint32(cfg.Clock.Wall().Unix())
	}
	rng := cfg.Rand
	if rng == nil {
		seed := fnvAdd(uint64(fnvOffset), cfg.Self.Name)
		rng = rand.New(rand.NewPCG(seed, 0x70696173))
	}
	p := &Proxy{cfg: cfg, clock: cfg.Clock, net: cfg.Transport, rng: rng, edges: maps.Clone(cfg.Edges), banned: map[string]bool{}}
	if p.edges == nil {
		p.edges = map[netip.Addr]*EdgePolicy{}
	}
	if cfg.Certs != nil {
		if cfg.MeshKey != nil || len(cfg.Edges) > 0 {
			return nil, errors.New("overlay: CA mode admits by certificate: no mesh key, no static edges")
		}
		if _, ok := cfg.Transport.(EdgeTransport); !ok {
			return nil, errors.New("overlay: CA mode needs a transport that adds edges")
		}
		cs, err := newCertState(cfg.Certs, cfg.Self.Name)
		if err != nil {
			return nil, err
		}
		p.certs = cs
	}
	p.jap.init()
	p.rap.init()
	p.iap.init()
	var tbl *memberTable
	var members []Member
	if cfg.Shared != nil {
		if len(cfg.Members) > 0 {
			return nil, errors.New("overlay: Members and Shared both set")
		}
		if m, ok := cfg.Shared.t.byName[cfg.Self.Name]; !ok || m != cfg.Self {
			return nil, fmt.Errorf("overlay: proxy %s is not in its shared member list as configured", cfg.Self.Name)
		}
		tbl = cfg.Shared.t
		if cfg.MeshKey != nil {
			members = tbl.list() // for seeds; health numbers the shared roster
		}
	} else {
		members = []Member{cfg.Self}
		for _, m := range cfg.Members {
			if m.Name != cfg.Self.Name {
				members = append(members, m)
			}
		}
		tbl = newMemberTable(members)
	}
	var seeds []Member
	if cfg.MeshKey != nil {
		// Only a proxy that joins through seeds says hello to them: a full
		// mesh of N proxies kept N copies of every record for nothing.
		for _, m := range members {
			if m.Name != cfg.Self.Name {
				seeds = append(seeds, m)
			}
		}
	}
	p.mem.init(cfg.Self, tbl, seeds, cfg.Edges)
	var ros *roster
	if cfg.Shared != nil {
		ros = cfg.Shared.r
	}
	p.health = newHealth(cfg.Health, cfg.Self, members, ros, cfg.Clock.Now, p.sendTo, p.membershipChanged)
	if rd, ok := cfg.Transport.(Redialer); ok {
		p.health.redial = rd.Redial
	}
	p.cfg.Health = p.health.cfg
	// Every known proxy is live at first: the table's names are the live
	// ones (shared, with the table, by proxies of one MemberList).
	live := p.health.view()
	live.names = p.mem.table().names
	p.live.Store(live)
	cfg.Router.SetProxySet(live, false)
	if p.certs != nil && len(cfg.Certs.Seeds) > 0 {
		p.certs.client = admit.NewClient(admit.ClientConfig{
			Keys: p.certs.keys, Pool: p.certs.pool, Cert: p.certs.selfRaw,
			Extra:   p.selfRecord,
			Revoked: p.certs.revokedList,
			Seed:    p.rng.Uint64(),
		})
		for _, s := range cfg.Certs.Seeds {
			p.certs.client.Add(s, cfg.Clock.Now())
		}
	}
	return p, nil
}

// RAPs names the live members that are the group's rendezvous proxies.
func (p *Proxy) RAPs(g router.Group) []string { return slices.Clone(p.rapsOf(g)) }

// rapsOf is RAPs without the copy: the cache's own slice, read-only.
func (p *Proxy) rapsOf(g router.Group) []string { return p.rapSet(g).names }

// rapSet is g's RAPs from the cache; its slices are read-only.
func (p *Proxy) rapSet(g router.Group) rapSet {
	live, tbl := p.live.Load(), p.mem.table()
	c := &p.rapc
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live != live || c.tbl != tbl || len(c.m) >= maxRAPCache {
		c.live, c.tbl, c.m = live, tbl, map[router.Group]rapSet{}
	}
	rs, ok := c.m[g]
	if !ok {
		rs.names = RAPs(g, live.Names(), p.cfg.Replicas)
		rs.addrs = make([]netip.Addr, len(rs.names))
		for i, n := range rs.names {
			rs.addrs[i] = tbl.byName[n].Addr
		}
		c.m[g] = rs
	}
	return rs
}

// Live names the proxies this proxy believes alive (suspects included),
// itself included, sorted.
func (p *Proxy) Live() []string { return slices.Clone(p.live.Load().Names()) }

// Members is a snapshot of every proxy's health as this proxy sees it: this
// proxy first, then the others by name.
func (p *Proxy) Members() []MemberInfo { return p.health.snapshot() }

// ProbeInterval is how often HealthTick must be called.
func (p *Proxy) ProbeInterval() time.Duration { return p.cfg.Health.ProbeInterval }

// HealthTick runs one round of health monitoring: call it every
// ProbeInterval. The first call announces this proxy (Alive).
func (p *Proxy) HealthTick() {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	p.health.tick()
	p.flush()
}

// Stats returns the control-plane counters.
func (p *Proxy) Stats() ProxyStats {
	hs := p.health.statsSnapshot()
	c := &p.stats
	return ProxyStats{
		ResolvesSent: c.resolvesSent.Load(), ResolvesAnswered: c.resolvesAnswered.Load(),
		Registers: c.registers.Load(), Joins: c.joins.Load(),
		RegistersSent: c.registersSent.Load(), RegistersSuppressed: c.registersSuppressed.Load(),
		ControlSent: c.controlSent.Load(), ControlReceived: c.controlReceived.Load(), Malformed: c.malformed.Load(), Refused: c.refusedByType(),
		Probes: hs.probes, ProbeReqs: hs.probeReqs, FailsDeclared: hs.fails, AlivesSent: hs.alives,
		MembershipChanges: c.membershipChanges.Load(),
		Sent:              byType(&c.sent), Received: byType(&c.received),
		Deaths: hs.deaths, DetectTime: time.Duration(hs.detect),
		HellosRefused: c.helloRefused.Load(),
	}
}

func (c *counters) refusedByType() map[Type]uint64 { return byType(&c.refused) }

func countType(a *[typeEnd]atomic.Uint64, t Type) {
	if t < typeEnd {
		a[t].Add(1)
	}
}

// byType is a map of the non-zero counters of a by type.
func byType(a *[typeEnd]atomic.Uint64) map[Type]uint64 {
	out := map[Type]uint64{}
	for t := range a {
		if n := a[t].Load(); n > 0 {
			out[Type(t)] = n
		}
	}
	return out
}

// membershipChanged applies a change of the live proxy set: RAPs move by
// the hash over live proxies, the router stops using dead JAPs and forgets
// cached JAP lists naming them, RAP state of dead JAPs and of groups this
// proxy no longer is a RAP of is dropped, and every local group is
// registered again at once with its (maybe new) RAPs. A refutation of this
// proxy's own death registers every local group again too: the RAPs that
// held it dead dropped its entries. A proxy reachable again, or one that
// answers again after what this proxy sent it may have been lost
// (change.missed), is sent what it may have missed. (Called by health,
// under ctl.)
func (p *Proxy) membershipChanged(c change) {
	// A proxy cut off from this one is no JAP for its new flows (the view
	// routes neither the dead nor those).
	live := p.health.view()
	old := p.live.Swap(live)
	p.cfg.Router.SetProxySet(live, old.lost(live, c.dead))
	for _, m := range c.unreachable {
		p.cfg.Router.ForgetJAP(m.Addr)
		p.emit(Event{Kind: EventUnreachable, Name: m.Name})
	}
	for _, m := range c.reachable {
		p.emit(Event{Kind: EventReachable, Name: m.Name})
	}
	// What this proxy told those while cut off may have been lost: over
	// a session that carried packets one way only, say, which is what a
	// start can leave behind until a redial (Redialer), or in what the
	// redial dropped.
	back := slices.Concat(c.reachable, c.missed)
	if len(back) > 0 {
		moved := packMoved(p.jap.movedNotices())
		for _, m := range back {
			p.resendTo(m.Addr, moved)
		}
	}
	for _, m := range c.unwatched {
		p.emit(Event{Kind: EventReachable, Name: m.Name, Reason: "no longer probed from here: assumed reachable"})
	}
	if c.onlyReach() {
		// (Otherwise every group is registered again below.)
		for _, m := range back {
			p.registerWith(m)
		}
		return
	}
	gone := c.dead
	if len(c.reset) > 0 {
		gone = slices.Clone(c.dead)
		for i := range c.reset {
			gone = append(gone, &c.reset[i])
		}
	}
	for _, m := range gone {
		p.cfg.Router.ForgetJAP(m.Addr)
	}
	p.forgetClaims(gone)
	p.stats.membershipChanges.Add(1)
	p.rap.membersChanged(p.cfg.Self.Name, live.Names, p.cfg.Replicas, gone)
	for _, m := range c.dead {
		p.emit(Event{Kind: EventDead, Name: m.Name})
	}
	for _, m := range c.added {
		p.emit(Event{Kind: EventAlive, Name: m.Name})
		p.resendTo(m.Addr, nil) // nothing moved while it was unknown here
	}
	returned := append(slices.Clone(c.revived), c.reset...)
	p.forgetAdmits(returned)
	moved := packMoved(p.jap.movedNotices())
	for _, m := range returned {
		p.syncMissed(m)
		p.resendTo(m.Addr, moved)
		p.emit(Event{Kind: EventAlive, Name: m.Name})
	}
	// New RAPs must learn everything: always send, drift or not.
	for _, g := range p.jap.groups() {
		p.register(g, true)
	}
	if len(c.revived)+len(c.reset)+len(c.dead) > 0 || c.refuted {
		// And once more a little later: a proxy that restarted has a new
		// WireGuard session with us, but until its first packet on it
		// arrives our side still sends on the old one, which it cannot
		// read, and the registrations above may be lost. (After a
		// refutation, RAPs that hear our registration before our Alive
		// would not take it.) After a death, a group's new RAP that has
		// not heard of it yet is no RAP by its own view and drops the
		// registrations above; nothing else would tell it before the next
		// refresh (RegisterTTL/3), and until then it answers with only the
		// JAPs that registered after it heard.
		p.jap.reregisterAt(p.clock.Now() + int64(reregisterAfter))
	}
}

// resendTo sends a proxy that may have missed them (or is new here) this
// proxy's word on certificates: the revocations and claims it holds, and
// the targets that moved here (a proxy cut off for a while may still hold
// targets that have joined here since).
func (p *Proxy) resendTo(a netip.Addr, moved []*Moved) {
	p.sendRevocationList(a)
	p.sendClaims(a)
	for _, mv := range moved {
		p.sendTo(a, 0, mv)
	}
}

// registerWith registers again every local group that m is a RAP of (or
// of its echo pseudo-group): m, reachable again, may have missed a count,
// which would otherwise reach it only with the next refresh, RegisterTTL/3
// later. (A withdrawal it missed is not sent again: a group with no
// target here is no local group; its entry ends with its TTL.)
func (p *Proxy) registerWith(m Member) {
	for _, g := range p.jap.groups() {
		if slices.Contains(p.rapsOf(g), m.Name) || slices.Contains(p.rapsOf(router.EchoGroup(g.Addr)), m.Name) {
			p.register(g, true)
		}
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

// send queues m, numbered seq, from src to dst; it leaves when the entry
// point returns.
func (p *Proxy) send(src, dst netip.AddrPort, seq uint32, m Msg) {
	p.outbox = append(p.outbox, outgoing{src, dst, seq, m})
}

// sendTo queues m to the control port of the proxy at a.
func (p *Proxy) sendTo(a netip.Addr, seq uint32, m Msg) {
	p.send(p.selfPort(), netip.AddrPortFrom(a, p.cfg.ControlPort), seq, m)
}

// nextSeq numbers a question this proxy asks.
func (p *Proxy) nextSeq() uint32 {
	p.seq++
	return p.seq
}

// flush sends what the entry point queued, in order; messages to this
// proxy itself are handled here, and what they send is sent too.
func (p *Proxy) flush() {
	for i := 0; i < len(p.outbox); i++ {
		o := p.outbox[i]
		if o.dst.Addr() == p.cfg.Self.Addr {
			p.handle(o.src, o.dst, o.seq, o.m)
			continue
		}
		// Each message in the same room (Send copies it): a simulated
		// partition sends 10⁸ of them.
		payload, err := AppendMsg(p.wire[:0], o.seq, o.m)
		if err != nil {
			continue
		}
		if cap(payload) <= maxWireKept {
			p.wire = payload
		}
		p.stats.controlSent.Add(1)
		countType(&p.stats.sent, o.m.Type())
		p.net.Send(o.src, o.dst, payload)
	}
	clear(p.outbox)
	p.outbox = p.outbox[:0]
	if cap(p.outbox) > maxOutboxKept {
		// A broadcast to every proxy (the Alive at start) grew it: do not
		// keep room for N messages at every proxy of a large overlay.
		p.outbox = nil
	}
}

// maxWireKept is the most room flush keeps to encode messages in: a
// large overlay's digests and dead lists need more, rarely.
const maxWireKept = 2048

func (p *Proxy) selfPort() netip.AddrPort {
	return netip.AddrPortFrom(p.cfg.Self.Addr, p.cfg.ControlPort)
}

// HandleControl takes a control message the router classified as ours.
func (p *Proxy) HandleControl(src, dst netip.AddrPort, payload []byte) {
	seq, m, err := ParseMsg(payload)
	if err != nil {
		p.stats.malformed.Add(1)
		return
	}
	p.ctl.Lock()
	defer p.ctl.Unlock()
	p.stats.controlReceived.Add(1)
	countType(&p.stats.received, m.Type())
	p.handle(src, dst, seq, m)
	p.flush()
}

// senderClass is what the node at a is to this proxy: a proxy, an
// admitted target or client, or nothing (0).
func (p *Proxy) senderClass(a netip.Addr) Sender {
	if len(p.banned) == 0 {
		if p.mem.isProxy(a) {
			return SenderProxy
		}
	} else if m, ok := p.mem.table().byAddr[a]; ok {
		if p.banned[m.Name] {
			return 0
		}
		return SenderProxy
	}
	switch e := p.edges[a]; {
	case e == nil:
		return 0
	case e.isTarget():
		return SenderTarget
	}
	return SenderClient
}

// destKind is what a is to this proxy, for a message m sent there.
func (p *Proxy) destKind(a netip.Addr, m Msg) Dest {
	switch g, ok := GroupOf(m); {
	case a == p.cfg.Self.Addr:
		return DestSelf
	case p.cfg.Self.Addr6.IsValid() && a == p.cfg.Self.Addr6:
		return DestSelf6
	case ok && a == g.Addr:
		return DestAnycast
	}
	return 0
}

// handle checks, by the one table of rules.go, that m's sender may send
// it to dst, then hands it to the part it is for.
func (p *Proxy) handle(src, dst netip.AddrPort, seq uint32, m Msg) {
	from := p.senderClass(src.Addr())
	if err := Permit(m.Type(), from, p.destKind(dst.Addr(), m)); err != nil {
		p.stats.refused[m.Type()].Add(1)
		if j, ok := m.(*Join); ok && from == SenderClient {
			// An admitted edge that may join nothing: say so, as for a
			// group it may not join.
			p.refuseJoin(src, dst, seq, j, fmt.Sprintf("edge %q may not join %s", p.edges[src.Addr()].Name, j.Group))
		}
		return
	}
	if o, ok := m.(origin); ok && SpeaksForItself(m.Type()) && !p.mem.table().named(src.Addr(), o.origin()) {
		// A proxy speaking for another: only relayed types may.
		p.stats.refused[m.Type()].Add(1)
		return
	}
	switch m := m.(type) {
	case *Probe, *ProbeAck, *ProbeReq, *Fail, *Alive, *Restarted, *News:
		p.health.handle(src.Addr(), seq, m)
	case *Join:
		p.handleJoin(src, dst, seq, m)
	case *Keepalive:
		p.handleKeepalive(src, dst, seq, m)
	case *Leave:
		p.handleLeave(src, dst, seq, m)
	case *Drain:
		p.handleDrain(src, dst, seq, m)
	case *ProxiesReq:
		p.handleProxiesReq(src, dst, seq, m)
	case *Register:
		p.handleRegister(src.Addr(), m)
	case *Resolve:
		p.handleResolve(src, seq, m)
	case *ResolveReply:
		p.handleResolveReply(seq, m)
	case *NoTarget:
		p.cfg.Router.ForgetJAPFor(m.Group, src.Addr())
	case *GroupPolicy:
		p.handlePolicy(src.Addr(), m)
	case *Moved:
		// Another proxy is now these targets' JAP: drop each here if it
		// was ours, whether or not it could tell us itself.
		// Only a proxy that admits the target's edge can have become its
		// JAP: another one's word would let it evict any target.
		from := p.mem.table().byAddr[src.Addr()].Name
		for _, t := range m.Targets {
			if !p.admitsEdgeOf(from, t.Target) {
				p.stats.refused[TypeMoved].Add(1)
				continue
			}
			if p.jap.joinedBefore(t.Target, t.Group, t.Epoch) {
				p.leave(t.Target, t.Group, EventMoved)
			}
		}
	case *MemberRecord:
		p.handleMember(src.Addr(), m)
	case *Digest:
		p.handleDigest(src.Addr(), m)
	case *AdmitsReq:
		p.handleAdmitsReq(src.Addr())
	case *Admits:
		p.handleAdmits(src.Addr(), m)
	case *RevocationPart:
		p.handleRevocationPart(src.Addr(), m)
	case *EdgeClaim:
		p.handleEdgeClaim(src.Addr(), m)
	default:
		// Answers to edges: Permit refused them already.
	}
}

// Tick runs the timers: resolve retries, silent targets, registration refresh
// and soft-state expiry. Call it often (every 100 ms or so).
func (p *Proxy) Tick() {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	now := p.clock.Now()
	p.joinTick(now)
	if p.certs != nil {
		p.certTick(now)
	}
	p.digestTick(now)
	if p.certs == nil {
		p.admitsTick(now) // in CA mode every proxy admits every good edge
	}
	for _, g := range p.iap.due(now, 2*p.cfg.Replicas) {
		p.askRAP(g)
	}
	for _, e := range p.jap.expired(now) {
		why := ""
		if e.kind == EventDrained {
			why = fmt.Sprintf("drain timed out with %d flows left", p.liveFlows(e.g, e.addr))
		}
		p.leaveWhy(e.addr, e.g, e.kind, why)
	}
	p.drainTick()
	// The slow refresh: RAP state is soft, and a count within the
	// inaccuracy threshold is brought up to date here.
	for _, g := range p.jap.refreshDue(now, p.cfg.RegisterTTL/3) {
		p.report(g, true)
	}
	p.rap.expire(now)
	p.tellMoved()
	p.flush()
}

// TickDue is the earliest time at which Tick may have work: a Tick before
// then sends nothing and changes nothing that matters. It may be early,
// never late. Only the proxy's entry points (HandleControl, Tick, ...)
// move it, so a simulator of many proxies asks after each and ticks only
// those due: 10,000 idle proxies ticked every second were most of fig6.
func (p *Proxy) TickDue() int64 {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	now := p.clock.Now()
	if p.cfg.MeshKey != nil || p.certs != nil {
		return now // joinTick, certTick: not worth predicting
	}
	due := int64(math.MaxInt64)
	p.mem.mu.Lock()
	if p.cfg.DigestEvery > 0 {
		due = min(due, p.mem.nextDigest)
	}
	admitsDone := p.mem.admitsDone && p.mem.admitsGen == p.health.liveGen()
	p.mem.mu.Unlock()
	if !admitsDone && len(p.edges) > 0 { // without edges admitsTick asks nothing
		return now
	}
	p.iap.mu.Lock()
	for _, pr := range p.iap.pending {
		due = min(due, pr.retryAt)
	}
	p.iap.mu.Unlock()
	j := &p.jap
	j.mu.Lock()
	switch {
	case j.draining > 0 || len(j.moved) > 0:
		due = now
	case j.due != 0:
		due = min(due, j.due)
	case len(j.targets) > 0:
		due = now
	}
	if j.again != 0 {
		due = min(due, j.again)
	}
	if len(j.reported) > 0 {
		if j.refreshAt == 0 || j.refreshEvery != p.cfg.RegisterTTL/3 {
			due = now
		}
		due = min(due, j.refreshAt+1)
	}
	j.mu.Unlock()
	r := &p.rap
	r.mu.Lock()
	switch {
	case r.due != 0:
		due = min(due, r.due)
	case len(r.entries) > 0 || len(r.relayed) > 0:
		due = now
	}
	r.mu.Unlock()
	return due
}

// cmpGroup orders groups: by address, port, then protocol.
func cmpGroup(a, b router.Group) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	return int(a.Proto) - int(b.Proto)
}

// sortedGroups lists the keys of m in cmpGroup order: every loop that sends
// goes in a fixed order, so that a run can be repeated exactly.
func sortedGroups[V any](m map[router.Group]V) []router.Group {
	out := make([]router.Group, 0, len(m))
	for g := range m {
		out = append(out, g)
	}
	slices.SortFunc(out, cmpGroup)
	return out
}

// sortedAddrs lists the keys of m in address order.
func sortedAddrs[V any](m map[netip.Addr]V) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
