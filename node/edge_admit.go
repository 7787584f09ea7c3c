package node

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/pias-net/pias/admit"
	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/overlay"
)

// An edge in CA mode knows its proxies by endpoint only. Each that admits
// it (the handshake of package admit, renewed every overlay.EdgeRenew)
// becomes a WireGuard peer with its certificate's addresses, and a
// candidate of the attacher; the first carries the anycast prefix.

func newAdmitClient(cfg *config.Edge) (*admit.Client, error) {
	pool, err := cert.NewPool(cfg.CA)
	if err != nil {
		return nil, err
	}
	keys, err := admit.NewKeys(cfg.PrivateKey)
	if err != nil {
		return nil, err
	}
	raw, err := cfg.Cert.Marshal()
	if err != nil {
		return nil, err
	}
	var revoked cert.Revoked
	if cfg.Revocation != nil {
		revoked = cfg.Revocation
	}
	return admit.NewClient(admit.ClientConfig{
		Keys: keys, Pool: pool, Cert: raw,
		Revoked: func() cert.Revoked { return revoked },
		Renew:   overlay.EdgeRenew,
		Seed:    uint64(time.Now().UnixNano()),
	}), nil
}

// sendUnderlay sends the handshake's datagrams from the WireGuard socket.
func (e *Edge) sendUnderlay(ds []admit.Datagram) {
	for _, d := range ds {
		e.side.SendTo(d.To, d.B)
	}
}

// admitted takes a datagram of the handshake: a proxy's answer.
func (e *Edge) admitted(d datagram) {
	now := e.now()
	r, out, ok := e.admit.Handle(now, time.Now(), d.from, d.b)
	if !ok {
		return
	}
	e.sendUnderlay(out)
	name := d.from.String()
	if r.Cert != nil {
		name = r.Cert.Name
	}
	switch {
	case r.Refused != "":
		if e.opts.OnEvent != nil {
			e.opts.OnEvent(overlay.Event{Kind: overlay.EventNotAdmitted, Proxy: name, Name: e.Name, Reason: fmt.Sprintf("by %s at %v: %s", name, d.from, r.Refused)})
		}
	case r.Admitted:
		if e.Attach == nil && d.from != e.Config.Proxies[0].Endpoint && now < e.homeBy {
			// Not the home: it carries the prefix only if the home
			// does not admit the edge soon.
			e.waiting = append(e.waiting, admittedProxy{r.Cert, d.from})
		} else {
			e.addProxy(admittedProxy{r.Cert, d.from}, now)
			e.addWaiting(now)
		}
		if e.opts.OnEvent != nil {
			e.opts.OnEvent(overlay.Event{Kind: overlay.EventAdmitted, Proxy: name, Name: e.Name, Reason: fmt.Sprintf("by %s at %v", name, d.from)})
		}
	}
}

// homeGrace is how long an edge waits for its home proxy (the first in its
// file) to admit it before another that did carries the prefix.
const homeGrace = time.Second

// admittedProxy is a proxy that admitted the edge: its certificate and
// endpoint.
type admittedProxy struct {
	cert *cert.Certificate
	ep   netip.AddrPort
}

// addProxy adds an admitted proxy, or logs why it cannot.
func (e *Edge) addProxy(a admittedProxy, now int64) {
	if err := e.addAdmitted(a.cert, a.ep, now); err != nil && e.opts.Logf != nil {
		e.opts.Logf("%s: proxy %q at %v admitted us, but: %v", e.Name, a.cert.Name, a.ep, err)
	}
}

// addWaiting adds the proxies that waited for the home, in the order they
// admitted the edge.
func (e *Edge) addWaiting(now int64) {
	w := e.waiting
	e.waiting = nil
	for _, a := range w {
		e.addProxy(a, now)
	}
}

// addAdmitted makes the proxy of certificate c at ep, which admitted the
// edge, a peer and a candidate; the first carries the prefixes.
func (e *Edge) addAdmitted(c *cert.Certificate, ep netip.AddrPort, now int64) error {
	pp := config.ProxyPeer{Name: c.Name, PublicKey: c.PublicKey, Endpoint: ep, Address: c.Addresses, Cluster: c.Cluster}
	cand := edge.NewCandidate(e.Config, pp, false)
	if !cand.Addr.IsValid() {
		return fmt.Errorf("no overlay address of the edge's family")
	}
	if e.Attach == nil {
		if err := e.Device.AddPeer(proxyPeer(e.Config, pp, 0, true)); err != nil {
			return err
		}
		a, err := edge.NewAttacher([]edge.Candidate{cand}, attachConfig(e.Config, e.opts), now)
		if err != nil {
			return err
		}
		e.attachMu.Lock()
		e.Attach = a
		e.attachMu.Unlock()
		if e.Config.LearnProxies {
			e.learn = e.newLearner(now)
		}
		return nil
	}
	if err := edge.Check(e.Config, e.Attach.Candidates(), overlay.Member{Name: pp.Name, PublicKey: pp.PublicKey, Endpoint: ep, Addr: pp.Addr4(), Addr6: pp.Addr6(), Cluster: pp.Cluster}); err != nil {
		if err == edge.ErrKnown {
			return nil // admitted again (a restart of the proxy)
		}
		return err
	}
	if err := e.Device.AddPeer(proxyPeer(e.Config, pp, len(e.Attach.Candidates()), false)); err != nil {
		return err
	}
	e.Attach.Add(cand, now)
	return nil
}
