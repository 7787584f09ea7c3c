package overlay

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/pias-net/pias/admit"
	"github.com/pias-net/pias/cert"
)

// Proxies in CA mode: admission through a seed by certificate, and the
// certificates that travel with member records.

// maxMemberCert bounds the certificate a member record carries.
const maxMemberCert = 1024

// memberOfCert is the member a proxy certificate describes, at endpoint.
func memberOfCert(c *cert.Certificate, ep netip.AddrPort) Member {
	m := Member{Name: c.Name, Cluster: c.Cluster, PublicKey: c.PublicKey, Endpoint: ep}
	for _, a := range c.Addresses {
		if a.Is4() {
			m.Addr = a
		} else {
			m.Addr6 = a
		}
	}
	return m
}

// certMatches says how a member record differs from its certificate, or "".
func certMatches(c *cert.Certificate, m Member) string {
	want := memberOfCert(c, m.Endpoint)
	switch {
	case c.Role != cert.RoleProxy:
		return fmt.Sprintf("a %v certificate, not a proxy's", c.Role)
	case want != m:
		return fmt.Sprintf("the record (%q %v cluster %q) is not what its certificate says (%q %v cluster %q)",
			m.Name, m.Addrs(), m.Cluster, want.Name, want.Addrs(), want.Cluster)
	}
	return ""
}

// admitProxyByCert admits the proxy that proved the key of h's certificate
// with the member record in h's extra bytes, as handleHello does a
// mesh-key newcomer.
func (p *Proxy) admitProxyByCert(from netip.AddrPort, h *admit.Hello, c *cert.Certificate) string {
	seq, msg, err := ParseMsg(h.Extra)
	rec, ok := msg.(*MemberRecord)
	if err != nil || !ok || seq != 0 {
		return "a proxy's hello must carry its member record"
	}
	m := rec.Member
	if m.Endpoint.Addr().IsUnspecified() {
		m.Endpoint = netip.AddrPortFrom(from.Addr(), m.Endpoint.Port())
	}
	if why := certMatches(c, m); why != "" {
		return why
	}
	if p.banned[m.Name] {
		return fmt.Sprintf("proxy %q was cut off here", m.Name)
	}
	reason := p.admitProxy(from, m, rec.Incarnation, func() { p.holdCert(m.Name, c, h.Raw) })
	return reason
}

// holdCert keeps a member's certificate, to pass on with its records.
func (p *Proxy) holdCert(name string, c *cert.Certificate, raw []byte) {
	p.certs.proxies[name] = heldCert{c, raw, c.Fingerprint()}
}

// heldCert is a member's certificate: parsed, as it travels, and its
// fingerprint.
type heldCert struct {
	cert *cert.Certificate
	raw  []byte
	fp   cert.Fingerprint
}

// proxyExpiry cuts off members whose certificates expired, and warns of
// those that expire within a day.
func (p *Proxy) proxyExpiry(wall time.Time) {
	cs := p.certs
	for _, name := range slices.Sorted(maps.Keys(cs.proxies)) {
		c := cs.proxies[name].cert
		switch {
		case name == p.cfg.Self.Name || p.banned[name]:
		case !wall.Before(c.NotAfter):
			p.banProxy(name, fmt.Sprintf("its certificate expired at %v", c.NotAfter.UTC().Format(time.RFC3339)))
		default:
			p.warnExpiry(c, wall)
		}
	}
}

// memberCert is the certificate to send with name's records (nil outside
// CA mode).
func (p *Proxy) memberCert(name string) []byte {
	if p.certs == nil {
		return nil
	}
	if name == p.cfg.Self.Name {
		return p.certs.selfRaw
	}
	return p.certs.proxies[name].raw
}

// checkMemberCert decides on a record of a proxy this one does not know,
// in CA mode: it must carry a good certificate that says what it says.
func (p *Proxy) checkMemberCert(m *MemberRecord) string {
	if len(m.Cert) == 0 {
		return "it carries no certificate"
	}
	c, err := cert.Parse(m.Cert)
	if err != nil {
		return err.Error()
	}
	if _, err := p.certs.pool.Verify(c, p.clock.Wall(), p.certs.revokedList()); err != nil {
		return err.Error()
	}
	if why := certMatches(c, m.Member); why != "" {
		return why
	}
	p.holdCert(m.Member.Name, c, m.Cert)
	return ""
}

