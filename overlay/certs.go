package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/pias-net/pias/admit"
	"github.com/pias-net/pias/cert"
)

// Admission by certificate (CA mode).
//
// A proxy in CA mode admits a node that proves, with the handshake of
// package admit, the WireGuard key of a certificate its CA signed:
//
//   - an edge (target or client): it becomes a WireGuard peer with
//     AllowedIPs exactly its certificate's addresses, may join the groups
//     its certificate grants, and holds its addresses for edgeLease after
//     each hello (the edge renews every EdgeRenew);
//   - a proxy: admitted as a mesh-key newcomer is (members.go), and every
//     record of it that proxies pass on carries its certificate, which
//     each checks.
//
// Refusals of a node that proved its key are told to it (the welcome's
// reason) and logged; anything else gets no answer beyond the offer of a
// request, which is no longer than the request.
//
// A certificate that expires, or that a newer revocation list revokes, is
// cut off: its WireGuard peer removed, its joins withdrawn (with their
// flows), a proxy marked dead for good. A day before expiry, a warning.

// CertConfig is a proxy's CA mode.
type CertConfig struct {
	Pool *cert.Pool
	Cert *cert.Certificate // this proxy's
	// PrivateKey is this proxy's WireGuard private key: the handshake's
	// MACs are under its X25519 secret with the node's.
	PrivateKey [32]byte
	Revoked    *cert.RevocationList // held at start; nil: none
	// Seeds are proxies to be admitted by, known only by endpoint.
	Seeds []netip.AddrPort
}

// EdgeTransport is a Transport that adds and removes edges' WireGuard
// peers: CA mode needs it.
type EdgeTransport interface {
	Transport
	// AddEdge makes the edge with this key a peer with exactly these
	// addresses as AllowedIPs (or updates it).
	AddEdge(key [32]byte, addrs []netip.Addr, endpoint netip.AddrPort) error
	// RemovePeer removes the peer with this key, and its sessions.
	RemovePeer(key [32]byte)
	// LastHandshake is when the peer with this key last completed a
	// WireGuard handshake here (zero: never, or unknown).
	LastHandshake(key [32]byte) time.Time
}

const (
	// EdgeRenew is how often an edge says hello again to each proxy that
	// admitted it; edgeLease is how long an admission lasts without one.
	EdgeRenew = 20 * time.Second
	edgeLease = 3*EdgeRenew + 5*time.Second
	// expiryWarning is how long before a certificate's expiry it is
	// warned of.
	expiryWarning = 24 * time.Hour
	// helloRate and helloBurst bound the hellos whose MAC this proxy
	// checks (an X25519 and a SHA-256 each, then an Ed25519 if the MAC
	// holds): a flood of forged ones costs at most about a tenth of a
	// core, and genuine nodes retry.
	helloRate  = 500
	helloBurst = 100
	// offerRate bounds the offers sent (each answers a request of at
	// least its size).
	offerRate = 1000
)

// certState is the CA-mode part of a proxy. Guarded by ctl.
type certState struct {
	pool    *cert.Pool
	self    *cert.Certificate
	selfRaw []byte
	keys    *admit.Keys
	revoked *cert.RevocationList
	latest  admit.Latest // the last hello taken from each verified key
	hellos  bucket       // checks of hellos' MACs
	offers  bucket
	edges   map[[32]byte]*certEdge // admitted edges by key
	client  *admit.Client          // this proxy's admission through its seeds
	warned  map[cert.Fingerprint]bool
	// proxies: other members' certificates, by name (this proxy's is
	// self).
	proxies map[string]heldCert
	rlParts rlAssembly // a revocation list arriving in parts
	// claims: the edges other proxies admitted, by address and proxy.
	claims          map[netip.Addr]map[string]edgeClaim
	nClaims         int
	nextClaimExpiry int64
}

// edgeClaim is an edge another proxy admitted.
type edgeClaim struct {
	key   [32]byte
	name  string
	since int64 // Unix ms, the claiming proxy's clock
	heard int64 // when this proxy last heard it, monotonic ns
}

// claimRefresh is how often a proxy tells the others again of each edge
// it admits (at a renewal); a claim not heard for claimLife is forgotten
// (its release was lost, or its proxy forgot the edge).
const (
	claimRefresh = time.Minute
	claimLife    = 3*claimRefresh + edgeLease
)

