package overlay

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pias-net/pias/admit"
)

// Dynamic proxy membership.
//
// A proxy with a mesh key (a secret shared by the proxies of one overlay)
// needs only one live proxy as seed. It sends each configured seed a hello
// over plain UDP to the seed's WireGuard socket (WireGuard would drop a
// handshake from a key it does not know): its record (name, addresses,
// cluster, WireGuard key and endpoint), the seed's name, a nonce, a
// timestamp, and an HMAC under the mesh key (underlay.go). A seed that
// checks the MAC, has not taken this hello before, and finds no conflict
// (a name or an address of another proxy, or an address of an edge it
// admits)
//
//  1. makes the newcomer a WireGuard peer and a member,
//  2. tells every live proxy (TypeMember; each forwards it once, so the
//     loss of one copy does not matter), which make it a peer and a member
//     in StateJoining: they wait for its first word,
//  3. answers the hello with a welcome (also MACed), and
//  4. sends the newcomer, through the tunnel, a TypeMember with MemberSync
//     for every proxy it knows. The newcomer makes each a peer with a
//     persistent keepalive (its handshake starts at once) and announces
//     itself (Alive).
//
// So the newcomer speaks first to everyone but its seed. Which of two
// proxies starts their WireGuard handshake is not the overlay's to say: the
// one with the greater key calls, the other waits for it (node/callfirst.go),
// since two handshakes started at once cross and stall for 5 s. The seed
// floods before it answers, so the others know the newcomer before its
// first handshake can reach them.
//
// A restarted proxy says hello to its seeds again and gets the whole list.
// A proxy back from the dead (a healed partition) may have missed joins:
// every proxy that learned one while it was away tells it (MemberSync).
// Anti-entropy covers what a lost message or a cut link hid: every
// digestEvery each proxy sends one live proxy, at random, a hash of the
// proxies it knows (TypeDigest); if they differ, each sends the other its
// whole list. Every proxy is a WireGuard peer of every
// proxy it knows; members are never forgotten (a dead one may come back).

// members is the membership part's state: the known proxies, this
// proxy's admission through its seeds, and what each member admits.
type members struct {
	tbl atomic.Pointer[memberTable] // every known proxy, self included; written under ctl

	mu        sync.Mutex
	self      Member    // its endpoint may be set after start
	admission joinState // this proxy's admission through its seeds
	// addedAt: when each proxy learned at run time was added.
	addedAt map[string]int64
	// nextDigest: when this proxy next compares member lists.
	nextDigest int64
	// admits: the edge keys each member admits (see admits.go);
	// ownAdmits: this proxy's.
	admits    admitTable
	ownAdmits [][32]byte
	// admitsDone: every member's keys are here as of health.liveGen
	// admitsGen (see admitsTick).
	admitsDone bool
	admitsGen  uint64
	// seen: the hellos this proxy took as seed, so that it takes each once.
	seen admit.Seen
	// turnedAway: the records of proxies refused lately (name → why), so
	// that each is told once, not at every sync (up to maxTurnedAway).
	turnedAway map[string]string
}

// maxTurnedAway bounds members.turnedAway; when it is full it is emptied,
// so a sender of ever new names gets at most one line per record.
const maxTurnedAway = 64

func (ms *members) init(self Member, tbl *memberTable, seeds []Member, edges map[netip.Addr]*EdgePolicy) {
	ms.self = self
	ms.admission.seeds = seeds
	ms.addedAt = map[string]int64{}
	ms.ownAdmits = ownAdmits(edges)
	ms.tbl.Store(tbl)
}

// MemberList is an immutable table of proxies that proxies configured
// with the same ones may share (ProxyConfig.Shared).
type MemberList struct {
	t *memberTable
	r *roster
}

// NewMemberList builds the table of ms, which should name each proxy once.
func NewMemberList(ms []Member) *MemberList {
	return &MemberList{newMemberTable(ms), newRoster(ms)}
}

func (ms *members) table() *memberTable { return ms.tbl.Load() }