// banProxy cuts off a member whose certificate was revoked: its WireGuard
// peer goes, so it fails its probes and is found dead; its messages are
// refused from now on.
func (p *Proxy) banProxy(name, why string) {
	if p.banned[name] {
		return
	}
	p.banned[name] = true
	m, ok := p.mem.table().byName[name]
	if !ok {
		return
	}
	if et, ok := p.net.(EdgeTransport); ok {
		et.RemovePeer(m.PublicKey)
	}
	p.emit(Event{Kind: EventEdgeRemoved, Name: name, Reason: "proxy: " + why})
}

// seedAnswer takes an offer or a welcome from a seed, while this proxy
// joins the overlay through its seeds.
func (p *Proxy) seedAnswer(now int64, wall time.Time, from netip.AddrPort, pkt []byte) {
	r, out, ok := p.certs.client.Handle(now, wall, from, pkt)
	if !ok {
		return
	}
	if r.Offered {
		// Make the seed a peer now: once it admits us it calls first
		// (its records come through the tunnel).
		if err := p.net.AddPeer(memberOfCert(r.Cert, from), false); err != nil {
			p.emit(Event{Kind: EventRefuse, Name: r.Cert.Name, Reason: fmt.Sprintf("cannot add seed %q as a WireGuard peer: %v", r.Cert.Name, err)})
		}
	}
	for _, d := range out {
		p.net.SendUnderlay(d.To, d.B)
	}
	switch {
	case r.Refused != "":
		name := from.String()
		if r.Cert != nil {
			name = r.Cert.Name
		}
		p.emit(Event{Kind: EventNotAdmitted, Name: name, Reason: r.Refused})
	case r.Admitted:
		p.mem.mu.Lock()
		p.mem.admission.welcomed = true
		p.mem.mu.Unlock()
		p.emit(Event{Kind: EventAdmitted, Name: r.Cert.Name})
		// The seed is a member now: its records (the others) come next,
		// and only a member's are taken. Its incarnation comes with its
		// first probe answer. It calls first (it added us with a
		// keepalive when it took our hello, and we made it a peer at its
		// offer): calling it too would cross two WireGuard handshakes,
		// which stall for 5 s. (A seed with the lesser WireGuard key waits
		// for our call instead, and calls after half a second:
		// node/callfirst.go.)
		if raw, err := r.Cert.Marshal(); err == nil {
			p.holdCert(r.Cert.Name, r.Cert, raw)
			p.addMember(memberOfCert(r.Cert, from), 0, StateAlive, false)
		}
	}
}

// seedTick runs this proxy's admission through its seeds in CA mode: until
// one admits it, and again when it finds itself alone.
func (p *Proxy) seedTick(now int64, wall time.Time) {
	cs := p.certs
	if cs.client == nil {
		return
	}
	p.mem.mu.Lock()
	j := &p.mem.admission
	if j.welcomed && len(p.Live()) <= 1 && now >= j.next {
		// Admitted once, but alone now: say hello again, once a
		// helloEvery at most.
		j.welcomed = false
		j.next = now + int64(helloEvery)
		for _, s := range p.cfg.Certs.Seeds {
			cs.client.Remove(s)
			cs.client.Add(s, now)
		}
	}
	welcomed := j.welcomed
	p.mem.mu.Unlock()
	if welcomed {
		return
	}
	for _, d := range cs.client.Tick(now, wall) {
		p.net.SendUnderlay(d.To, d.B)
	}
}

// selfRecord is this proxy's member record, as its hellos carry it.
func (p *Proxy) selfRecord() []byte {
	b, err := AppendMsg(nil, 0, &MemberRecord{Member: p.self(), Incarnation: p.health.incarnation()})
	if err != nil {
		return nil
	}
	return b
}