// maxClaims bounds the claims a proxy keeps (a few MB): past it, new ones
// are not kept, and their addresses are not defended here.
const maxClaims = 1 << 16

// certEdge is an edge admitted by certificate.
type certEdge struct {
	pol       *EdgePolicy
	cert      *cert.Certificate
	fp        cert.Fingerprint
	until     int64 // the lease: monotonic ns
	since     int64 // when admitted, Unix ms
	endpoint  netip.AddrPort
	claimedAt int64 // when this proxy last told the others, monotonic ns
}

func newCertState(c *CertConfig, proxyName string) (*certState, error) {
	if c.Pool == nil || c.Cert == nil {
		return nil, errors.New("overlay: CA mode needs a CA pool and a certificate")
	}
	raw, err := c.Cert.Marshal()
	if err != nil {
		return nil, err
	}
	if len(raw) > admit.MaxOfferCert || len(raw) > maxMemberCert {
		return nil, fmt.Errorf("overlay: certificate of %d bytes: a proxy's must fit in %d", len(raw), min(admit.MaxOfferCert, maxMemberCert))
	}
	keys, err := admit.NewKeys(c.PrivateKey)
	if err != nil {
		return nil, err
	}
	if keys.Public != c.Cert.PublicKey {
		return nil, errors.New("overlay: the certificate names another WireGuard key")
	}
	return &certState{pool: c.Pool, self: c.Cert, selfRaw: raw, keys: keys, revoked: c.Revoked,
		edges: map[[32]byte]*certEdge{}, claims: map[netip.Addr]map[string]edgeClaim{}, warned: map[cert.Fingerprint]bool{}, proxies: map[string]heldCert{}}, nil
}

func (cs *certState) revokedList() cert.Revoked {
	if cs.revoked == nil {
		return nil
	}
	return cs.revoked
}

// handleAdmit takes a datagram of the certificate handshake.
func (p *Proxy) handleAdmit(from netip.AddrPort, pkt []byte) {
	cs := p.certs
	wall, now := p.clock.Wall(), p.clock.Now()
	m, err := admit.Open(pkt, wall)
	if err != nil {
		return
	}
	switch m.Kind {
	case admit.KindRequest:
		nonce, err := admit.ParseRequest(m)
		if err != nil || !cs.offers.spend(now, offerRate, offerRate) {
			return
		}
		if b := admit.AppendOffer(wall, nonce, cs.selfRaw, m.Size); b != nil {
			p.net.SendUnderlay(from, b)
		}
	case admit.KindHello:
		h, err := admit.ParseHello(cs.keys, m)
		if err != nil {
			return
		}
		// A node met lately (a renewal) costs an HMAC; another, an X25519
		// (and, if its MAC holds, an Ed25519): those are rationed.
		if !cs.keys.Cached(h.Cert.PublicKey) && !cs.hellos.spend(now, helloRate, helloBurst) {
			return
		}
		if admit.CheckHello(cs.keys, pkt, m, h) != nil {
			return // not proved: say nothing
		}
		reason, renewal := p.verifyHello(h, wall)
		if reason == "" {
			// Only a verified key is remembered: nobody can fill this
			// memory, or the MAC key cache, with keys of their own.
			if !cs.latest.Take(h.Cert.PublicKey, h.At.UnixMilli(), wall.UnixMilli()) {
				return // a replay, or older than one taken
			}
			cs.keys.Remember(h)
			reason = p.admitByCert(from, h, now, renewal)
		}
		if reason != "" {
			p.stats.helloRefused.Add(1)
			p.emit(Event{Kind: EventRefuse, Name: h.Cert.Name, Reason: fmt.Sprintf("%v %q from %v: %s", h.Cert.Role, h.Cert.Name, from, reason)})
		}
		p.net.SendUnderlay(from, admit.AppendWelcome(h, wall, admit.Welcome{Nonce: h.Nonce, OK: reason == "", Reason: reason}))
	case admit.KindOffer, admit.KindWelcome:
		if cs.client != nil {
			p.seedAnswer(now, wall, from, pkt)
		}
	}
}

