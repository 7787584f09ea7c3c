package overlay

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pias-net/pias/router"
)

// Member is a proxy of the overlay as every proxy knows it.
type Member struct {
	Name    string
	Addr    netip.Addr // IPv4 overlay address: where its control port listens
	Cluster string
}

// EdgePolicy is what a proxy lets one edge do: which groups it may join.
type EdgePolicy struct {
	Name   string
	Groups []router.Group
}

// ProxyConfig is what a proxy's control plane needs.
type ProxyConfig struct {
	Self    Member
	Members []Member // every proxy, self included (static full mesh for now)
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

	TargetTimeout time.Duration // a target silent this long is dropped; default 15s
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
	Kind   string // "join", "leave", "expire", "register", "resolve", "resolved", "refuse", "dead", "alive"
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
	epoch    uint32 // of its last join here (see Message.Incarnation)
}

// report is what a JAP last told a group's RAPs: the count and when.
type report struct {
	count int
	at    int64
}

type rapEntry struct {
	name    string
	targets int
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
	cfg      ProxyConfig
	names    []string
	byName   map[string]Member
	byAddr   map[netip.Addr]Member
	mu       sync.Mutex
	seq      uint32
	local    map[router.Group]map[netip.Addr]*target // JAP: targets joined here
	reported map[router.Group]*report                // JAP: what each group's RAPs were last told
	regMu    sync.Mutex                              // orders registrations: a later count is never sent before an earlier one
	rap      map[router.Group]map[netip.Addr]*rapEntry
	pending  map[router.Group]*pendingResolve
	stats    ProxyStats
	// noTargetSent: when each IAP was last told this JAP has no target for
	// a group (guarded by mu).
	noTargetSent map[noTargetKey]int64

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
		byName:   map[string]Member{},
		byAddr:   map[netip.Addr]Member{},
		local:    map[router.Group]map[netip.Addr]*target{},
		reported: map[router.Group]*report{},
		rap:      map[router.Group]map[netip.Addr]*rapEntry{},
		pending:  map[router.Group]*pendingResolve{},
	}
	members := append([]Member(nil), cfg.Members...)
	if !slices.ContainsFunc(members, func(m Member) bool { return m.Name == cfg.Self.Name }) {
		members = append(members, cfg.Self)
	}
	addrs := make([]netip.Addr, 0, len(members))
	for _, m := range members {
		p.names = append(p.names, m.Name)
		p.byName[m.Name] = m
		p.byAddr[m.Addr] = m
		addrs = append(addrs, m.Addr)
	}
	live := slices.Clone(p.names)
	slices.Sort(live)
	live = slices.Compact(live)
	p.live.Store(&live)
	cfg.Router.SetProxies(addrs)
	p.health = newHealth(cfg.Health, cfg.Self, members, cfg.Now, func(to netip.Addr, m *Message) {
		p.send(p.selfPort(), netip.AddrPortFrom(to, cfg.ControlPort), m)
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
// registered again at once with its (maybe new) RAPs.
func (p *Proxy) membershipChanged(c change) {
	p.memMu.Lock()
	defer p.memMu.Unlock()
	live := p.health.live()
	names := make([]string, len(live))
	addrs := make([]netip.Addr, len(live))
	for i, m := range live {
		names[i], addrs[i] = m.Name, m.Addr
	}
	p.live.Store(&names)
	p.cfg.Router.SetProxies(addrs)
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
	for _, m := range append(slices.Clone(c.revived), c.reset...) {
		p.emit(Event{Kind: "alive", Name: m.Name})
		// A proxy cut off for a while may still hold targets that have
		// joined here since: it missed the TypeMoved then, so tell it now.
		for i := range mine {
			p.send(p.selfPort(), netip.AddrPortFrom(m.Addr, p.cfg.ControlPort), &mine[i])
		}
	}
	// New RAPs must learn everything: always send, drift or not.
	for _, g := range groups {
		p.register(g, true)
	}
}

// RAPTable returns what this proxy knows as RAP: each group's live JAPs.
func (p *Proxy) RAPTable() map[router.Group][]router.JAP {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.cfg.Now()
	out := map[router.Group][]router.JAP{}
	for g := range p.rap {
		if japs := p.japsLocked(g, now); len(japs) > 0 {
			out[g] = japs
		}
	}
	return out
}

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

func (p *Proxy) selfPort() netip.AddrPort {
	return netip.AddrPortFrom(p.cfg.Self.Addr, p.cfg.ControlPort)
}

// HandleControl takes a control message the router classified as ours.
func (p *Proxy) HandleControl(src, dst netip.AddrPort, payload []byte) {
	var m Message
	if err := m.UnmarshalBinary(payload); err != nil {
		return
	}
	_, fromProxy := p.byAddr[src.Addr()]
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
	case TypeMoved:
		// Another proxy is now this target's JAP: drop it here if it was
		// ours, whether or not it could tell us itself.
		if fromProxy && p.joinedBefore(m.Target, m.Group, m.Incarnation) {
			p.leave(m.Target, m.Group, "moved")
		}
	}
}

func (p *Proxy) handleEdge(src, dst netip.AddrPort, m *Message) {
	reply := Message{Seq: m.Seq, Group: m.Group, Port: m.Port, Status: StatusOK}
	switch m.Type {
	case TypeJoin:
		reply.Type = TypeJoinAck
		if why := p.admit(src.Addr(), m.Group); why != "" {
			reply.Status, reply.Reason = StatusRefused, why
			p.emit(Event{Kind: "refuse", Group: m.Group, Target: netip.AddrPortFrom(src.Addr(), m.Port), Name: m.Name, Reason: why})
			break
		}
		p.join(src.Addr(), m)
	case TypeKeepalive:
		reply.Type = TypeKeepaliveAck
		if !p.keepalive(src.Addr(), m.Group) {
			reply.Status = StatusUnknown
		}
	case TypeLeave:
		reply.Type = TypeJoinAck
		p.leave(src.Addr(), m.Group, "leave")
	}
	p.send(dst, src, &reply)
}

// admit says why an edge may not join a group, or "" when it may.
func (p *Proxy) admit(addr netip.Addr, g router.Group) string {
	e := p.cfg.Edges[addr]
	if e == nil {
		return "not an edge of this proxy"
	}
	if !slices.Contains(e.Groups, g) {
		return fmt.Sprintf("edge %s may not join %s", e.Name, g)
	}
	return ""
}

func (p *Proxy) join(addr netip.Addr, m *Message) {
	p.mu.Lock()
	ts := p.local[m.Group]
	if ts == nil {
		ts = map[netip.Addr]*target{}
		p.local[m.Group] = ts
	}
	t, known := ts[addr]
	if !known || t.port != m.Port {
		p.stats.Joins++
	}
	if !known {
		t = &target{}
		ts[addr] = t
	}
	t.name, t.port, t.lastSeen, t.epoch = m.Name, m.Port, p.cfg.Now(), m.Incarnation
	p.mu.Unlock()
	p.cfg.Router.AddTarget(m.Group, netip.AddrPortFrom(addr, m.Port))
	if !known {
		p.emit(Event{Kind: "join", Group: m.Group, Target: netip.AddrPortFrom(addr, m.Port), Name: m.Name})
		p.register(m.Group, false)
		p.tellMoved(addr, m)
	}
}

// NoTarget tells the IAP at iap that this proxy has no target for g any
// more (the router dropped its packet for that): the IAP forgets this JAP
// for g and resolves again, instead of sending there until its cache
// expires. At most one notice per IAP and group every noTargetEvery.
func (p *Proxy) NoTarget(iap netip.Addr, g router.Group) {
	now := p.cfg.Now()
	key := noTargetKey{iap, g}
	p.mu.Lock()
	if last, ok := p.noTargetSent[key]; ok && now-last < int64(noTargetEvery) {
		p.mu.Unlock()
		return
	}
	if p.noTargetSent == nil || len(p.noTargetSent) > 4096 {
		p.noTargetSent = map[noTargetKey]int64{} // bounded: forget old notices
	}
	p.noTargetSent[key] = now
	p.mu.Unlock()
	p.send(p.selfPort(), netip.AddrPortFrom(iap, p.cfg.ControlPort), &Message{Type: TypeNoTarget, Group: g})
}

const noTargetEvery = 200 * time.Millisecond

type noTargetKey struct {
	iap netip.Addr
	g   router.Group
}

// joinedBefore reports whether the target at addr joined g here with an
// epoch older than epoch: then its join elsewhere is the newer one. (A
// proxy cut off for a while and the target's new JAP tell each other about
// the same target; only the stale record must go.)
func (p *Proxy) joinedBefore(addr netip.Addr, g router.Group, epoch uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.local[g][addr]
	return t != nil && int32(epoch-t.epoch) > 0 // serial-number order: wraps safely
}

// tellMoved tells every other live proxy that a target joined a group here,
// so that a JAP it left (perhaps without a word: its path there may be what
// failed) drops it at once instead of after its keepalive timeout. Joins
// are rare, and proxies few.
func (p *Proxy) tellMoved(addr netip.Addr, m *Message) {
	moved := Message{Type: TypeMoved, Group: m.Group, Name: m.Name, Target: addr, Incarnation: m.Incarnation}
	for _, name := range p.Live() {
		if name == p.cfg.Self.Name {
			continue
		}
		if mb, ok := p.byName[name]; ok {
			p.send(p.selfPort(), netip.AddrPortFrom(mb.Addr, p.cfg.ControlPort), &moved)
		}
	}
}

func (p *Proxy) keepalive(addr netip.Addr, g router.Group) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.local[g][addr]
	if t == nil {
		return false
	}
	t.lastSeen = p.cfg.Now()
	return true
}