// memberTable is an immutable snapshot of the known proxies.
type memberTable struct {
	names  []string // sorted
	byName map[string]Member
	byAddr map[netip.Addr]Member // IPv4 and IPv6 overlay addresses
	// name4 is byAddr's names alone, for IPv4 addresses as uint32: every
	// message's sender is looked up (twice), and at 10,000 members this
	// map's hash and compare cost a fraction of byAddr's.
	name4 map[uint32]string
	// hash caches digest's hash of the table (bit 32 set once computed):
	// a proxy of 10,000 members hashed them all every digestEvery.
	hash atomic.Uint64
}

func newMemberTable(ms []Member) *memberTable {
	t := &memberTable{byName: make(map[string]Member, len(ms)), byAddr: make(map[netip.Addr]Member, len(ms)),
		name4: make(map[uint32]string, len(ms))}
	for _, m := range ms {
		if _, ok := t.byName[m.Name]; !ok {
			t.names = append(t.names, m.Name)
		}
		t.set(m)
	}
	slices.Sort(t.names) // once: sorting at every insert made NewProxy quadratic
	return t
}

// set stores m by name and by address (not in names).
func (t *memberTable) set(m Member) {
	t.byName[m.Name] = m
	for _, a := range m.Addrs() {
		t.byAddr[a] = m
		if a.Is4() {
			t.name4[addr4(a)] = m.Name
		}
	}
}

func (t *memberTable) with(m Member) *memberTable {
	n := &memberTable{names: t.names, byName: maps.Clone(t.byName), byAddr: maps.Clone(t.byAddr), name4: maps.Clone(t.name4)}
	if i, found := slices.BinarySearch(t.names, m.Name); !found {
		n.names = slices.Insert(slices.Clone(t.names), i, m.Name)
	}
	n.set(m)
	return n
}

// digest hashes the table's proxies (name and key), once per table.
func (t *memberTable) digest() uint32 {
	if h := t.hash.Load(); h != 0 {
		return uint32(h)
	}
	h := uint64(fnvOffset)
	for _, n := range t.names {
		m := t.byName[n]
		h = fnvAdd(h, m.Name)
		h = fnvAdd(h, "\x00")
		h = fnvAdd(h, m.PublicKey[:])
	}
	d := fold32(h)
	t.hash.Store(1<<32 | uint64(d))
	return d
}

// list is the table's proxies, by name.
func (t *memberTable) list() []Member {
	out := make([]Member, len(t.names))
	for i, n := range t.names {
		out[i] = t.byName[n]
	}
	return out
}

func (t *memberTable) addrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(t.names))
	for _, n := range t.names {
		out = append(out, t.byName[n].Addr)
	}
	return out
}

// isProxy reports whether a is an overlay address of a known proxy.
func (ms *members) isProxy(a netip.Addr) bool {
	_, ok := ms.table().nameOf(a)
	return ok
}

// nameOf is the name of the proxy at a, as byAddr has it.
func (t *memberTable) nameOf(a netip.Addr) (string, bool) {
	if a.Is4() {
		n, ok := t.name4[addr4(a)]
		return n, ok
	}
	m, ok := t.byAddr[a]
	return m.Name, ok
}

