package config

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/pias-net/pias/check"
	"github.com/pias-net/pias/router"
)

// A FileReader reads a file by path, as os.ReadFile does. Its Load methods
// read a config file and the key files it names through it, so that configs
// can be checked before they are written (lab.NewPlan does).
type FileReader func(path string) ([]byte, error)

// LoadProxy reads and validates a proxy's config file.
func LoadProxy(path string) (*Proxy, error) { return FileReader(os.ReadFile).LoadProxy(path) }

// LoadTarget reads and validates a target's config file.
func LoadTarget(path string) (*Edge, error) { return FileReader(os.ReadFile).LoadTarget(path) }

// LoadClient reads and validates a client's config file. A client file is a
// target file without [[group]].
func LoadClient(path string) (*Edge, error) { return FileReader(os.ReadFile).LoadClient(path) }

// LoadProxy is the package's LoadProxy, reading files with r.
func (r FileReader) LoadProxy(path string) (*Proxy, error) {
	d, m, err := r.parseFile(path)
	if err != nil {
		return nil, err
	}
	t := d.root(m)
	x := &cross{}
	p := &Proxy{}
	d.node(t, RoleProxy, &p.Node, x)

	if s, ok := t.str("cluster", x.caLine == 0); ok && d.cluster(t.sub("cluster"), s) {
		p.Cluster = s
		if c := p.Cert; c != nil && s != c.Cluster {
			d.errf("cluster", "%q differs from the certificate's cluster %q (cert_file at line %d): leave cluster out to take the certificate's", s, c.Cluster, d.lineOf("cert_file"))
		}
	} else if c := p.Cert; c != nil && !t.has("cluster") {
		p.Cluster = c.Cluster
	}
	p.RAPReplicas = DefaultRAPReplicas
	if n, ok := t.integer("rap_replicas", false, 1, 16); ok {
		p.RAPReplicas = int(n)
	}
	durationKey := func(key string, min, max time.Duration, into *time.Duration) {
		if s, ok := t.str(key, false); ok {
			if v, ok := d.duration(key, s); ok {
				if v < min || v > max {
					d.errf(key, "%s: want %v to %v", s, min, max)
					return
				}
				*into = v
			}
		}
	}
	durationKey("probe_interval", 10*time.Millisecond, 10*time.Second, &p.ProbeInterval)
	if n, ok := t.integer("probe_misses", false, 1, 100); ok {
		p.ProbeMisses = int(n)
	}
	durationKey("target_timeout", time.Second, time.Hour, &p.TargetTimeout)
	durationKey("cache_ttl", 100*time.Millisecond, time.Hour, &p.CacheTTL)
	p.Inaccuracy = DefaultInaccuracy
	if n, ok := t.integer("inaccuracy", false, 0, 100); ok {
		p.Inaccuracy = int(n)
	}
	p.MaxFlows = DefaultMaxFlows
	if n, ok := t.integer("max_flows", false, MinMaxFlows, MaxMaxFlows); ok {
		p.MaxFlows = int(n)
	}
	if x.caLine > 0 {
		if t.has("mesh_key_file") {
			t.seen["mesh_key_file"] = true
			d.staticKey("mesh_key_file", "mesh_key_file", x)
		}
		for _, et := range t.tables("edge") {
			d.staticKey(et.path, "[[edge]]", x)
		}
	} else {
		if s, ok := t.str("mesh_key_file", false); ok {
			if k, file, ok := d.keyFile("mesh_key_file", s, "mesh key (32 bytes in base64, as pias genkey writes)"); ok {
				p.MeshKey, p.MeshKeyFile = &k, file
			}
		}
		for _, et := range t.tables("edge") {
			p.Edges = append(p.Edges, d.edgePeer(et, &p.Node, x))
		}
	}
	t.done()
	d.crossCheck(&p.Node, x)
	if err := d.err(); err != nil {
		return nil, err
	}
	return p, nil
}

// LoadTarget is the package's LoadTarget, reading files with r.
func (r FileReader) LoadTarget(path string) (*Edge, error) { return r.loadEdge(path, RoleTarget) }

// LoadClient is the package's LoadClient, reading files with r.
func (r FileReader) LoadClient(path string) (*Edge, error) { return r.loadEdge(path, RoleClient) }