func (p *Proxy) leave(addr netip.Addr, g router.Group, kind string) {
	p.mu.Lock()
	t := p.local[g][addr]
	if t != nil {
		delete(p.local[g], addr)
		if len(p.local[g]) == 0 {
			delete(p.local, g)
		}
	}
	p.mu.Unlock()
	if t == nil {
		return
	}
	p.cfg.Router.RemoveTarget(g, addr)
	p.emit(Event{Kind: kind, Group: g, Target: netip.AddrPortFrom(addr, t.port), Name: t.name})
	p.register(g, false)
}

// DefaultInaccuracy is ProxyConfig.Inaccuracy's default, in percent.
const DefaultInaccuracy = 25

// shouldReport is the two-tier membership rule: a JAP that last told a
// group's RAPs it had last targets and now has n tells them again when the
// count crosses zero (0→n or n→0) or drifts from last by more than pct
// percent of last.
func shouldReport(last, n int, pct float64) bool {
	if (last == 0) != (n == 0) {
		return true
	}
	if last == 0 {
		return false
	}
	return math.Abs(float64(n-last))*100 > pct*float64(last)
}

// register reports the group's target count here to its RAPs, and does the
// same for the echo pseudo-group of its IP so that IAPs can answer ping,
// each when the two-tier membership rule says so, or always with force
// (new RAPs, refresh).
func (p *Proxy) register(g router.Group, force bool) {
	p.report(g, force)
	p.report(router.EchoGroup(g.Addr), force)
}