// named reports whether the proxy at a is called name.
func (t *memberTable) named(a netip.Addr, name string) bool {
	n, _ := t.nameOf(a)
	return n == name
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// addrOf is the IPv4 overlay address of the proxy called name (invalid if
// unknown).
func (ms *members) addrOf(name string) netip.Addr { return ms.table().byName[name].Addr }

// put stores m in the table (under ctl: the only writer).
func (ms *members) put(m Member) { ms.tbl.Store(ms.table().with(m)) }

// Known lists every proxy this proxy knows, itself included, by name.
func (p *Proxy) Known() []Member {
	return p.mem.table().list()
}

// SetEndpoint sets this proxy's WireGuard endpoint as it tells seeds (when
// the configured one was not final, e.g. its port was picked at start).
func (p *Proxy) SetEndpoint(ep netip.AddrPort) {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	p.mem.mu.Lock()
	p.mem.self.Endpoint = ep
	self := p.mem.self
	p.mem.mu.Unlock()
	p.mem.put(self)
}

func (p *Proxy) self() Member {
	p.mem.mu.Lock()
	defer p.mem.mu.Unlock()
	return p.mem.self
}

// joinState is this proxy's admission through its seeds.
type joinState struct {
	seeds    []Member
	welcomed bool
	refused  map[string]bool // seeds that refused us
	next     int64           // when the next round of hellos goes out
	rounds   int             // rounds of hellos sent
	// asked: the last hellos sent (up to maxAsked), the only ones whose
	// welcome this proxy takes.
	asked []sentHello
}

// sentHello is a hello sent: its nonce and the seed it went to.
type sentHello struct {
	nonce uint64
	seed  string
}

// maxAsked is how many hellos a newcomer remembers: their welcomes may
// come up to maxAsked × helloEvery late.
const maxAsked = 8

// answers reports whether a welcome from seed with nonce answers a hello
// this proxy sent lately.
func (j *joinState) answers(nonce uint64, seed string) bool {
	for _, a := range j.asked {
		if a.nonce == nonce && a.seed == seed {
			return true
		}
	}
	return false
}

// helloEvery is how often a proxy not yet admitted tries its seeds again.
const helloEvery = time.Second

// joinTick sends hellos to the seeds while no seed has welcomed us.
func (p *Proxy) joinTick(now int64) {
	if p.cfg.MeshKey == nil {
		return
	}
	alone := len(p.Live()) <= 1
	p.mem.mu.Lock()
	j := &p.mem.admission
	if j.welcomed && alone && len(j.seeds) > 0 {
		// Admitted once, but nobody is alive any more: perhaps the seed
		// died before it told us of the others, or forgot us. Say hello
		// again.
		j.welcomed = false
	}
	if j.welcomed || len(j.seeds) == 0 || now < j.next {
		p.mem.mu.Unlock()
		return
	}
	j.next = now + int64(helloEvery)
	j.rounds++
	rounds := j.rounds
	silent := rounds%10 == 3 // tell a person, now and then, why nothing happens
	// One seed per round, in turn: each seed answers with the whole list.
	var to []Member
	for i := range j.seeds {
		s := j.seeds[(rounds+i)%len(j.seeds)]
		if !j.refused[s.Name] && s.Endpoint.IsValid() {
			to = append(to, s)
			break
		}
	}
	p.mem.mu.Unlock()
	self := p.self()
	rec := MemberRecord{Member: self, Incarnation: p.health.incarnation()}
	for _, s := range to {
		h := helloMsg{nonce: p.rng.Uint64(), seed: s.Name, rec: rec}
		body, err := appendHello(nil, h)
		if err != nil {
			p.emit(Event{Kind: EventRefuse, Name: self.Name, Reason: fmt.Sprintf("cannot say hello to seed %q: %v", s.Name, err)})
			return
		}
		p.mem.mu.Lock()
		j.asked = append(j.asked, sentHello{h.nonce, s.Name})
		if len(j.asked) > maxAsked {
			j.asked = slices.Delete(j.asked, 0, len(j.asked)-maxAsked)
		}
		p.mem.mu.Unlock()
		p.net.SendUnderlay(s.Endpoint, sealUnderlay(p.cfg.MeshKey, kindHello, p.clock.Wall(), body))
	}
	if silent {
		p.emit(Event{Kind: EventUnadmitted, Name: self.Name, Reason: fmt.Sprintf(
			"no seed answered %d hellos: is the mesh key the same file on every proxy, and are the seeds up at their endpoints, under the names this file gives them?", rounds)})
	}
}

// HandleUnderlay takes a datagram that arrived on the WireGuard socket with
// the UnderlayMagic prefix.
func (p *Proxy) HandleUnderlay(from netip.AddrPort, pkt []byte) {
	if p.cfg.MeshKey == nil && p.certs == nil {
		return
	}
	p.ctl.Lock()
	defer p.ctl.Unlock()
	defer p.flush()
	if p.certs != nil {
		p.handleAdmit(from, pkt)
		return
	}
	now := p.clock.Wall()
	u, err := openUnderlay(p.cfg.MeshKey, pkt, now)
	if err != nil {
		return // not from a holder of the mesh key, or stale: say nothing
	}
	switch u.kind {
	case kindHello:
		h, err := parseHello(u.body)
		if err != nil || h.seed != p.cfg.Self.Name {
			// Malformed, or meant for another seed: a replay (or a
			// newcomer with this proxy's name wrong, which says so
			// itself). Its source may be forged: say nothing.
			return
		}
		p.mem.mu.Lock()
		fresh := p.mem.seen.Take(u.mac, u.at, now.UnixMilli())
		p.mem.mu.Unlock()
		if !fresh {
			return // taken already: a replay
		}
		p.handleHello(from, u.size, h)
	case kindWelcome:
		w, err := parseWelcome(u.body)
		if err != nil {
			return
		}
		p.mem.mu.Lock()
		if !p.mem.admission.answers(w.nonce, w.name) {
			p.mem.mu.Unlock()
			return // no answer to a hello of ours, lately: a replay
		}
		if w.ok {
			p.mem.admission.welcomed = true
		} else {
			if p.mem.admission.refused == nil {
				p.mem.admission.refused = map[string]bool{}
			}
			p.mem.admission.refused[w.name] = true
		}
		p.mem.mu.Unlock()
		if w.ok {
			p.emit(Event{Kind: EventAdmitted, Name: w.name})
		} else {
			p.emit(Event{Kind: EventNotAdmitted, Name: w.name, Reason: w.reason})
		}
	}
}

// handleHello admits a newcomer, or tells it why not. size is the hello's:
// the welcome is no longer.
func (p *Proxy) handleHello(from netip.AddrPort, size int, h helloMsg) {
	rec := h.rec.Member
	if rec.Endpoint.Addr().IsUnspecified() {
		rec.Endpoint = netip.AddrPortFrom(from.Addr(), rec.Endpoint.Port())
	}
	reason := p.admitProxy(from, rec, h.rec.Incarnation, nil)
	if reason != "" {
		p.emit(Event{Kind: EventRefuse, Name: rec.Name, Reason: fmt.Sprintf("proxy %q from %v: %s", rec.Name, from, reason)})
	}
	p.welcome(from, size, welcomeMsg{nonce: h.nonce, ok: reason == "", name: p.cfg.Self.Name, reason: reason})
}

// admitProxy admits the newcomer rec that said hello from, or says why
// not. hold, if set, runs once it is sure to admit (CA mode keeps the
// certificate then, before the records that carry it go out).
func (p *Proxy) admitProxy(from netip.AddrPort, rec Member, inc uint32, hold func()) string {
	self := p.self()
	reason := ""
	tbl := p.mem.table()
	old, known := tbl.byName[rec.Name]
	edgeOwns := p.edgeConflict(rec)
	switch {
	case rec.Name == self.Name:
		reason = fmt.Sprintf("the name %q is the seed's own", rec.Name)
	case known && old.PublicKey != rec.PublicKey && old.PublicKey != [32]byte{}:
		reason = fmt.Sprintf("the name %q belongs to another WireGuard key", rec.Name)
	case known && (old.Addr != rec.Addr || old.Addr6 != rec.Addr6):
		reason = fmt.Sprintf("%q has overlay addresses %v here, not %v", rec.Name, old.Addrs(), rec.Addrs())
	case !known && tbl.byAddr[rec.Addr].Name != "":
		reason = fmt.Sprintf("overlay address %v belongs to %q", rec.Addr, tbl.byAddr[rec.Addr].Name)
	case !known && rec.Addr6.IsValid() && tbl.byAddr[rec.Addr6].Name != "":
		reason = fmt.Sprintf("overlay address %v belongs to %q", rec.Addr6, tbl.byAddr[rec.Addr6].Name)
	case edgeOwns != "":
		reason = edgeOwns
	case rec.Cluster == "":
		reason = "no cluster"
	}
	if reason != "" {
		return reason
	}
	if hold != nil {
		hold()
	}
	// (The welcome goes out at once; what is queued here, when the entry
	// point returns.)
	if known && old.PublicKey != [32]byte{} {
		// Known already: a configured mesh, or a restart that lost what
		// it had learned. Tell it everyone again.
		p.sync(rec)
		return ""
	}
	p.addMember(rec, inc, StateAlive, true)
	p.flood(&MemberRecord{Member: rec, Incarnation: inc, Cert: p.memberCert(rec.Name)}, rec.Addr)
	p.sync(rec)
	return ""
}

// welcome answers a hello of size bytes with w, in no more bytes.
func (p *Proxy) welcome(to netip.AddrPort, size int, w welcomeMsg) {
	if pkt := sealWelcome(p.cfg.MeshKey, p.clock.Wall(), w, size); pkt != nil {
		p.net.SendUnderlay(to, pkt)
	}
}

// edgeConflict says which edge this proxy admits owns one of m's overlay
// addresses, or "". A proxy there would get the edge's /32 as its
// AllowedIPs, and the edge's messages would pass for the proxy's.
func (p *Proxy) edgeConflict(m Member) string {
	for _, a := range m.Addrs() {
		if e := p.edges[a]; e != nil {
			return fmt.Sprintf("overlay address %v belongs to edge %q, which this proxy admits", a, e.Name)
		}
	}
	return ""
}

// flood sends m to every live proxy but this one and except.
func (p *Proxy) flood(m Msg, except ...netip.Addr) {
	self := p.cfg.Self.Name
	for _, name := range p.Live() {
		a := p.mem.addrOf(name)
		if name == self || !a.IsValid() || slices.Contains(except, a) {
			continue
		}
		p.sendTo(a, 0, m)
	}
}

// sync sends to the proxy to every proxy this one knows but it.
func (p *Proxy) sync(to Member) {
	for _, mb := range p.Known() {
		if mb.Name == to.Name || mb.PublicKey == [32]byte{} || !mb.Endpoint.IsValid() {
			continue
		}
		p.sendRecord(to.Addr, mb)
	}
}

// sendRecord tells the proxy at to of mb (Sync: to calls it), with its
// incarnation and whether this proxy believes it dead.
func (p *Proxy) sendRecord(to netip.Addr, mb Member) {
	st, inc, _ := p.health.state(mb.Name)
	p.sendTo(to, 0, &MemberRecord{Member: mb, Incarnation: inc, Sync: true, Dead: st == StateDead, Cert: p.memberCert(mb.Name)})
}

// handleMember learns of a proxy from another proxy: the flood of a seed
// (wait for the newcomer's word) or a sync (call it).
func (p *Proxy) handleMember(src netip.Addr, m *MemberRecord) {
	rec := m.Member
	if rec.Name == p.cfg.Self.Name || rec.PublicKey == [32]byte{} {
		return
	}
	tbl := p.mem.table()
	if old, ok := tbl.byName[rec.Name]; ok {
		if old.PublicKey == [32]byte{} && old.Addr == rec.Addr {
			// Configured without a key (tests): learn it now.
			p.mem.put(rec)
		} else if old.PublicKey != rec.PublicKey {
			p.turnAway(rec.Name, fmt.Sprintf("proxy %q announced with another WireGuard key; kept the one known", rec.Name))
		}
		return
	}
	for _, a := range rec.Addrs() {
		if o, ok := tbl.byAddr[a]; ok {
			p.turnAway(rec.Name, fmt.Sprintf("proxy %q announced with %v, which belongs to %q", rec.Name, a, o.Name))
			return
		}
	}
	if r := p.edgeConflict(rec); r != "" {
		// Not added, so not forwarded: each proxy checks its own edges.
		p.turnAway(rec.Name, fmt.Sprintf("proxy %q announced: %s", rec.Name, r))
		return
	}
	if p.certs != nil {
		if r := p.checkMemberCert(m); r != "" {
			p.turnAway(rec.Name, fmt.Sprintf("proxy %q announced: %s", rec.Name, r))
			return
		}
	}
	sync := m.Sync
	state := StateJoining
	switch {
	case m.Dead:
		state = StateDead
	case sync:
		state = StateAlive
	}
	if !p.addMember(rec, m.Incarnation, state, sync && state == StateAlive) {
		return
	}
	if !sync {
		// New to us, so maybe to others: forward once.
		p.flood(m, src, rec.Addr)
	}
}

// turnAway tells of a refused record, unless it told the same lately: a
// proxy that knows the record sends it again at every digest that differs.
func (p *Proxy) turnAway(name, reason string) {
	p.mem.mu.Lock()
	told := p.mem.turnedAway[name] == reason
	if !told {
		if p.mem.turnedAway == nil || len(p.mem.turnedAway) >= maxTurnedAway {
			p.mem.turnedAway = map[string]string{}
		}
		p.mem.turnedAway[name] = reason
	}
	p.mem.mu.Unlock()
	if !told {
		p.emit(Event{Kind: EventRefuse, Name: name, Reason: reason})
	}
}

// addMember makes rec a WireGuard peer and a member in state. keepalive
// asks WireGuard for a persistent keepalive to it, which also starts the
// handshake (if this proxy is the one of the two to call), and announces
// this proxy to it.
func (p *Proxy) addMember(rec Member, inc uint32, state MemberState, keepalive bool) bool {
	if _, ok := p.mem.table().byName[rec.Name]; ok {
		return false
	}
	p.mem.put(rec)
	p.mem.mu.Lock()
	p.mem.addedAt[rec.Name] = p.clock.Now()
	p.mem.mu.Unlock()
	// A joining member gets a keepalive as well: of the two, the proxy with
	// the greater WireGuard key then calls at once and the other waits for
	// it (node/callfirst.go). Left to the newcomer's first word alone, the
	// two were silent for half a second whenever the newcomer had the
	// lesser key and so waited for the member's call.
	if err := p.net.AddPeer(rec, keepalive || state == StateJoining); err != nil {
		p.emit(Event{Kind: EventRefuse, Name: rec.Name, Reason: fmt.Sprintf("cannot add proxy %q as a WireGuard peer: %v", rec.Name, err)})
	}
	p.emit(Event{Kind: EventMember, Name: rec.Name, Reason: state.String()})
	p.health.add(rec, inc, state, keepalive)
	return true
}

// syncMissed sends a proxy back from the dead (a partition healed) the
// proxies this one learned at run time while it was away: it could not
// hear of them then. (A restarted proxy learns everything from its seed.)
func (p *Proxy) syncMissed(m Member) {
	since, ok := p.health.deadSince(m.Name)
	if !ok {
		return
	}
	p.mem.mu.Lock()
	var missed []string
	for name, at := range p.mem.addedAt {
		if at >= since && name != m.Name {
			missed = append(missed, name)
		}
	}
	p.mem.mu.Unlock()
	slices.Sort(missed)
	tbl := p.mem.table()
	for _, name := range missed {
		p.sendRecord(m.Addr, tbl.byName[name])
	}
}

// digestEvery is how often a proxy compares its member list with another's.
const digestEvery = 2 * time.Second

// digest hashes the known proxies (name and key; members are never
// forgotten, so equal hashes mean equal lists).
func (p *Proxy) digest() uint32 { return p.mem.table().digest() }

// digestTick sends this proxy's digest to one live proxy, now and then.
func (p *Proxy) digestTick(now int64) {
	if p.cfg.DigestEvery < 0 {
		return
	}
	p.mem.mu.Lock()
	if now < p.mem.nextDigest {
		p.mem.mu.Unlock()
		return
	}
	p.mem.nextDigest = now + int64(p.cfg.DigestEvery)
	p.mem.mu.Unlock()
	// liveOthers are the live proxies but this one, all known. Build a
	// list only when some are cut off from here (rarely): the same draw
	// from the same list either way.
	var a netip.Addr
	if cut := p.health.unreachableAddrs(); len(cut) == 0 {
		n := p.health.liveOthersCount()
		if n == 0 {
			return
		}
		a = p.health.liveOther(p.rng.IntN(n)).Addr
	} else {
		others, _ := p.health.liveOthers()
		var to []netip.Addr
		for _, o := range others {
			if !cut[o.Addr] {
				to = append(to, o.Addr)
			}
		}
		if len(to) == 0 {
			return
		}
		a = to[p.rng.IntN(len(to))]
	}
	p.sendTo(a, 0, &Digest{From: p.cfg.Self.Name, Hash: p.digest()})
}

// handleDigest compares another proxy's member list with this one's: if
// they differ, it sends its list, and answers with its own digest (once:
// an answer is not answered) so that the other sends its list back.
func (p *Proxy) handleDigest(src netip.Addr, m *Digest) {
	mine := p.digest()
	if m.Hash == mine {
		return
	}
	from, ok := p.mem.table().byAddr[src]
	if !ok {
		return
	}
	p.sync(from)
	if !m.Answer {
		p.sendTo(src, 0, &Digest{From: p.cfg.Self.Name, Hash: mine, Answer: true})
	}
}