func (r FileReader) loadEdge(path, role string) (*Edge, error) {
	d, m, err := r.parseFile(path)
	if err != nil {
		return nil, err
	}
	t := d.root(m)
	x := &cross{}
	e := &Edge{Role: role}
	d.node(t, role, &e.Node, x)
	if len(e.Proxies) == 0 {
		switch v, ok := t.m["proxy"]; {
		case !ok:
			d.errf("proxy", "required key is missing: an edge needs at least one [[proxy]] to attach to")
		case isEmptyArray(v):
			d.errf("proxy", "an edge needs at least one [[proxy]] to attach to")
		}
	}

	e.Interface = DefaultInterface
	if s, ok := t.str("interface", false); ok {
		switch s {
		case InterfaceNetstack, InterfaceTUN, InterfaceWater:
			e.Interface = s
		default:
			d.errf("interface", "%q: want %q, %q or %q", s, InterfaceNetstack, InterfaceTUN, InterfaceWater)
		}
	}
	e.Keepalive = DefaultKeepalive
	if s, ok := t.str("keepalive", false); ok {
		if v, ok := d.duration("keepalive", s); ok {
			if v < MinKeepalive || v > MaxKeepalive {
				d.errf("keepalive", "%s: want %v to %v", s, MinKeepalive, MaxKeepalive)
			} else {
				e.Keepalive = v
			}
		}
	}

	e.DrainTimeout = DefaultDrainTimeout
	if s, ok := t.str("drain_timeout", false); ok {
		if v, ok := d.duration("drain_timeout", s); ok {
			if v < MinDrainTimeout || v > MaxDrainTimeout {
				d.errf("drain_timeout", "%s: want %v to %v", s, MinDrainTimeout, MaxDrainTimeout)
			} else {
				e.DrainTimeout = v
			}
		}
	}

	e.LearnProxies = true
	if b, ok := t.boolean("learn_proxies", false); ok {
		e.LearnProxies = b
	}

	switch role {
	case RoleClient:
		if t.has("group") {
			t.seen["group"] = true
			d.errf("group", "a client joins no groups; a node that serves groups is a target (pias target)")
		}
	case RoleTarget:
		groups := t.tables("group")
		if len(groups) == 0 {
			switch v, ok := t.m["group"]; {
			case !ok:
				d.errf("group", "required key is missing: a target joins at least one group ([[group]])")
			case isEmptyArray(v):
				d.errf("group", "a target joins at least one group ([[group]])")
			}
		}
		seen := map[router.Group]int{}
		for _, gt := range groups {
			var s Service
			if str, ok := gt.str("group", true); ok {
				if g, ok := d.group(gt.sub("group"), str); ok && d.groupAllowed(gt.sub("group"), g, &e.Node) && d.groupCertified(gt.sub("group"), g, &e.Node) {
					if l, dup := seen[g]; dup {
						d.errf(gt.sub("group"), "duplicate group %s (also at line %d)", g, l)
					}
					seen[g] = d.lineOf(gt.sub("group"))
					s.Group = g
				}
			}
			if n, ok := gt.integer("port", true, 1, 65535); ok {
				s.Port = uint16(n)
			}
			d.groupPolicy(gt, &s)
			if c := e.Cert; c != nil && s.Weight > c.MaxWeight {
				d.errf(gt.sub("weight"), "%d is more than the certificate's max weight %d (cert_file at line %d)", s.Weight, c.MaxWeight, d.lineOf("cert_file"))
			}
			spec := d.groupCheck(gt, s.Group)
			gt.done()
			if e.Checks == nil {
				e.Checks = map[router.Group]check.Spec{}
			}
			e.Checks[s.Group] = spec
			e.Groups = append(e.Groups, s)
		}
	}
	t.done()
	d.crossCheck(&e.Node, x)
	if err := d.err(); err != nil {
		return nil, err
	}
	return e, nil
}