// verifyHello checks the certificate of a hello whose MAC holds: it says
// why it is no good, or "", and whether it renews an edge's admission.
// (A refusal here keeps no state: the same hello again gets the same
// answer, no longer than itself.)
func (p *Proxy) verifyHello(h *admit.Hello, wall time.Time) (reason string, renewal bool) {
	cs := p.certs
	c := h.Cert
	if e := cs.edges[c.PublicKey]; e != nil && e.fp == c.Fingerprint() && wall.Before(c.NotAfter) && !cs.revoked.IsRevoked(e.fp) {
		// A renewal of a certificate verified at admission (revocation
		// and expiry are watched since): no signature to check again.
		return "", true
	}
	if _, err := cs.pool.Verify(c, wall, cs.revokedList()); err != nil {
		return err.Error(), false
	}
	if c.Role != cert.RoleProxy && len(h.Extra) > 0 {
		return fmt.Sprintf("a %v's hello carries no member record: only a proxy's does", c.Role), false
	}
	return "", false
}

// admitByCert admits the node of a hello verifyHello passed, or says why
// not.
func (p *Proxy) admitByCert(from netip.AddrPort, h *admit.Hello, now int64, renewal bool) string {
	c := h.Cert
	if renewal {
		return p.admitEdge(from, p.certs.edges[c.PublicKey].cert, now)
	}
	switch c.Role {
	case cert.RoleProxy:
		return p.admitProxyByCert(from, h, c)
	case cert.RoleTarget, cert.RoleClient:
		return p.admitEdge(from, c, now)
	}
	return fmt.Sprintf("role %v", c.Role)
}

// admitEdge admits (or renews) the edge of certificate c at from.
func (p *Proxy) admitEdge(from netip.AddrPort, c *cert.Certificate, now int64) string {
	cs := p.certs
	if e := cs.edges[c.PublicKey]; e != nil {
		if e.fp != c.Fingerprint() {
			// A new certificate for the same key: take it afresh.
			p.removeEdge(e, "its certificate was replaced")
		} else {
			e.until = now + int64(edgeLease)
			if now-e.claimedAt > int64(claimRefresh) {
				// Claims are soft state elsewhere: say it again now and
				// then (a copy may have been lost).
				e.claimedAt = now
				p.flood(e.claim(p.cfg.Self.Name, false))
			}
			if e.endpoint != from {
				// It moved (a new NAT mapping, a new address). (Not
				// otherwise: reconfiguring the peer at every renewal
				// would stall its packets for nothing.)
				if et, ok := p.net.(EdgeTransport); ok {
					et.AddEdge(c.PublicKey, c.Addresses, from)
				}
				e.endpoint = from
			}
			return ""
		}
	}
	for _, a := range c.Addresses {
		if m, ok := p.mem.table().byAddr[a]; ok {
			return fmt.Sprintf("overlay address %v belongs to proxy %q", a, m.Name)
		}
		if e := p.edges[a]; e != nil {
			return fmt.Sprintf("overlay address %v is held by edge %q, which is live", a, e.Name)
		}
		for _, proxy := range slices.Sorted(maps.Keys(cs.claims[a])) {
			if cl := cs.claims[a][proxy]; cl.key != c.PublicKey {
				return fmt.Sprintf("overlay address %v is held by edge %q, which is live at proxy %q", a, cl.name, proxy)
			}
		}
	}
	// (A proxy always has an IPv4 address; an IPv6 one, maybe.)
	if !slices.ContainsFunc(c.Addresses, netip.Addr.Is4) && !p.cfg.Self.Addr6.IsValid() {
		return "no overlay address of a family this proxy speaks"
	}
	et, ok := p.net.(EdgeTransport)
	if !ok {
		return "this proxy cannot add edges"
	}
	if err := et.AddEdge(c.PublicKey, c.Addresses, from); err != nil {
		return fmt.Sprintf("cannot add it as a WireGuard peer: %v", err)
	}
	pol := &EdgePolicy{Name: c.Name, PublicKey: c.PublicKey, Rights: c.Groups, SetsPolicy: c.SetsPolicy, MaxWeight: c.MaxWeight, Role: c.Role}
	e := &certEdge{pol: pol, cert: c, fp: c.Fingerprint(), until: now + int64(edgeLease), since: p.clock.Wall().UnixMilli(), endpoint: from, claimedAt: now}
	cs.edges[c.PublicKey] = e
	for _, a := range c.Addresses {
		p.edges[a] = pol
	}
	p.flood(e.claim(p.cfg.Self.Name, false))
	p.emit(Event{Kind: EventEdgeAdmitted, Name: c.Name, Reason: fmt.Sprintf("%v %v at %v", c.Role, c.Addresses, from)})
	return ""
}

