package overlay

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/pias-net/pias/admit"
	"github.com/pias-net/pias/cert"
)

// Reload is what a proxy may change while it runs (SIGHUP): its static
// edges, the timers of its JAP and IAP, and in CA mode its CA pool, its
// own certificate (renewed: same name, key, addresses and cluster) and the
// revocation list. Zero timers mean the defaults, as in ProxyConfig.
type Reload struct {
	Edges         map[netip.Addr]*EdgePolicy
	TargetTimeout time.Duration
	CacheTTL      time.Duration
	Inaccuracy    float64
	Pool          *cert.Pool
	Cert          *cert.Certificate
	Revoked       *cert.RevocationList
}

// Reloaded says what a Reload changed: edges' WireGuard peers to remove
// and to add (or update), for the node to apply, and one line per change.
type Reloaded struct {
	Removed [][32]byte
	Added   []*EdgePolicy
	Addrs   map[*EdgePolicy][]netip.Addr // each added edge's addresses
	Changes []string
}

// Reload applies r: removed and changed edges leave their groups here (and
// their flows end); untouched edges, their joins and flows carry on.
func (p *Proxy) Reload(r Reload) (Reloaded, error) {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	defer p.flush()
	var out Reloaded
	if (p.certs == nil) != (r.Pool == nil) {
		return out, fmt.Errorf("cannot switch between CA mode and static mode while running: restart the proxy")
	}
	if p.certs != nil {
		if err := p.checkCerts(r); err != nil {
			return out, err
		}
		p.reloadCerts(r, &out)
	}
	p.reloadEdges(r.Edges, &out)
	set := func(name string, d *time.Duration, v, def time.Duration) {
		if v <= 0 {
			v = def
		}
		if *d != v {
			out.Changes = append(out.Changes, fmt.Sprintf("%s %v → %v", name, *d, v))
			*d = v
		}
	}
	set("target_timeout", &p.cfg.TargetTimeout, r.TargetTimeout, 15*time.Second)
	set("cache_ttl", &p.cfg.CacheTTL, r.CacheTTL, 10*time.Second)
	inacc := r.Inaccuracy
	switch {
	case inacc == 0:
		inacc = DefaultInaccuracy
	case inacc < 0:
		inacc = 0
	}
	if inacc != p.cfg.Inaccuracy {
		out.Changes = append(out.Changes, fmt.Sprintf("inaccuracy %v%% → %v%%", p.cfg.Inaccuracy, inacc))
		p.cfg.Inaccuracy = inacc
	}
	return out, nil
}

// reloadEdges swaps the static edges for edges.
func (p *Proxy) reloadEdges(edges map[netip.Addr]*EdgePolicy, out *Reloaded) {
	same := func(a, b *EdgePolicy) bool {
		return a.Name == b.Name && a.PublicKey == b.PublicKey && slices.Equal(a.Groups, b.Groups) &&
			a.SetsPolicy == b.SetsPolicy && a.MaxWeight == b.MaxWeight
	}
	old := p.cfg.Edges
	byKey := func(m map[netip.Addr]*EdgePolicy) map[[32]byte][]netip.Addr {
		k := map[[32]byte][]netip.Addr{}
		for a, e := range m {
			k[e.PublicKey] = append(k[e.PublicKey], a)
		}
		return k
	}
	oldKeys, newKeys := byKey(old), byKey(edges)
	for _, a := range sortedAddrs(old) {
		e := old[a]
		if n := edges[a]; n != nil && same(e, n) && slices.Equal(sortedCopy(oldKeys[e.PublicKey]), sortedCopy(newKeys[e.PublicKey])) {
			edges[a] = e // the same edge: keep its policy, and with it its join budget
			continue
		}
		for _, g := range p.jap.groupsOf(a) {
			p.leaveWhy(a, g, EventLeave, "its [[edge]] changed or went")
		}
		delete(p.edges, a)
	}
	gone := map[[32]byte]bool{}
	for k, as := range oldKeys {
		if nas, ok := newKeys[k]; !ok || !slices.Equal(sortedCopy(as), sortedCopy(nas)) || !same(old[as[0]], edges[nas[0]]) {
			gone[k] = true
		}
	}
	for _, k := range sortedKeys(gone) {
		if _, still := newKeys[k]; !still {
			out.Removed = append(out.Removed, k)
			out.Changes = append(out.Changes, fmt.Sprintf("edge %q removed", old[oldKeys[k][0]].Name))
		}
	}
	out.Addrs = map[*EdgePolicy][]netip.Addr{}
	for _, k := range sortedKeys(newKeys) {
		as := sortedCopy(newKeys[k])
		e := edges[as[0]]
		if _, had := oldKeys[k]; had && !gone[k] {
			continue
		}
		out.Added = append(out.Added, e)
		out.Addrs[e] = as
		verb := "added"
		if _, had := oldKeys[k]; had {
			verb = "changed"
		}
		out.Changes = append(out.Changes, fmt.Sprintf("edge %q %s", e.Name, verb))
	}
	for a, e := range edges {
		p.edges[a] = e
	}
	p.cfg.Edges = edges
	keys := ownAdmits(edges)
	p.mem.mu.Lock()
	p.mem.ownAdmits = keys
	p.mem.mu.Unlock()
}