// countLocked is how many targets joined here for g; for an echo
// pseudo-group, for any group of its IP.
func (p *Proxy) countLocked(g router.Group) int {
	if !g.IsEcho() {
		return len(p.local[g])
	}
	n := 0
	for lg, ts := range p.local {
		if lg.Addr == g.Addr {
			n += len(ts)
		}
	}
	return n
}

// report sends g's count to its RAPs if force or the rule says so, and
// remembers what it told them.
func (p *Proxy) report(g router.Group, force bool) {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	p.mu.Lock()
	n := p.countLocked(g)
	r := p.reported[g]
	last := 0
	if r != nil {
		last = r.count
	}
	if (r == nil && n == 0) || (!force && !shouldReport(last, n, p.cfg.Inaccuracy)) {
		if last != n {
			p.stats.RegistersSuppressed++
		}
		p.mu.Unlock()
		return
	}
	if n == 0 {
		delete(p.reported, g)
	} else {
		p.reported[g] = &report{count: n, at: p.cfg.Now()}
	}
	p.mu.Unlock()
	p.registerCount(g, n)
}

func (p *Proxy) registerCount(g router.Group, n int) {
	raps := p.RAPs(g)
	p.emit(Event{Kind: "register", Group: g, RAPs: raps, Name: p.cfg.Self.Name, JAPs: []router.JAP{{Addr: p.cfg.Self.Addr, Targets: n}}})
	m := Message{Type: TypeRegister, Group: g, Name: p.cfg.Self.Name, Targets: uint32(n), TTL: p.cfg.RegisterTTL}
	p.mu.Lock()
	p.stats.RegistersSent += uint64(len(raps))
	p.mu.Unlock()
	for _, name := range raps {
		if name == p.cfg.Self.Name {
			p.handleRegister(p.cfg.Self.Addr, &m)
			continue
		}
		p.mu.Lock()
		p.seq++
		m.Seq = p.seq
		p.mu.Unlock()
		p.send(p.selfPort(), netip.AddrPortFrom(p.byName[name].Addr, p.cfg.ControlPort), &m)
	}
}