// removeEdge cuts an admitted edge off: its joins (and their flows), its
// addresses and its WireGuard peer.
func (p *Proxy) removeEdge(e *certEdge, why string) {
	for _, a := range e.cert.Addresses {
		for _, g := range p.jap.groupsOf(a) {
			p.leaveWhy(a, g, EventLeave, why)
		}
		if p.edges[a] == e.pol {
			delete(p.edges, a)
		}
	}
	delete(p.certs.edges, e.cert.PublicKey)
	p.flood(e.claim(p.cfg.Self.Name, true))
	if et, ok := p.net.(EdgeTransport); ok {
		et.RemovePeer(e.cert.PublicKey)
	}
	p.emit(Event{Kind: EventEdgeRemoved, Name: e.cert.Name, Reason: why})
}

// certTick runs CA mode's timers: leases, expiry and its warnings.
func (p *Proxy) certTick(now int64) {
	cs := p.certs
	wall := p.clock.Wall()
	p.warnExpiry(cs.self, wall)
	for _, k := range sortedKeys(cs.edges) {
		e := cs.edges[k]
		switch {
		case now > e.until && p.handshakeLately(e, wall):
			// Its hellos are lost (a flood of forged ones fills the
			// queues), but its tunnel is alive: only its key can
			// handshake. The lease goes on.
			e.until = now + int64(EdgeRenew)
		case now > e.until:
			p.removeEdge(e, "no hello within its lease")
		case !wall.Before(e.cert.NotAfter):
			p.removeEdge(e, fmt.Sprintf("its certificate expired at %v", e.cert.NotAfter.UTC().Format(time.RFC3339)))
		default:
			p.warnExpiry(e.cert, wall)
		}
	}
	p.proxyExpiry(wall)
	if now >= cs.nextClaimExpiry {
		cs.nextClaimExpiry = now + int64(claimRefresh)
		p.expireClaims(now)
	}
	p.seedTick(now, wall)
}

// handshakeLately reports whether e's WireGuard session was renewed within
// a lease: WireGuard handshakes again at least every 2 minutes while
// packets flow (and an edge probes its proxies every 200 ms).
func (p *Proxy) handshakeLately(e *certEdge, wall time.Time) bool {
	et, ok := p.net.(EdgeTransport)
	if !ok {
		return false
	}
	at := et.LastHandshake(e.cert.PublicKey)
	return !at.IsZero() && wall.Sub(at) < wireguardRekey+edgeLease
}

// wireguardRekey is how often WireGuard handshakes again on a busy session
// (REKEY_AFTER_TIME).
const wireguardRekey = 2 * time.Minute

// warnExpiry warns once of a certificate that expires within a day.
func (p *Proxy) warnExpiry(c *cert.Certificate, wall time.Time) {
	if c.NotAfter.Sub(wall) > expiryWarning {
		return
	}
	fp := c.Fingerprint()
	if p.certs.warned[fp] {
		return
	}
	if len(p.certs.warned) > 4096 {
		clear(p.certs.warned)
	}
	p.certs.warned[fp] = true
	p.emit(Event{Kind: EventCertExpiring, Name: c.Name, Reason: fmt.Sprintf("the %v certificate of %q expires at %v", c.Role, c.Name, c.NotAfter.UTC().Format(time.RFC3339))})
}

// SetRevocationList offers a revocation list (from this proxy's file, or
// from a peer): if it is newer than the one held and signed by the CA, it
// is held from now on, every node it revokes is cut off, and it is passed
// to every live proxy. It reports whether the list was taken.
func (p *Proxy) SetRevocationList(rl *cert.RevocationList) error {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	defer p.flush()
	return p.takeRevocationList(rl, netip.Addr{})
}

func (p *Proxy) takeRevocationList(rl *cert.RevocationList, from netip.Addr) error {
	cs := p.certs
	if cs == nil {
		return errors.New("not in CA mode")
	}
	held, err := cs.pool.Update(cs.revoked, rl)
	if err != nil {
		return err
	}
	cs.revoked = held
	p.emit(Event{Kind: EventRevocation, Reason: fmt.Sprintf("serial %d, %d revoked", held.Serial, len(held.Revoked))})
	for _, k := range sortedKeys(cs.edges) {
		if e := cs.edges[k]; held.IsRevoked(e.fp) {
			p.removeEdge(e, "its certificate was revoked")
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cs.proxies)) {
		if held.IsRevoked(cs.proxies[name].fp) {
			p.banProxy(name, "its certificate was revoked")
		}
	}
	p.floodRevocationList(from)
	return nil
}

