package overlay

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Dynamic proxy membership.
//
// A proxy with a mesh key (a secret shared by the proxies of one overlay)
// needs only one live proxy as seed. It sends each configured seed a hello
// over plain UDP to the seed's WireGuard socket (WireGuard would drop a
// handshake from a key it does not know): its record (name, addresses,
// cluster, WireGuard key and endpoint), a timestamp, and an HMAC under the
// mesh key. A seed that checks the MAC and finds no conflict
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
// So the newcomer makes first contact with everyone but its seed, and the
// others never call it first: two crossed WireGuard handshakes would stall
// for 5 s. The seed floods before it answers, so the others know the
// newcomer before its first handshake can reach them.
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
	// admits: the edge keys each member admits; ownAdmits: this proxy's
	// (see admits.go).
	admits    map[string]*admitSet
	ownAdmits [][32]byte
}

func (ms *members) init(self Member, known, seeds []Member, edges map[netip.Addr]*EdgePolicy) {
	ms.self = self
	ms.admission.seeds = seeds
	ms.addedAt = map[string]int64{}
	ms.admits = map[string]*admitSet{}
	ms.ownAdmits = ownAdmits(edges)
	ms.tbl.Store(newMemberTable(known))
}

func (ms *members) table() *memberTable { return ms.tbl.Load() }

// memberTable is an immutable snapshot of the known proxies.
type memberTable struct {
	names  []string // sorted
	byName map[string]Member
	byAddr map[netip.Addr]Member // IPv4 and IPv6 overlay addresses
}

func newMemberTable(ms []Member) *memberTable {
	t := &memberTable{byName: map[string]Member{}, byAddr: map[netip.Addr]Member{}}
	for _, m := range ms {
		t.put(m)
	}
	return t
}

func (t *memberTable) put(m Member) {
	if _, ok := t.byName[m.Name]; !ok {
		t.names = append(t.names, m.Name)
		slices.Sort(t.names)
	}
	t.byName[m.Name] = m
	for _, a := range m.Addrs() {
		t.byAddr[a] = m
	}
}

func (t *memberTable) with(m Member) *memberTable {
	n := &memberTable{names: slices.Clone(t.names), byName: maps.Clone(t.byName), byAddr: maps.Clone(t.byAddr)}
	n.put(m)
	return n
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
	_, ok := ms.table().byAddr[a]
	return ok
}

// addrOf is the IPv4 overlay address of the proxy called name (invalid if
// unknown).
func (ms *members) addrOf(name string) netip.Addr { return ms.table().byName[name].Addr }

// put stores m in the table (under ctl: the only writer).
func (ms *members) put(m Member) { ms.tbl.Store(ms.table().with(m)) }

// Known lists every proxy this proxy knows, itself included, by name.
func (p *Proxy) Known() []Member {
	t := p.mem.table()
	out := make([]Member, len(t.names))
	for i, n := range t.names {
		out[i] = t.byName[n]
	}
	return out
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
	body, err := AppendMsg(nil, 0, &MemberRecord{Member: self, Incarnation: p.health.incarnation()})
	if err != nil {
		p.emit(Event{Kind: EventRefuse, Name: self.Name, Reason: "cannot announce this proxy: " + err.Error()})
		return
	}
	pkt := sealUnderlay(p.cfg.MeshKey, kindHello, p.clock.Wall(), body)
	for _, s := range to {
		p.net.SendUnderlay(s.Endpoint, pkt)
	}
	if silent {
		p.emit(Event{Kind: EventUnadmitted, Name: self.Name, Reason: fmt.Sprintf(
			"no seed answered %d hellos: is the mesh key the same file on every proxy, and are the seeds up at their endpoints?", rounds)})
	}
}