// node reads the keys every role has.
func (d *decoder) node(t *table, role string, n *Node, x *cross) {
	n.Path = d.file
	if s, ok := t.str("name", true); ok && d.name("name", s) {
		n.Name = s
		x.add(&x.names, s, "name", d)
	}
	if s, ok := t.str("private_key_file", true); ok {
		k, file, ok := d.keyFile("private_key_file", s, "WireGuard private key")
		n.PrivateKeyFile = file
		if ok {
			n.PrivateKey = k
			n.PublicKey = k.PublicKey()
		}
	}

	var okO, okA bool
	n.OverlayPrefix, okO = d.prefixes(t, "overlay_prefix", DefaultOverlayPrefix())
	n.AnycastPrefix, okA = d.prefixes(t, "anycast_prefix", DefaultAnycastPrefix())
	x.overlayOK = okO
	if okO && okA {
		for _, o := range n.OverlayPrefix {
			for _, a := range n.AnycastPrefix {
				if o.Overlaps(a) {
					d.errf("anycast_prefix", "%s overlaps overlay prefix %s", a, o)
				}
			}
		}
	}

	n.InterfaceName = DefaultInterfaceName(n.Name)
	if s, ok := t.str("interface_name", false); ok && d.interfaceName("interface_name", s) {
		n.InterfaceName = s
	}

	d.caFiles(t, role, n, x)
	if x.caLine > 0 {
		d.caAddresses(t, role, n, x)
	} else {
		n.Address = d.addresses(t, "address", role == RoleProxy, n, x)
	}

	n.MTU = DefaultMTU
	if v, ok := t.integer("mtu", false, 1280, 9000); ok {
		n.MTU = int(v)
	}
	n.ControlPort = DefaultControlPort
	if v, ok := t.integer("control_port", false, 1, 65535); ok {
		n.ControlPort = uint16(v)
	}

	if role == RoleProxy {
		if s, ok := t.str("listen", true); ok {
			n.Listen, _ = d.addrPort("listen", s, false)
		}
	} else {
		n.Listen = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		if s, ok := t.str("listen", false); ok {
			if ap, ok := d.addrPort("listen", s, true); ok {
				n.Listen = ap
			}
		}
	}
	if n.Listen.Port() != 0 {
		x.add(&x.endpoints, n.Listen.String(), "listen", d)
	}

	d.httpKeys(t, &n.HTTP)

	for _, pt := range t.tables("proxy") {
		if x.caLine > 0 {
			n.Proxies = append(n.Proxies, d.caProxyPeer(pt, x))
		} else {
			n.Proxies = append(n.Proxies, d.proxyPeer(pt, role == RoleProxy, n, x))
		}
	}
}

func (d *decoder) proxyPeer(t *table, needCluster bool, n *Node, x *cross) ProxyPeer {
	var p ProxyPeer
	if s, ok := t.str("name", true); ok && d.name(t.sub("name"), s) {
		p.Name = s
		x.add(&x.names, s, t.sub("name"), d)
	}
	p.PublicKey = d.publicKey(t, x)
	p.Endpoint = d.endpoint(t, x)
	p.Address = d.addresses(t, "address", true, n, x)
	if s, ok := t.str("cluster", needCluster); ok && d.cluster(t.sub("cluster"), s) {
		p.Cluster = s
	}
	t.done()
	return p
}

// endpoint reads a [[proxy]]'s required endpoint.
func (d *decoder) endpoint(t *table, x *cross) netip.AddrPort {
	s, ok := t.str("endpoint", true)
	if !ok {
		return netip.AddrPort{}
	}
	ap, ok := d.addrPort(t.sub("endpoint"), s, false)
	if !ok {
		return netip.AddrPort{}
	}
	if ap.Addr().IsUnspecified() {
		d.errf(t.sub("endpoint"), "%q: an endpoint needs a real address, not %s", s, ap.Addr())
		return netip.AddrPort{}
	}
	x.add(&x.endpoints, ap.String(), t.sub("endpoint"), d)
	return ap
}

func (d *decoder) edgePeer(t *table, n *Node, x *cross) EdgePeer {
	var e EdgePeer
	if s, ok := t.str("name", true); ok && d.name(t.sub("name"), s) {
		e.Name = s
		x.add(&x.names, s, t.sub("name"), d)
	}
	e.PublicKey = d.publicKey(t, x)
	e.Address = d.addresses(t, "address", false, n, x)
	if vals, paths, ok := t.strs("groups", false); ok {
		seen := map[router.Group]bool{}
		for i, s := range vals {
			g, ok := d.group(paths[i], s)
			if !ok || !d.groupAllowed(paths[i], g, n) {
				continue
			}
			if seen[g] {
				d.errf(paths[i], "duplicate group %s", g)
				continue
			}
			seen[g] = true
			e.Groups = append(e.Groups, g)
		}
	}
	if b, ok := t.boolean("policy", false); ok {
		e.SetsPolicy = b
	}
	e.MaxWeight = 1
	if w, ok := t.integer("max_weight", false, 1, router.MaxWeight); ok {
		e.MaxWeight = int(w)
	}
	if len(e.Groups) == 0 {
		for _, k := range []string{"policy", "max_weight"} {
			if t.has(k) && (k != "policy" || e.SetsPolicy) {
				d.errf(t.sub(k), "a right of targets, and this edge has no groups")
			}
		}
	}
	t.done()
	return e
}