// RevocationSerial is the serial of the revocation list held (0: none).
func (p *Proxy) RevocationSerial() uint64 {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	if p.certs == nil || p.certs.revoked == nil {
		return 0
	}
	return p.certs.revoked.Serial
}

// CertNotAfter is when this proxy's certificate expires (zero in static
// mode).
func (p *Proxy) CertNotAfter() time.Time {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	if p.certs == nil {
		return time.Time{}
	}
	return p.certs.self.NotAfter
}

// CertEdges names the edges admitted by certificate here, sorted.
func (p *Proxy) CertEdges() []string {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	if p.certs == nil {
		return nil
	}
	var out []string
	for _, e := range p.certs.edges {
		out = append(out, e.cert.Name)
	}
	slices.Sort(out)
	return out
}

func sortedKeys[V any](m map[[32]byte]V) [][32]byte {
	out := make([][32]byte, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// spend takes one token of a bucket of burst tokens refilled at rate a
// second, if there is one.
func (b *bucket) spend(now int64, rate float64, burst int) bool {
	if b.at == 0 {
		b.tokens, b.at = float64(burst), now
	}
	b.tokens = min(float64(burst), b.tokens+rate*float64(now-b.at)/1e9)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// rlAssembly gathers the parts of revocation lists, one list per sending
// proxy (so that one proxy's garbage cannot spoil another's copy), at most
// maxAssemblies at once.
type rlAssembly map[string]*rlParts

type rlParts struct {
	serial uint64
	parts  [][]byte
	got    int
}

const maxAssemblies = 8

// floodRevocationList sends the list held to every live proxy but this one
// and except.
func (p *Proxy) floodRevocationList(except netip.Addr) {
	for _, name := range p.Live() {
		if a := p.mem.addrOf(name); name != p.cfg.Self.Name && a.IsValid() && a != except {
			p.sendRevocationList(a)
		}
	}
}

// sendRevocationList sends the list held to the proxy at a, in parts.
func (p *Proxy) sendRevocationList(a netip.Addr) {
	if p.certs == nil || p.certs.revoked == nil {
		return
	}
	b, err := p.certs.revoked.Marshal()
	if err != nil {
		return
	}
	parts := (len(b) + revocationChunk - 1) / revocationChunk
	for i := range parts {
		chunk := b[i*revocationChunk : min((i+1)*revocationChunk, len(b))]
		p.sendTo(a, 0, &RevocationPart{Serial: p.certs.revoked.Serial, Part: uint8(i), Parts: uint8(parts), Data: chunk})
	}
}

// handleRevocationPart takes one part of a revocation list from the proxy
// at src; with the last, it offers the list.
func (p *Proxy) handleRevocationPart(src netip.Addr, m *RevocationPart) {
	cs := p.certs
	if cs == nil || (cs.revoked != nil && m.Serial <= cs.revoked.Serial) {
		return
	}
	from := p.mem.table().byAddr[src].Name
	if cs.rlParts == nil {
		cs.rlParts = rlAssembly{}
	}
	a := cs.rlParts[from]
	if a == nil || a.serial != m.Serial || len(a.parts) != int(m.Parts) {
		if a == nil && len(cs.rlParts) >= maxAssemblies {
			clear(cs.rlParts)
		}
		a = &rlParts{serial: m.Serial, parts: make([][]byte, m.Parts)}
		cs.rlParts[from] = a
	}
	if a.parts[m.Part] == nil {
		a.parts[m.Part] = m.Data
		a.got++
	}
	if a.got < len(a.parts) {
		return
	}
	delete(cs.rlParts, from)
	rl, err := cert.ParseRevocationList(bytes.Join(a.parts, nil))
	if err != nil {
		p.emit(Event{Kind: EventRefuse, Name: from, Reason: fmt.Sprintf("revocation list from %q: %v", from, err)})
		return
	}
	if err := p.takeRevocationList(rl, src); err != nil && !errors.Is(err, cert.ErrOlderList) {
		p.emit(Event{Kind: EventRefuse, Name: from, Reason: fmt.Sprintf("revocation list from %q: %v", from, err)})
	}
}

// Claims. Two certificates may name one address (a CA re-signed a node
// with a new key, or by mistake): the edge live first keeps it, anywhere.
// Each proxy tells the others of the edges it admits and lets go
// (TypeEdgeClaim), refuses a hello whose addresses another live proxy's
// edge of another key holds, and gives up its own edge when it hears of an
// older one of another key with its address (the younger of two admitted
// at once loses, at both proxies). A proxy's claims go with it when it
// dies or restarts.

func (e *certEdge) claim(self string, release bool) *EdgeClaim {
	return &EdgeClaim{From: self, Release: release, Key: e.cert.PublicKey, Name: e.cert.Name, Since: e.since, Addrs: e.cert.Addresses}
}

// older reports whether claim (since, key) is older than (since2, key2):
// by time, then by key.
func older(since int64, key [32]byte, since2 int64, key2 [32]byte) bool {
	if since != since2 {
		return since < since2
	}
	return bytes.Compare(key[:], key2[:]) < 0
}

// handleEdgeClaim takes another proxy's claim or release, from src.
func (p *Proxy) handleEdgeClaim(src netip.Addr, m *EdgeClaim) {
	cs := p.certs
	if cs == nil {
		return
	}
	for _, a := range m.Addrs {
		byProxy := cs.claims[a]
		old, had := byProxy[m.From]
		if m.Release {
			if had && old.key == m.Key {
				delete(byProxy, m.From)
				cs.nClaims--
				if len(byProxy) == 0 {
					delete(cs.claims, a)
				}
			}
			continue
		}
		if !had && cs.nClaims >= maxClaims {
			continue
		}
		if byProxy == nil {
			byProxy = map[string]edgeClaim{}
			cs.claims[a] = byProxy
		}
		if !had {
			cs.nClaims++
		}
		byProxy[m.From] = edgeClaim{key: m.Key, name: m.Name, since: m.Since, heard: p.clock.Now()}
		if pol := p.edges[a]; pol != nil && pol.PublicKey != m.Key {
			e := cs.edges[pol.PublicKey]
			switch {
			case e == nil:
			case older(m.Since, m.Key, e.since, e.cert.PublicKey):
				p.removeEdge(e, fmt.Sprintf("overlay address %v is held by edge %q at proxy %q, live before it", a, m.Name, m.From))
			default:
				// Ours is older: the claimant may have missed our claim.
				// Tell it again, and it gives up its edge.
				p.sendTo(src, 0, e.claim(p.cfg.Self.Name, false))
			}
		}
	}
}

// expireClaims forgets the claims not heard for claimLife.
func (p *Proxy) expireClaims(now int64) {
	cs := p.certs
	for a, byProxy := range cs.claims {
		for name, c := range byProxy {
			if now-c.heard > int64(claimLife) {
				delete(byProxy, name)
				cs.nClaims--
			}
		}
		if len(byProxy) == 0 {
			delete(cs.claims, a)
		}
	}
}

// forgetClaims drops the claims of proxies that died or restarted.
func (p *Proxy) forgetClaims(gone []*Member) {
	cs := p.certs
	if cs == nil || len(gone) == 0 {
		return
	}
	for a, byProxy := range cs.claims {
		for _, m := range gone {
			if _, ok := byProxy[m.Name]; ok {
				delete(byProxy, m.Name)
				cs.nClaims--
			}
		}
		if len(byProxy) == 0 {
			delete(cs.claims, a)
		}
	}
}

// sendClaims tells the proxy at a of every edge admitted here.
func (p *Proxy) sendClaims(a netip.Addr) {
	if p.certs == nil {
		return
	}
	for _, k := range sortedKeys(p.certs.edges) {
		p.sendTo(a, 0, p.certs.edges[k].claim(p.cfg.Self.Name, false))
	}
}

// claimsSame reports whether the proxy called name claims the edge at
// addr with the key of this proxy's edge there.
func (p *Proxy) claimsSame(name string, addr netip.Addr) bool {
	pol := p.edges[addr]
	c, ok := p.certs.claims[addr][name]
	return pol != nil && ok && c.key == pol.PublicKey
}