// checkCerts says why r's certificates cannot be taken, before anything
// changes.
func (p *Proxy) checkCerts(r Reload) error {
	cs := p.certs
	if c := r.Cert; c != nil {
		if c.Name != cs.self.Name || c.PublicKey != cs.self.PublicKey || !slices.Equal(c.Addresses, cs.self.Addresses) || c.Cluster != cs.self.Cluster {
			return fmt.Errorf("the new certificate changes this proxy's name, key, addresses or cluster: restart the proxy")
		}
		if raw := mustMarshal(c); raw == nil || len(raw) > maxMemberCert || len(raw) > admit.MaxOfferCert {
			return fmt.Errorf("the new certificate is too long to send")
		}
	}
	if r.Revoked != nil && r.Revoked.Newer(cs.revoked) {
		pool := cs.pool
		if r.Pool != nil {
			pool = r.Pool
		}
		if _, err := pool.Update(cs.revoked, r.Revoked); err != nil {
			return fmt.Errorf("revocation list: %w", err)
		}
	}
	return nil
}

// reloadCerts takes a new pool, certificate and revocation list (checked).
func (p *Proxy) reloadCerts(r Reload, out *Reloaded) {
	cs := p.certs
	if r.Cert != nil && !bytes.Equal(mustMarshal(r.Cert), cs.selfRaw) {
		c := r.Cert
		cs.self, cs.selfRaw = c, mustMarshal(c)
		out.Changes = append(out.Changes, fmt.Sprintf("certificate renewed, valid until %v", c.NotAfter.UTC().Format(time.RFC3339)))
	}
	if r.Pool != nil {
		cs.pool = r.Pool
		// Edges admitted under the old pool stay only if the new one
		// admits them too.
		wall := p.clock.Wall()
		for _, k := range sortedKeys(cs.edges) {
			e := cs.edges[k]
			if _, err := cs.pool.Verify(e.cert, wall, cs.revokedList()); err != nil {
				p.removeEdge(e, fmt.Sprintf("the reloaded CA refuses it: %v", err))
				out.Changes = append(out.Changes, fmt.Sprintf("edge %q removed: %v", e.cert.Name, err))
			}
		}
	}
	if r.Revoked != nil && r.Revoked.Newer(cs.revoked) {
		if err := p.takeRevocationList(r.Revoked, netip.Addr{}); err == nil {
			out.Changes = append(out.Changes, fmt.Sprintf("revocation list serial %d (%d revoked)", r.Revoked.Serial, len(r.Revoked.Revoked)))
		}
	}
}

func mustMarshal(c *cert.Certificate) []byte {
	b, err := c.Marshal()
	if err != nil {
		return nil
	}
	return b
}

func sortedCopy(as []netip.Addr) []netip.Addr {
	out := slices.Clone(as)
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
