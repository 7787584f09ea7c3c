package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
)

// learnInterval is how often an edge asks its current proxy which live
// proxies would admit it. Until the first answer, and after a proxy it was
// told of could not be added, it asks again learnInterval/4 after each try.
const learnInterval = 2 * time.Second

// learnTimeout is how long an edge waits for the answer.
const learnTimeout = time.Second

// learnLoop keeps asking the current proxy which proxies would admit this
// edge and makes the new ones candidates: WireGuard peers that the
// attacher probes and may move to. Learned proxies stay candidates; one
// that dies is just never chosen.
func (e *Edge) learnLoop(opts Options) {
	defer e.done.Done()
	var digest uint32
	wait := learnInterval / 4
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		from := e.currentProxy()
		peers, d, err := e.askProxies(e.probeAddr(from), digest)
		switch {
		case err != nil:
			wait = learnInterval / 4
		case e.learnAll(peers, from.Name, opts):
			digest, wait = d, learnInterval
		default:
			// Ask for the whole list again soon: what failed may work then.
			digest, wait = 0, learnInterval/4
		}
		t.Reset(wait)
	}
}

// learnAll makes the proxies that from named candidates, logging those it
// cannot use; it reports whether all went well (or cannot go better).
func (e *Edge) learnAll(peers []overlay.Member, from string, opts Options) bool {
	logf := func(format string, args ...any) {
		if opts.Logf != nil {
			opts.Logf(format, args...)
		}
	}
	ok := true
	for i, m := range peers {
		switch err := e.learn(m); {
		case errors.Is(err, errKnown):
		case errors.Is(err, errFull):
			logf("%s: %d of the proxies %s told of not used: an edge attaches to at most %d", e.Name, len(peers)-i, from, config.MaxCandidates)
			return ok
		case errors.Is(err, errAddPeer):
			logf("%s: proxy %s, told by %s: %v", e.Name, m.Name, from, err)
			ok = false
		case err != nil:
			logf("%s: proxy %s, told by %s: %v", e.Name, m.Name, from, err)
		case opts.OnEvent != nil:
			opts.OnEvent(overlay.Event{Proxy: m.Name, Kind: "learned", Name: e.Name, Reason: m.Name + ", told by " + from})
		}
	}
	return ok
}

// currentProxy is the proxy that carries the edge's prefixes now.
func (e *Edge) currentProxy() config.ProxyPeer {
	name := e.Attach.Current()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.proxies {
		if p.Name == name {
			return p
		}
	}
	return e.proxies[0]
}

// askProxies sends one TypeProxiesReq to the proxy at addr and returns the
// answer's proxies (none if the list is still the one digest names) and
// its digest.
func (e *Edge) askProxies(addr netip.Addr, digest uint32) ([]overlay.Member, uint32, error) {
	c, err := e.dialUDP(netip.AddrPortFrom(addr, e.Config.ControlPort))
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	req := overlay.Message{Type: overlay.TypeProxiesReq, Seq: rand.Uint32(), Incarnation: digest}
	b, err := req.AppendBinary(nil)
	if err != nil {
		return nil, 0, err
	}
	if _, err := c.Write(b); err != nil {
		return nil, 0, err
	}
	c.SetReadDeadline(time.Now().Add(learnTimeout))
	// Close must not wait for an answer that may never come.
	stop := context.AfterFunc(e.ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, overlay.MaxLen+1)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, 0, err
		}
		var m overlay.Message
		if m.UnmarshalBinary(buf[:n]) == nil && m.Type == overlay.TypeProxies && m.Seq == req.Seq {
			return m.Peers, m.Incarnation, nil
		}
	}
}

var (
	errKnown   = errors.New("known")                      // the proxy is a candidate already
	errFull    = errors.New("edge has enough candidates") // MaxCandidates
	errAddPeer = errors.New("cannot add a WireGuard peer")
)

// learn makes m a candidate: a WireGuard peer with its overlay addresses,
// then a candidate of the attacher.
func (e *Edge) learn(m overlay.Member) error {
	pp := config.ProxyPeer{Name: m.Name, PublicKey: m.PublicKey, Endpoint: m.Endpoint, Address: m.Addrs(), Cluster: m.Cluster}
	e.mu.Lock()
	err := e.checkLocked(m)
	if err == nil {
		if perr := e.Device.AddPeer(proxyPeer(e.Config, pp, len(e.proxies), false)); perr != nil {
			err = fmt.Errorf("%w: %v", errAddPeer, perr)
		}
	}
	if err == nil {
		e.proxies = append(e.proxies, pp)
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	// Outside mu: the attacher calls back into the edge under its own lock.
	// Only learnLoop adds candidates, so the attacher's index of the new
	// one is its index in e.proxies.
	e.Attach.Add(pp.Name, e.probeAddr(pp))
	return nil
}

// checkLocked says why m cannot be a new candidate: errKnown if it is one,
// an error if it clashes with a candidate's key or addresses, or with this
// edge's, lies outside the overlay, or has no endpoint to send to.
func (e *Edge) checkLocked(m overlay.Member) error {
	cfg := e.Config
	for _, p := range e.proxies {
		switch {
		case p.Name == m.Name && p.PublicKey == m.PublicKey:
			return errKnown
		case p.Name == m.Name:
			return fmt.Errorf("has another key than the %s this edge has", p.Name)
		case p.PublicKey == m.PublicKey:
			return fmt.Errorf("has the key of %s", p.Name)
		case slices.Contains(p.Address, m.Addr) || (m.Addr6.IsValid() && slices.Contains(p.Address, m.Addr6)):
			return fmt.Errorf("has an address of %s", p.Name)
		}
	}
	switch {
	case len(e.proxies) >= config.MaxCandidates:
		return errFull
	case m.PublicKey == cfg.PublicKey || slices.Contains(cfg.Address, m.Addr) || slices.Contains(cfg.Address, m.Addr6):
		return errors.New("has this edge's own key or address")
	case !cfg.InOverlay(m.Addr) || (m.Addr6.IsValid() && !cfg.InOverlay(m.Addr6)):
		return fmt.Errorf("address %v is outside this edge's overlay_prefix", m.Addrs())
	case !m.Endpoint.IsValid() || m.Endpoint.Addr().IsUnspecified():
		return fmt.Errorf("endpoint %v is no address to send to (is its listen address unspecified?)", m.Endpoint)
	case !e.probeAddr(config.ProxyPeer{Address: m.Addrs()}).IsValid():
		return errors.New("has no overlay address of this edge's family")
	}
	return nil
}
