package node

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/edge"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/tunnel"
)

// Reload (SIGHUP) applies a node's file, loaded anew, while it runs: what
// can change in place does, the rest needs a restart and is refused, and a
// refused reload changes nothing.

// fixed compares what a running node cannot change: it returns the keys
// that differ between its file as it runs and as loaded now.
func fixed(pairs ...any) []string {
	var keys []string
	for i := 0; i+2 < len(pairs); i += 3 {
		if !reflect.DeepEqual(pairs[i+1], pairs[i+2]) {
			keys = append(keys, pairs[i].(string))
		}
	}
	return keys
}

func nodeFixed(a, b *config.Node) []string {
	return fixed(
		"name", a.Name, b.Name,
		"private_key_file", a.PrivateKey, b.PrivateKey,
		"address", a.Address, b.Address,
		"overlay_prefix", a.OverlayPrefix, b.OverlayPrefix,
		"anycast_prefix", a.AnycastPrefix, b.AnycastPrefix,
		"mtu", a.MTU, b.MTU,
		"control_port", a.ControlPort, b.ControlPort,
		"listen", a.Listen, b.Listen,
		"interface_name", a.InterfaceName, b.InterfaceName,
		"ca_file (CA mode or not)", a.CAMode(), b.CAMode(),
	)
}

func restartNeeded(keys []string) error {
	return fmt.Errorf("%s changed: restart the node to apply that (nothing was changed)", strings.Join(keys, ", "))
}

// Reload applies cfg, the proxy's file loaded anew: its [[edge]] entries,
// target_timeout, cache_ttl and inaccuracy, and in CA mode its CA, its
// renewed certificate and its revocation list. Untouched edges, flows and
// sessions carry on. It returns one line per change.
func (p *Proxy) Reload(cfg *config.Proxy) ([]string, error) {
	p.mu.Lock()
	old := p.Config
	p.mu.Unlock()
	keys := nodeFixed(&old.Node, &cfg.Node)
	keys = append(keys, fixed(
		"cluster", old.Cluster, cfg.Cluster,
		"rap_replicas", old.RAPReplicas, cfg.RAPReplicas,
		"probe_interval", old.ProbeInterval, cfg.ProbeInterval,
		"probe_misses", old.ProbeMisses, cfg.ProbeMisses,
		"max_flows", old.MaxFlows, cfg.MaxFlows,
		"mesh_key_file", old.MeshKey, cfg.MeshKey,
		"[[proxy]]", old.Proxies, cfg.Proxies,
	)...)
	if len(keys) > 0 {
		return nil, restartNeeded(keys)
	}
	dev, err := p.device()
	if err != nil {
		return nil, err
	}
	r := overlay.Reload{Edges: edgePolicies(cfg), TargetTimeout: cfg.TargetTimeout, CacheTTL: cfg.CacheTTL, Inaccuracy: inaccuracy(cfg.Inaccuracy)}
	if cfg.CAMode() {
		pool, err := cert.NewPool(cfg.CA)
		if err != nil {
			return nil, err
		}
		r.Pool, r.Cert, r.Revoked = pool, cfg.Cert, cfg.Revocation
	}
	done, err := p.Overlay.Reload(r)
	if err != nil {
		return nil, err
	}
	for _, k := range done.Removed {
		if err := dev.RemovePeer(k); err != nil {
			done.Changes = append(done.Changes, fmt.Sprintf("could not remove a peer: %v", err))
		}
	}
	for _, e := range done.Added {
		if err := dev.AddPeer(tunnel.Peer{PublicKey: e.PublicKey, AllowedIPs: hostPrefixes(done.Addrs[e])}); err != nil {
			done.Changes = append(done.Changes, fmt.Sprintf("could not add edge %q as a peer: %v", e.Name, err))
		}
	}
	p.mu.Lock()
	p.Config = cfg
	p.mu.Unlock()
	return done.Changes, nil
}

// edgePolicies is what the proxy cfg lets each of its [[edge]] do, by
// overlay address.
func edgePolicies(cfg *config.Proxy) map[netip.Addr]*overlay.EdgePolicy {
	edges := map[netip.Addr]*overlay.EdgePolicy{}
	for _, e := range cfg.Edges {
		pol := &overlay.EdgePolicy{Name: e.Name, PublicKey: e.PublicKey, Groups: e.Groups, SetsPolicy: e.SetsPolicy, MaxWeight: e.MaxWeight}
		for _, a := range e.Address {
			edges[a] = pol
		}
	}
	return edges
}

// Reload applies cfg, the edge's file loaded anew: a target joins the
// groups added, leaves those removed, joins again those whose port,
// policy or weight changed, and takes their health checks. Other changes
// need a restart.
func (e *Edge) Reload(ctx context.Context, cfg *config.Edge) ([]string, error) {
	old := e.Config
	keys := nodeFixed(&old.Node, &cfg.Node)
	keys = append(keys, fixed(
		"interface", old.Interface, cfg.Interface,
		"keepalive", old.Keepalive, cfg.Keepalive,
		"learn_proxies", old.LearnProxies, cfg.LearnProxies,
		"[[proxy]]", old.Proxies, cfg.Proxies,
		"cert_file", certBytes(old.Cert), certBytes(cfg.Cert),
	)...)
	if len(keys) > 0 {
		return nil, restartNeeded(keys)
	}
	if e.Target == nil {
		return nil, nil // a client has nothing else to change
	}
	for _, s := range cfg.Groups {
		if !cfg.AddrLike(s.Group.Addr).IsValid() {
			return nil, fmt.Errorf("join %s: no overlay address of its family", s.Group)
		}
	}
	var changes []string
	err := e.control(ctx, func(now int64) ([]edge.Packet, error) {
		var ms []edge.Membership
		for _, s := range cfg.Groups {
			ms = append(ms, edge.Membership{Group: s.Group, Port: s.Port, Policy: s.Policy, Weight: s.Weight})
		}
		out, ch := e.Target.SetGroups(now, ms)
		changes = ch
		e.cur = cfg
		e.reloadChecks(now)
		return out, nil
	})
	return changes, err
}

func certBytes(c *cert.Certificate) []byte {
	if c == nil {
		return nil
	}
	b, _ := c.Marshal()
	return b
}

// reloadChecks rebuilds the checks from e.Config: a check whose group and
// spec did not change keeps its state; a new one holds its group out of
// service until it passes once. (A probe under way of a check that went
// reports to nobody: checkResult drops it.)
func (e *Edge) reloadChecks(now int64) {
	fresh := newChecks(e.cur, e.Host, e.opts.CheckNetstack)
	e.checkMu.Lock()
	for i, c := range fresh {
		if j := slices.IndexFunc(e.checks, func(o *groupCheck) bool {
			return o.group == c.group && reflect.DeepEqual(o.spec, c.spec)
		}); j >= 0 {
			fresh[i] = e.checks[j]
			continue
		}
		c.next = now
	}
	held := e.checks
	e.checks = fresh
	e.checkMu.Unlock()
	for _, c := range fresh {
		if !slices.Contains(held, c) {
			out, err := e.Target.Drain(now, c.group, 0)
			e.send(out)
			c.drained = err == nil
		}
	}
}