// HandleUnderlay takes a datagram that arrived on the WireGuard socket with
// the UnderlayMagic prefix.
func (p *Proxy) HandleUnderlay(from netip.AddrPort, pkt []byte) {
	if p.cfg.MeshKey == nil {
		return
	}
	p.ctl.Lock()
	defer p.ctl.Unlock()
	defer p.flush()
	kind, body, err := openUnderlay(p.cfg.MeshKey, pkt, p.clock.Wall())
	if err != nil {
		return // not from a holder of the mesh key, or stale: say nothing
	}
	switch kind {
	case kindHello:
		_, m, err := ParseMsg(body)
		rec, ok := m.(*MemberRecord)
		if err != nil || !ok {
			return
		}
		p.handleHello(from, rec)
	case kindWelcome:
		w, err := parseWelcome(body)
		if err != nil {
			return
		}
		p.mem.mu.Lock()
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

// handleHello admits a newcomer, or tells it why not.
func (p *Proxy) handleHello(from netip.AddrPort, m *MemberRecord) {
	rec := m.Member
	if rec.Endpoint.Addr().IsUnspecified() {
		rec.Endpoint = netip.AddrPortFrom(from.Addr(), rec.Endpoint.Port())
	}
	self := p.self()
	reason := ""
	tbl := p.mem.table()
	old, known := tbl.byName[rec.Name]
	switch {
	case rec.Name == self.Name:
		reason = "the name " + rec.Name + " is the seed's own"
	case known && old.PublicKey != rec.PublicKey && old.PublicKey != [32]byte{}:
		reason = "the name " + rec.Name + " belongs to another WireGuard key"
	case known && (old.Addr != rec.Addr || old.Addr6 != rec.Addr6):
		reason = fmt.Sprintf("%q has overlay addresses %v here, not %v", rec.Name, old.Addrs(), rec.Addrs())
	case !known && tbl.byAddr[rec.Addr].Name != "":
		reason = fmt.Sprintf("overlay address %v belongs to %q", rec.Addr, tbl.byAddr[rec.Addr].Name)
	case !known && rec.Addr6.IsValid() && tbl.byAddr[rec.Addr6].Name != "":
		reason = fmt.Sprintf("overlay address %v belongs to %q", rec.Addr6, tbl.byAddr[rec.Addr6].Name)
	case rec.Cluster == "":
		reason = "no cluster"
	}
	if reason != "" {
		p.emit(Event{Kind: EventRefuse, Name: rec.Name, Reason: fmt.Sprintf("proxy %q from %v: %s", rec.Name, from, reason)})
		p.welcome(from, self.Name, reason)
		return
	}
	if known && old.PublicKey != [32]byte{} {
		// Known already: a configured mesh, or a restart that lost what
		// it had learned. Welcome it and tell it everyone again.
		p.welcome(from, self.Name, "")
		p.sync(rec)
		return
	}
	p.addMember(rec, m.Incarnation, StateAlive, true)
	p.flood(&MemberRecord{Member: rec, Incarnation: m.Incarnation}, rec.Addr)
	p.welcome(from, self.Name, "")
	p.sync(rec)
}

// welcome answers a hello: admitted, or refused for reason.
func (p *Proxy) welcome(to netip.AddrPort, seed, reason string) {
	p.net.SendUnderlay(to, sealUnderlay(p.cfg.MeshKey, kindWelcome, p.clock.Wall(), appendWelcome(nil, seed, reason)))
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
	p.sendTo(to, 0, &MemberRecord{Member: mb, Incarnation: inc, Sync: true, Dead: st == StateDead})
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
			p.emit(Event{Kind: EventRefuse, Name: rec.Name, Reason: fmt.Sprintf("proxy %q announced with another WireGuard key; kept the one known", rec.Name)})
		}
		return
	}
	for _, a := range rec.Addrs() {
		if o, ok := tbl.byAddr[a]; ok {
			p.emit(Event{Kind: EventRefuse, Name: rec.Name, Reason: fmt.Sprintf("proxy %q announced with %v, which belongs to %q", rec.Name, a, o.Name)})
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

// addMember makes rec a WireGuard peer and a member in state. keepalive
// asks WireGuard for a persistent keepalive to it, which also starts the
// handshake: this proxy makes the first contact (and announces itself).
func (p *Proxy) addMember(rec Member, inc uint32, state MemberState, keepalive bool) bool {
	if _, ok := p.mem.table().byName[rec.Name]; ok {
		return false
	}
	p.mem.put(rec)
	p.mem.mu.Lock()
	p.mem.addedAt[rec.Name] = p.clock.Now()
	p.mem.mu.Unlock()
	if err := p.net.AddPeer(rec, keepalive); err != nil {
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

// The underlay messages: hello (newcomer → seed) and welcome (the answer),
// sent outside the tunnels on the WireGuard UDP socket, authenticated by
// the mesh key.
//
//	"PIAS" kind:u8 time:u64 (Unix milliseconds) body mac:32
//
// mac is HMAC-SHA256 under the mesh key of everything before it. A message
// more than underlaySkew away from the receiver's clock is ignored (a
// replay could only repeat an admission, which is idempotent).
const (
	// UnderlayMagic starts every underlay message (WireGuard's own
	// messages start with a type 1..4 and three zero bytes).
	UnderlayMagic = "PIAS"

	kindHello   = 1
	kindWelcome = 2

	underlayHeader = len(UnderlayMagic) + 1 + 8
	underlayMAC    = sha256.Size
	underlaySkew   = 2 * time.Minute
	// MaxUnderlayLen is the size of the longest valid underlay message: a
	// hello with the longest TypeMember (a welcome is shorter).
	MaxUnderlayLen = underlayHeader + HeaderLen + 4 + maxPeerLen + underlayMAC
)

func sealUnderlay(key []byte, kind byte, now time.Time, body []byte) []byte {
	b := make([]byte, 0, underlayHeader+len(body)+underlayMAC)
	b = append(b, UnderlayMagic...)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, uint64(now.UnixMilli()))
	b = append(b, body...)
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return mac.Sum(b)
}

func openUnderlay(key []byte, pkt []byte, now time.Time) (byte, []byte, error) {
	if len(pkt) < underlayHeader+underlayMAC || len(pkt) > MaxUnderlayLen {
		return 0, nil, fmt.Errorf("underlay message: %d bytes", len(pkt))
	}
	if !bytes.HasPrefix(pkt, []byte(UnderlayMagic)) {
		return 0, nil, errors.New("underlay message: bad magic")
	}
	signed, sum := pkt[:len(pkt)-underlayMAC], pkt[len(pkt)-underlayMAC:]
	mac := hmac.New(sha256.New, key)
	mac.Write(signed)
	if !hmac.Equal(mac.Sum(nil), sum) {
		return 0, nil, errors.New("underlay message: bad MAC")
	}
	kind := pkt[len(UnderlayMagic)]
	at := time.UnixMilli(int64(binary.BigEndian.Uint64(pkt[len(UnderlayMagic)+1:])))
	if d := now.Sub(at); d > underlaySkew || d < -underlaySkew {
		return 0, nil, fmt.Errorf("underlay message: sent %v away from now", d.Round(time.Second))
	}
	if kind != kindHello && kind != kindWelcome {
		return 0, nil, fmt.Errorf("underlay message: unknown kind %d", kind)
	}
	return kind, signed[underlayHeader:], nil
}

// welcomeMsg is the body of a welcome: the seed's name and, if it refused,
// why.
//
//	ok:u8 (1 admitted, 0 refused) name:string reason:string
type welcomeMsg struct {
	ok           bool
	name, reason string
}

func appendWelcome(b []byte, seed, reason string) []byte {
	ok := byte(1)
	if reason != "" {
		ok = 0
	}
	if len(seed) > MaxString {
		seed = seed[:MaxString]
	}
	if len(reason) > MaxString {
		reason = reason[:MaxString]
	}
	b = append(b, ok)
	b = appendString(b, seed)
	return appendString(b, reason)
}

func parseWelcome(b []byte) (welcomeMsg, error) {
	d := decoder{b: b, what: "welcome"}
	ok := d.u8("status")
	w := welcomeMsg{ok: ok == 1}
	w.name = d.str("name length", "name")
	w.reason = d.str("reason length", "reason")
	switch {
	case d.err != nil:
		return welcomeMsg{}, d.err
	case ok > 1:
		return welcomeMsg{}, fmt.Errorf("welcome: status %d", ok)
	case len(d.b) != 0:
		return welcomeMsg{}, fmt.Errorf("welcome: %d trailing bytes", len(d.b))
	case w.ok != (w.reason == ""):
		return welcomeMsg{}, errors.New("welcome: a refusal needs a reason, an admission has none")
	}
	return w, nil
}

// digestEvery is how often a proxy compares its member list with another's.
const digestEvery = 2 * time.Second

// digest hashes the known proxies (name and key; members are never
// forgotten, so equal hashes mean equal lists).
func (p *Proxy) digest() uint32 {
	h := uint64(fnvOffset)
	for _, m := range p.Known() {
		h = fnvAdd(h, m.Name)
		h = fnvAdd(h, "\x00")
		h = fnvAdd(h, m.PublicKey[:])
	}
	return fold32(h)
}

// digestTick sends this proxy's digest to one live proxy, now and then.
func (p *Proxy) digestTick(now int64) {
	p.mem.mu.Lock()
	if now < p.mem.nextDigest {
		p.mem.mu.Unlock()
		return
	}
	p.mem.nextDigest = now + int64(digestEvery)
	p.mem.mu.Unlock()
	cut := p.health.unreachableAddrs()
	var to []netip.Addr
	for _, n := range p.Live() {
		if a := p.mem.addrOf(n); n != p.cfg.Self.Name && a.IsValid() && !cut[a] {
			to = append(to, a)
		}
	}
	if len(to) == 0 {
		return
	}
	a := to[p.rng.IntN(len(to))]
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
