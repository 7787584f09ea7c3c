// Package config turns pias's TOML files into validated structs.
//
// There is one file per node and one loader per role: LoadProxy, LoadTarget
// and LoadClient. Loading is strict: unknown keys, wrong types and every
// inconsistency the file alone can reveal are errors, reported as a single
// line "FILE:LINE: KEY: what is wrong" (an *Error). A loader returns either a
// complete, validated struct with all defaults filled in, or an error; never
// half a configuration. config/examples holds a commented file per role,
// and config/examples/ca one per role in CA mode (admission by certificate).
package config

import (
	"net/netip"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/check"
	"github.com/pias-net/pias/router"
)

// Roles.
const (
	RoleProxy  = "proxy"
	RoleTarget = "target"
	RoleClient = "client"
)

// Host interfaces of an edge.
const (
	InterfaceNetstack = "netstack" // userspace gVisor netstack (no root)
	InterfaceTUN      = "tun"      // kernel TUN via wireguard-go's tun package
	InterfaceWater    = "water"    // kernel TUN via songgao/water
)

// Defaults.
const (
	DefaultRAPReplicas  = 2
	DefaultInaccuracy   = 25 // percent
	DefaultMTU          = 1420
	DefaultControlPort  = 51821
	DefaultListenPort   = 51820
	DefaultKeepalive    = time.Second
	MinKeepalive        = 100 * time.Millisecond
	DefaultDrainTimeout = 30 * time.Second
	MinDrainTimeout     = time.Second
	MaxDrainTimeout     = time.Hour // the JAP's bound (overlay.MaxDrainTimeout)
	MaxKeepalive        = time.Hour // a JAP wants one at least every third of its target_timeout
	DefaultWeight       = 1
	DefaultInterface    = InterfaceNetstack

	// max_flows: each of a proxy's two flow tables (ingress flows, and its
	// NAT as a join proxy) holds at most this many flows; one client may
	// hold at most a quarter of a table.
	DefaultMaxFlows = router.DefaultMaxFlows
	MinMaxFlows     = 1024
	MaxMaxFlows     = 1 << 22

	MaxNameLen = 15 // names become parts of interface names

	// MaxInterfaceNameLen is the longest interface name (Linux's IFNAMSIZ
	// less the terminating NUL).
	MaxInterfaceNameLen = 15
	// DefaultInterfacePrefix starts the default interface_name.
	DefaultInterfacePrefix = "pias-"
)

// DefaultInterfaceName is the interface_name of a node called name when its
// file sets none: "pias-" + name, cut to MaxInterfaceNameLen bytes.
func DefaultInterfaceName(name string) string {
	s := DefaultInterfacePrefix + name
	if len(s) > MaxInterfaceNameLen {
		s = s[:MaxInterfaceNameLen]
	}
	return s
}

// DefaultOverlayPrefix is the default overlay_prefix: 100.64.0.0/16, fd64::/64.
func DefaultOverlayPrefix() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16"), netip.MustParsePrefix("fd64::/64")}
}

// DefaultAnycastPrefix is the default anycast_prefix: 100.65.0.0/16, fd65::/64.
func DefaultAnycastPrefix() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16"), netip.MustParsePrefix("fd65::/64")}
}

// Node is what every role's file has.
type Node struct {
	Path           string // the config file, as given to the loader
	Name           string
	PrivateKeyFile string // private_key_file resolved against the config file's directory
	PrivateKey     Key
	PublicKey      Key // derived from PrivateKey
	Address        []netip.Addr
	OverlayPrefix  []netip.Prefix
	AnycastPrefix  []netip.Prefix
	MTU            int
	ControlPort    uint16
	Listen         netip.AddrPort // WireGuard UDP listen address; port 0 = any
	Proxies        []ProxyPeer    // proxies: every other proxy; edges: proxies to attach to, preferred first
	// InterfaceName names the node's interfaces on the host: the kernel TUN
	// of an edge with interface "tun" or "water", and, for every node, the
	// UAPI socket /var/run/wireguard/NAME.sock that `wg show NAME` reads.
	// Default DefaultInterfaceName(Name). 1..15 bytes of [a-zA-Z0-9_.-],
	// not "." or "..". (macOS wants "utun" or "utunN" for a kernel TUN;
	// package tunnel checks that when it runs there.)
	InterfaceName string
	// HTTP is the node's metrics, API and map listener (http_listen,
	// http_token_file); off by default.
	HTTP HTTP

	// CA mode: set when the file names ca_file (then cert_file is
	// required). The node is admitted by its certificate: its file names
	// no peer's key, and its address (and a proxy's cluster) may come
	// from the certificate.
	CAFile, CertFile, RevocationFile string               // resolved paths; RevocationFile "" if none
	CA                               *cert.CA             // parsed from CAFile, self-signature checked
	Cert                             *cert.Certificate    // this node's certificate, verified against CA at load
	Revocation                       *cert.RevocationList // nil if no revocation_file; signed by CA
	// CertExpiresSoon: Cert expires within CertExpiryWarning of the load.
	CertExpiresSoon bool
}