func (p *Proxy) handleRegister(jap netip.Addr, m *Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Registers++
	japs := p.rap[m.Group]
	if m.Targets == 0 {
		delete(japs, jap)
		if len(japs) == 0 {
			delete(p.rap, m.Group)
		}
		return
	}
	if japs == nil {
		japs = map[netip.Addr]*rapEntry{}
		p.rap[m.Group] = japs
	}
	japs[jap] = &rapEntry{name: m.Name, targets: int(m.Targets), expires: p.cfg.Now() + int64(m.TTL)}
}

// japsLocked lists a group's live JAPs, sorted by address for stable answers.
func (p *Proxy) japsLocked(g router.Group, now int64) []router.JAP {
	var out []router.JAP
	for addr, e := range p.rap[g] {
		if e.expires > now && e.targets > 0 {
			out = append(out, router.JAP{Addr: addr, Targets: e.targets})
		}
	}
	slices.SortFunc(out, func(a, b router.JAP) int { return a.Addr.Compare(b.Addr) })
	return out
}

func (p *Proxy) handleResolve(src netip.AddrPort, m *Message) {
	p.mu.Lock()
	p.stats.ResolvesAnswered++
	japs := p.japsLocked(m.Group, p.cfg.Now())
	p.mu.Unlock()
	reply := Message{Type: TypeResolveReply, Seq: m.Seq, Group: m.Group, Status: StatusOK, TTL: p.cfg.CacheTTL, JAPs: japs}
	p.send(p.selfPort(), src, &reply)
}

// Resolve asks the group's RAP which JAPs serve it; the router holds the
// group's packets until the answer comes (or its queue times out).
func (p *Proxy) Resolve(g router.Group) {
	p.mu.Lock()
	pr := p.pending[g]
	if pr == nil {
		pr = &pendingResolve{}
		p.pending[g] = pr
	}
	p.mu.Unlock()
	p.askRAP(g, pr)
}

// askRAP sends the next try of a resolve: RAPs in rank order, round robin.
func (p *Proxy) askRAP(g router.Group, pr *pendingResolve) {
	raps := p.RAPs(g)
	p.mu.Lock()
	name := raps[pr.tries%len(raps)]
	pr.tries++
	p.seq++
	pr.seq = p.seq
	pr.retryAt = p.cfg.Now() + int64(p.cfg.ResolveRetry)
	p.stats.ResolvesSent++
	seq := pr.seq
	p.mu.Unlock()
	p.emit(Event{Kind: "resolve", Group: g, RAPs: []string{name}})
	m := Message{Type: TypeResolve, Seq: seq, Group: g}
	if name == p.cfg.Self.Name {
		// This proxy is a RAP of the group: answer from its own table.
		p.mu.Lock()
		japs := p.japsLocked(g, p.cfg.Now())
		p.mu.Unlock()
		p.handleResolveReply(&Message{Type: TypeResolveReply, Seq: seq, Group: g, TTL: p.cfg.CacheTTL, JAPs: japs})
		return
	}
	p.send(p.selfPort(), netip.AddrPortFrom(p.byName[name].Addr, p.cfg.ControlPort), &m)
}

func (p *Proxy) handleResolveReply(m *Message) {
	p.mu.Lock()
	pr := p.pending[m.Group]
	if pr == nil || pr.seq != m.Seq {
		p.mu.Unlock()
		return
	}
	delete(p.pending, m.Group)
	p.mu.Unlock()
	p.emit(Event{Kind: "resolved", Group: m.Group, JAPs: m.JAPs})
	for _, pkt := range p.cfg.Router.Resolved(m.Group, m.JAPs, m.TTL, p.cfg.Now()) {
		p.cfg.Send(pkt)
	}
}

// Tick runs the timers: resolve retries, silent targets, registration refresh
// and soft-state expiry. Call it often (every 100 ms or so).
func (p *Proxy) Tick() {
	now := p.cfg.Now()
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
			if now-t.lastSeen > int64(p.cfg.TargetTimeout) {
				expired = append(expired, gone{g, addr})
			}
		}
	}
	for g, r := range p.reported {
		if now-r.at > int64(p.cfg.RegisterTTL/3) {
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