func (d *decoder) publicKey(t *table, x *cross) Key {
	s, ok := t.str("public_key", true)
	if !ok {
		return Key{}
	}
	k, err := ParseKey(s)
	if err != nil {
		d.errf(t.sub("public_key"), "%v", err)
		return Key{}
	}
	x.keys = append(x.keys, occurrence{k.String(), t.sub("public_key"), d.lineOf(t.sub("public_key"))})
	return k
}

// groupAllowed checks a group against the node's anycast prefixes and
// control port.
func (d *decoder) groupAllowed(path string, g router.Group, n *Node) bool {
	if n.AnycastPrefix != nil && !n.InAnycast(g.Addr) {
		d.errf(path, "group %s is outside anycast_prefix %v", g, n.AnycastPrefix)
		return false
	}
	if g.Proto == router.ProtoUDP && g.Port == n.ControlPort {
		d.errf(path, "group %s uses the control port %d/udp", g, n.ControlPort)
		return false
	}
	return true
}

// groupCertified checks, in CA mode, that the node's certificate lets it
// join g: the proxies would refuse the join.
func (d *decoder) groupCertified(path string, g router.Group, n *Node) bool {
	if n.Cert == nil || n.Cert.AllowsGroup(g) {
		return true
	}
	rights := make([]string, len(n.Cert.Groups))
	for i, r := range n.Cert.Groups {
		rights[i] = r.String()
	}
	d.errf(path, "group %s is outside the certificate's group rights [%s] (cert_file at line %d)", g, strings.Join(rights, " "), d.lineOf("cert_file"))
	return false
}

// prefixes reads a list of prefixes, or returns def when the key is absent.
// It returns ok=false (and nil) when the list is invalid.
func (d *decoder) prefixes(t *table, key string, def []netip.Prefix) ([]netip.Prefix, bool) {
	if !t.has(key) {
		t.seen[key] = true
		return def, true
	}
	vals, paths, ok := t.strs(key, false)
	if !ok {
		return nil, false
	}
	if len(vals) == 0 {
		d.errf(t.sub(key), "want at least one prefix")
		return nil, false
	}
	var ps []netip.Prefix
	for i, s := range vals {
		p, ok1 := d.prefix(paths[i], s)
		if !ok1 {
			ok = false
			continue
		}
		for _, q := range ps {
			if q.Overlaps(p) {
				d.errf(paths[i], "%s overlaps %s", p, q)
				ok = false
			}
		}
		ps = append(ps, p)
	}
	if !ok {
		return nil, false
	}
	return ps, true
}

// addresses reads a node's overlay addresses. Proxies need exactly one IPv4
// and at most one IPv6 address; edges one or two addresses, at most one per
// family.
func (d *decoder) addresses(t *table, key string, proxy bool, n *Node, x *cross) []netip.Addr {
	vals, paths, ok := t.strs(key, true)
	if !ok {
		return nil
	}
	var as []netip.Addr
	n4, n6 := 0, 0
	for i, s := range vals {
		a, ok := d.addr(paths[i], s)
		if !ok {
			continue
		}
		if x.overlayOK && !n.InOverlay(a) {
			d.errf(paths[i], "%s is outside overlay_prefix %v", a, n.OverlayPrefix)
			continue
		}
		if a.Is4() {
			n4++
		} else {
			n6++
		}
		x.add(&x.addrs, a.String(), paths[i], d)
		as = append(as, a)
	}
	if len(as) < len(vals) {
		return as // an element was bad and reported
	}
	path := t.sub(key)
	switch {
	case proxy && n4 != 1:
		d.errf(path, "a proxy needs exactly one IPv4 address, got %d", n4)
	case !proxy && len(as) == 0:
		d.errf(path, "want at least one address")
	case n4 > 1:
		d.errf(path, "at most one IPv4 address, got %d", n4)
	case n6 > 1:
		d.errf(path, "at most one IPv6 address, got %d", n6)
	}
	return as
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	clusterRE = nameRE
)