// CAMode reports whether n's file is in CA mode (names ca_file).
func (n *Node) CAMode() bool { return n.CA != nil }

// CertExpiryWarning: a certificate that expires this soon loads, with
// Node.CertExpiresSoon set.
const CertExpiryWarning = 24 * time.Hour

// Proxy is a proxy's configuration.
type Proxy struct {
	Node
	Cluster     string
	RAPReplicas int
	// Timers of the control plane (zero: the overlay's defaults).
	ProbeInterval time.Duration // health probes between proxies
	ProbeMisses   int           // unanswered probes in a row before suspicion
	TargetTimeout time.Duration // a target silent this long is dropped
	CacheTTL      time.Duration // how long IAPs may cache a RAP's answer
	Inaccuracy    int           // percent a JAP's count may drift before it re-reports; 0: report every change
	MaxFlows      int           // the cap of each flow table (router.Config.MaxFlows)
	Edges         []EdgePeer    // targets and clients this proxy accepts; none in CA mode
	// MeshKey, read from MeshKeyFile, is the secret shared by the proxies
	// of one overlay: a proxy that proves it may join with only one live
	// proxy as seed, and this proxy admits newcomers that prove it. Nil:
	// the mesh is the configured one. Always nil in CA mode.
	MeshKey     *Key
	MeshKeyFile string
}

// Edge is a target's or a client's configuration.
type Edge struct {
	Node
	Role      string // RoleTarget or RoleClient
	Interface string // InterfaceNetstack, InterfaceTUN or InterfaceWater
	Keepalive time.Duration
	Groups    []Service // targets: at least one; clients: none
	// Checks holds the health check of each group in Groups (kind
	// check.KindNone: no check), with every default filled in. Apart from
	// Service so that a Service stays comparable.
	Checks map[router.Group]check.Spec
	// DrainTimeout is how long a group whose check fails lets its live
	// flows finish at its JAP before the JAP drops the target.
	DrainTimeout time.Duration
	// LearnProxies: the edge asks its current proxy, while it runs, which
	// other live proxies would admit it, and makes them candidates too
	// (up to MaxCandidates in all). Default true.
	LearnProxies bool
}

// MaxCandidates is the most proxies an edge attaches to, configured and
// learned together; an edge whose file lists more keeps them all but
// learns none.
const MaxCandidates = 16

// ProxyPeer is a proxy as another node's file describes it. In CA mode a
// file gives only Endpoint and, optionally, Name: PublicKey is zero and
// Address and Cluster are empty (the proxy's certificate tells them).
type ProxyPeer struct {
	Name      string // CA mode: "" when the file gives none
	PublicKey Key
	Endpoint  netip.AddrPort
	Address   []netip.Addr // exactly one IPv4, at most one IPv6
	Cluster   string       // required in proxy files, optional in edge files
}

// EdgePeer is a target or client as a proxy's file describes it.
type EdgePeer struct {
	Name      string
	PublicKey Key
	Address   []netip.Addr
	Groups    []router.Group // groups the edge may join; empty: none
	// SetsPolicy: the edge's targets may set the policy of their groups
	// (key policy, default false). A target without it takes the group's
	// own policy, whatever its file states.
	SetsPolicy bool
	// MaxWeight is the most weight one of its targets may ask for (key
	// max_weight, 1..router.MaxWeight, default 1); a join asking for more
	// is refused.
	MaxWeight int
}

// Service is a group a target joins and the local port its service listens
// on, with the group's selection policy (the same for every target of the
// group) and this target's share of the load.
type Service struct {
	Group  router.Group
	Port   uint16
	Policy router.Policy
	Weight int // 1..router.MaxWeight, default 1
}

// Addr4 is n's IPv4 overlay address (invalid if it has none).
func (n *Node) Addr4() netip.Addr { return pick(n.Address, true) }

// Addr6 is n's IPv6 overlay address (invalid if it has none).
func (n *Node) Addr6() netip.Addr { return pick(n.Address, false) }

// AddrLike is n's overlay address of a's family (invalid if it has none):
// the source for talking to a.
func (n *Node) AddrLike(a netip.Addr) netip.Addr { return pick(n.Address, a.Is4()) }

// Addr4 is p's IPv4 overlay address.
func (p *ProxyPeer) Addr4() netip.Addr { return pick(p.Address, true) }

// Addr6 is p's IPv6 overlay address (invalid if it has none).
func (p *ProxyPeer) Addr6() netip.Addr { return pick(p.Address, false) }

func pick(as []netip.Addr, v4 bool) netip.Addr {
	for _, a := range as {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

// InOverlay reports whether a is inside one of n's overlay prefixes.
func (n *Node) InOverlay(a netip.Addr) bool { return inAny(n.OverlayPrefix, a) }

// InAnycast reports whether a is inside one of n's anycast prefixes.
func (n *Node) InAnycast(a netip.Addr) bool { return inAny(n.AnycastPrefix, a) }

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