func (d *decoder) name(path, s string) bool {
	if !nameRE.MatchString(s) || len(s) > MaxNameLen {
		d.errf(path, "%q: want 1..%d characters of a-z, 0-9 and '-', not starting with '-'", s, MaxNameLen)
		return false
	}
	return true
}

var interfaceNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)

// interfaceName checks an interface name the way Linux does, a little
// stricter (only [a-zA-Z0-9_.-]).
func (d *decoder) interfaceName(path, s string) bool {
	if !interfaceNameRE.MatchString(s) || len(s) > MaxInterfaceNameLen || s == "." || s == ".." {
		d.errf(path, "%q: want 1..%d characters of a-z, A-Z, 0-9, '_', '.' and '-' (not \".\" or \"..\")", s, MaxInterfaceNameLen)
		return false
	}
	return true
}

func (d *decoder) cluster(path, s string) bool {
	if !clusterRE.MatchString(s) || len(s) > 63 {
		d.errf(path, "%q: want 1..63 characters of a-z, 0-9 and '-', not starting with '-'", s)
		return false
	}
	return true
}

// cross collects values that must be unique in a file.
type cross struct {
	overlayOK bool
	caLine    int // the line of ca_file; 0: static mode
	names     []occurrence
	addrs     []occurrence
	keys      []occurrence
	endpoints []occurrence
}

type occurrence struct {
	val  string
	path string
	line int
}

func (x *cross) add(list *[]occurrence, val, path string, d *decoder) {
	*list = append(*list, occurrence{val, path, d.lineOf(path)})
}

func (d *decoder) crossCheck(n *Node, x *cross) {
	d.unique("name", x.names)
	d.unique("overlay address", x.addrs)
	d.unique("endpoint", x.endpoints)
	if !n.PublicKey.IsZero() {
		own := n.PublicKey.String()
		var rest []occurrence
		for _, o := range x.keys {
			if o.val == own {
				d.errf(o.path, "this is the node's own public key (of private_key_file)")
				continue
			}
			rest = append(rest, o)
		}
		x.keys = rest
	}
	d.unique("public key", x.keys)
}

// unique reports every occurrence of a value after its first (by line).
func (d *decoder) unique(what string, occ []occurrence) {
	sort.SliceStable(occ, func(i, j int) bool { return occ[i].line < occ[j].line })
	first := map[string]int{}
	for _, o := range occ {
		if l, ok := first[o.val]; ok {
			d.errf(o.path, "duplicate %s %s (also at line %d)", what, quoteIf(what, o.val), l)
			continue
		}
		first[o.val] = o.line
	}
}

func quoteIf(what, s string) string {
	if what == "name" {
		return fmt.Sprintf("%q", s)
	}
	return s
}

func isEmptyArray(v any) bool {
	switch v := v.(type) {
	case []any:
		return len(v) == 0
	case []map[string]any:
		return len(v) == 0
	}
	return false
}

// groupPolicy reads a [[group]]'s selection policy and the target's weight.
func (d *decoder) groupPolicy(gt *table, s *Service) {
	s.Weight = DefaultWeight
	if str, ok := gt.str("select", false); ok {
		if v, err := router.ParseSelect(str); err != nil {
			d.errf(gt.sub("select"), "%v", err)
		} else {
			s.Policy.Select = v
		}
	}
	if str, ok := gt.str("scope", false); ok {
		if v, err := router.ParseScope(str); err != nil {
			d.errf(gt.sub("scope"), "%v", err)
		} else {
			s.Policy.Scope = v
		}
	}
	if n, ok := gt.integer("replicate", false, 1, router.MaxReplicate); ok {
		switch {
		case n > 1 && s.Group.Proto != router.ProtoUDP && s.Group.Addr.IsValid():
			d.errf(gt.sub("replicate"), "%d: only UDP groups replicate (%s is not)", n, s.Group)
		case n > 1:
			s.Policy.Replicate = int(n)
		} // 1: one copy, no replication, the same policy as leaving it out
	}
	if n, ok := gt.integer("weight", false, 1, router.MaxWeight); ok {
		s.Weight = int(n)
	}
}
