// Package lab builds pias labs: sets of consistent node configurations
// (Generate, lab.json) and the harness that runs them.
package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
)

// Defaults of Options.
var DefaultUnderlay = netip.MustParsePrefix("127.0.0.1/32")

const (
	DefaultBasePort = config.DefaultListenPort
	// MaxNodesPerRole bounds Proxies, Targets and Clients: each role's
	// overlay addresses are the hosts of one /24 (100.64.R.1…254).
	MaxNodesPerRole = 254
	// MaxGroups keeps the groups inside 100.65.0.0/16.
	MaxGroups = 2 * 65534
)

// Options shape a lab.
type Options struct {
	Out string // directory to write to; created if needed, must be empty

	Proxies  int // ≥ 1
	Clusters int // 1 ≤ Clusters ≤ Proxies; proxy i (0-based) is in cluster c(i mod Clusters + 1)
	Targets  int
	Clients  int
	Groups   int // ≥ 1 when Targets > 0

	// IPv6 gives every group i an IPv6 twin, GroupN6(i) on fd65::(1+i/2),
	// with the same port, protocol and local port: every target joins both
	// twins, proxies let it, and lab.json lists the twins after the IPv4
	// groups.
	IPv6 bool

	// Underlay is where the nodes' WireGuard UDP sockets live. A single
	// address (/32, /128) gives every node that address with consecutive
	// ports from BasePort; a wider prefix gives every node its own host
	// address (.1, .2, …) and port BasePort. Default 127.0.0.1/32.
	Underlay netip.Prefix
	BasePort uint16 // default 51820

	// Hosts, instead of Underlay, gives every node the public address of
	// its host (ParseHosts reads a hosts file): each node listens on
	// BasePort there, and nodes that share a host take the ports after it,
	// in lab.json order. It must name every node of the lab and no other.
	Hosts []Host
	// HostsFile names where Hosts came from, in errors.
	HostsFile string

	// Interface is the edges' host interface (config's interface key);
	// default netstack.
	Interface string
	// InterfacePrefix, when set, names every node's interface (and UAPI
	// socket) PREFIX+NAME instead of the default pias-NAME, so that labs
	// sharing a host (namespaces share /var/run/wireguard) never collide.
	InterfacePrefix string

	// Places, if set, places every target (one entry each, in order)
	// instead of the default: home proxy j mod Proxies, group j mod Groups,
	// every other proxy a fallback. A scenario played both here and in the
	// simulator (sim's cross-check) needs targets where it says.
	Places []Place

	// Seeded makes the last Seeded proxies newcomers: their files name only
	// p1, as seed, and no other file names them; they join through p1 with
	// the lab's mesh key (every proxy file has mesh_key_file = "mesh.key"),
	// or in a CA lab by their certificates.
	Seeded int

	// CA makes a CA lab: a CA (CAFile, CAKeyFile), its revocation list
	// (RevokedFile, empty; every proxy file names it as revocation_file),
	// a certificate per node (NAME.crt), and node files in CA mode, which name the CA and the
	// node's certificate and list only the proxies' endpoints. A target's
	// certificate grants exactly the groups it joins, with the policy
	// right and any weight (what a static lab's [[edge]] entries grant);
	// clients get no wg-quick file (a plain WireGuard client has no
	// certificate). No mesh key. Otherwise the lab is static: proxies list
	// their peers and edges with their keys, and share a mesh key.
	CA bool
}

// Place is where Options.Places puts one target.
type Place struct {
	Home   int   // its home proxy, 0-based (p1 is 0)
	Groups []int // the groups it joins, by GroupN index; at least one
	// Pinned: its file lists its home only and learns no proxies, so it
	// never moves: while its home is down, its groups have no target
	// there and none elsewhere.
	Pinned bool
}

// MeshKeyFile is the lab's mesh key, shared by its proxies (static labs).
const MeshKeyFile = "mesh.key"

// A CA lab's directory is also its CA's directory, as pias ca init writes
// it: pias cert sign --ca LABDIR signs a new node into the lab.
const (
	CAFile    = cert.DirCAFile
	CAKeyFile = cert.DirKeyFile
	// RevokedFile is a CA lab's revocation list: empty, serial 1, when the
	// lab is made.
	RevokedFile = cert.DirRevoked
	// CAName names a lab's CA.
	CAName = "pias lab CA"
	// CAValidity is how long a lab's CA and certificates are valid.
	CAValidity = 365 * 24 * time.Hour
	// caSkew backdates the lab's CA and certificates (as pias ca init and
	// cert sign do), so that a node whose clock is a little behind accepts
	// them at once.
	caSkew = time.Minute
)

func (o *Options) defaults() {
	if o.HostsFile == "" {
		o.HostsFile = "hosts"
	}
	if !o.Underlay.IsValid() && len(o.Hosts) == 0 {
		o.Underlay = DefaultUnderlay
	}
	if o.BasePort == 0 {
		o.BasePort = DefaultBasePort
	}
	if o.Interface == "" {
		o.Interface = config.DefaultInterface
	}
}

// longestName is the length of the longest node name the lab will have.
func (o *Options) longestName() int {
	n := len(fmt.Sprintf("p%d", o.Proxies))
	n = max(n, len(fmt.Sprintf("t%d", o.Targets)))
	return max(n, len(fmt.Sprintf("cl%d", o.Clients)))
}

func (o *Options) validate() error {
	switch {
	case o.Out == "":
		return errors.New("lab: no output directory")
	case o.Proxies < 1:
		return fmt.Errorf("lab: %d proxies: want at least 1", o.Proxies)
	case o.Proxies > MaxNodesPerRole:
		return fmt.Errorf("lab: %d proxies: at most %d", o.Proxies, MaxNodesPerRole)
	case o.Seeded < 0 || o.Seeded >= o.Proxies:
		return fmt.Errorf("lab: %d seeded proxies: want 0..%d (p1 is the seed)", o.Seeded, o.Proxies-1)
	case o.Clusters < 1 || o.Clusters > o.Proxies:
		return fmt.Errorf("lab: %d clusters: want 1..%d (at most one per proxy)", o.Clusters, o.Proxies)
	case o.Targets < 0 || o.Targets > MaxNodesPerRole:
		return fmt.Errorf("lab: %d targets: want 0..%d", o.Targets, MaxNodesPerRole)
	case o.Clients < 0 || o.Clients > MaxNodesPerRole:
		return fmt.Errorf("lab: %d clients: want 0..%d", o.Clients, MaxNodesPerRole)
	case o.Groups < 0 || o.Groups > MaxGroups:
		return fmt.Errorf("lab: %d groups: want 0..%d", o.Groups, MaxGroups)
	case o.Targets > 0 && o.Groups < 1:
		return fmt.Errorf("lab: %d targets but no groups: want at least 1 group", o.Targets)
	case o.Interface != config.InterfaceNetstack && o.Interface != config.InterfaceTUN && o.Interface != config.InterfaceWater:
		return fmt.Errorf("lab: interface %q: want netstack, tun or water", o.Interface)
	case o.InterfacePrefix != "" && len(o.InterfacePrefix)+o.longestName() > config.MaxInterfaceNameLen:
		return fmt.Errorf("lab: interface prefix %q is too long: prefix and node name must fit %d bytes", o.InterfacePrefix, config.MaxInterfaceNameLen)
	}
	if err := o.validatePlaces(); err != nil {
		return err
	}
	if len(o.Hosts) > 0 {
		return o.validateHosts()
	}
	u := o.Underlay
	if u.Addr().Zone() != "" || u.Addr().Is4In6() {
		return fmt.Errorf("lab: underlay %s: want a plain IPv4 or IPv6 prefix", u)
	}
	total := o.Proxies + o.Targets + o.Clients
	if u.IsSingleIP() {
		if last := int(o.BasePort) + total - 1; last > 65535 {
			return fmt.Errorf("lab: underlay %s: %d nodes from port %d need ports up to %d (max 65535)", u, total, o.BasePort, last)
		}
		return nil
	}
	if u.Masked() != u {
		return fmt.Errorf("lab: underlay %s has host bits set (did you mean %s?)", u, u.Masked())
	}
	// Hosts .1 … (skipping the network address, and for IPv4 the broadcast).
	size := new(big.Int).Lsh(big.NewInt(1), uint(u.Addr().BitLen()-u.Bits()))
	size.Sub(size, big.NewInt(1))
	if u.Addr().Is4() {
		size.Sub(size, big.NewInt(1))
	}
	if size.Cmp(big.NewInt(int64(total))) < 0 {
		return fmt.Errorf("lab: underlay %s has %s host addresses, %d nodes need one each", u, size, total)
	}
	return nil
}

func (o *Options) validatePlaces() error {
	if o.Places == nil {
		return nil
	}
	if len(o.Places) != o.Targets {
		return fmt.Errorf("lab: %d places for %d targets: want one each", len(o.Places), o.Targets)
	}
	for j, pl := range o.Places {
		if pl.Home < 0 || pl.Home >= o.Proxies {
			return fmt.Errorf("lab: target t%d: home proxy %d: want 0..%d", j+1, pl.Home, o.Proxies-1)
		}
		if len(pl.Groups) == 0 {
			return fmt.Errorf("lab: target t%d joins no group", j+1)
		}
		for k, g := range pl.Groups {
			if g < 0 || g >= o.Groups {
				return fmt.Errorf("lab: target t%d: group %d: want 0..%d", j+1, g, o.Groups-1)
			}
			if slices.Contains(pl.Groups[:k], g) {
				return fmt.Errorf("lab: target t%d joins group %d twice", j+1, g)
			}
		}
	}
	return nil
}

// place is where target j goes: Options.Places[j], or the default.
func (o *Options) place(j int) Place {
	if o.Places != nil {
		return o.Places[j]
	}
	return Place{Home: j % o.Proxies, Groups: []int{j % o.Groups}}
}

// endpoint is the underlay address of the k-th node (0-based; proxies
// first, then targets, then clients), called name.
func (o *Options) endpoint(k int, name string) netip.AddrPort {
	if len(o.Hosts) > 0 {
		return o.hostEndpoint(name)
	}
	if o.Underlay.IsSingleIP() {
		return netip.AddrPortFrom(o.Underlay.Addr(), o.BasePort+uint16(k))
	}
	a := o.Underlay.Addr()
	for range k + 1 {
		a = a.Next()
	}
	return netip.AddrPortFrom(a, o.BasePort)
}

// Overlay addresses: role block r (0 proxies, 1 targets, 2 clients) and
// 1-based number n give 100.64.r.n and fd64::r:n, the IPv6 one written with
// the same digits (fd64::1:10 is 100.64.1.10).
func overlayAddrs(r, n int) []netip.Addr {
	v4 := netip.AddrFrom4([4]byte{100, 64, byte(r), byte(n)})
	s := fmt.Sprintf("fd64::%d", n)
	if r > 0 {
		s = fmt.Sprintf("fd64::%d:%d", r, n)
	}
	return []netip.Addr{v4, netip.MustParseAddr(s)}
}

// GroupN is the lab's i-th group (0-based): even i is 100.65.0.(1+i/2):80/tcp,
// odd i is 100.65.0.(1+i/2):53/udp.
func GroupN(i int) router.Group {
	base := netip.MustParseAddr("100.65.0.0").As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	n += uint32(1 + i/2)
	a := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	if i%2 == 0 {
		return router.Group{Addr: a, Port: 80, Proto: router.ProtoTCP}
	}
	return router.Group{Addr: a, Port: 53, Proto: router.ProtoUDP}
}

// GroupN6 is the IPv6 twin of GroupN(i): the same port and protocol on
// fd65::(1+i/2) (fd65::1 for groups 0 and 1, fd65::2 for 2 and 3, …).
func GroupN6(i int) router.Group {
	g := GroupN(i)
	a := netip.MustParseAddr("fd65::").As16()
	n := uint32(1 + i/2)
	a[12], a[13], a[14], a[15] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	g.Addr = netip.AddrFrom16(a)
	return g
}

// LocalPort is the port a lab target serves group g on: g's port + 8000.
func LocalPort(g router.Group) uint16 { return g.Port + 8000 }

type genNode struct {
	Node
	priv     config.Key
	proxies  []int  // edges: indexes of the proxies they list, home first
	iface    string // edges: host interface
	ifPrefix string // interface names are ifPrefix+Name when set
	seeded   bool   // proxies: a newcomer that knows only p1
	pinned   bool   // targets: Place.Pinned
	ca       bool   // the node's file is in CA mode
}

// Generate writes a lab into opts.Out: for every node NAME.key and
// NAME.toml, and lab.json; in a static lab also mesh.key and for every
// client NAME.wg.conf (a wg-quick file for a plain WireGuard client of its
// home proxy); in a CA lab also the CA (ca.pem, ca.key) and for every node
// NAME.crt. It is NewPlan
// and Plan.Write: nothing is written unless the whole lab could be planned.
func Generate(opts Options) (*Lab, error) {
	p, err := NewPlan(opts)
	if err != nil {
		return nil, err
	}
	if err := p.Write(); err != nil {
		return nil, err
	}
	return p.Lab, nil
}

// A Plan is a lab computed in memory: its description and the bytes of
// every file, each config already loaded back with the config package.
type Plan struct {
	Lab   *Lab   // Lab.Dir is Options.Out
	Files []File // in the order Write creates them; lab.json last
}

// A File is one file of a Plan.
type File struct {
	Name string // relative to the lab directory
	Data []byte
	Mode fs.FileMode
}

// NewPlan computes the lab opts describe, with new keys, and checks every
// config it would write. It writes nothing and does not look at opts.Out.
func NewPlan(opts Options) (*Plan, error) { return newPlan(opts, config.GeneratePrivateKey) }

// newPlan is NewPlan with the keys from newKey: the nodes' in lab.json
// order, then (static labs) the mesh key.
func newPlan(opts Options, newKey func() (config.Key, error)) (*Plan, error) {
	opts.defaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	l := &Lab{
		Dir:           opts.Out,
		Underlay:      opts.Underlay,
		AnycastPrefix: config.DefaultAnycastPrefix(),
		OverlayPrefix: config.DefaultOverlayPrefix(),
		ControlPort:   config.DefaultControlPort,
	}
	for i := range opts.Groups {
		l.Groups = append(l.Groups, GroupN(i).String())
	}
	if opts.IPv6 {
		for i := range opts.Groups {
			l.Groups = append(l.Groups, GroupN6(i).String())
		}
	}

	var nodes []*genNode
	add := func(name, role string, block, n int) (*genNode, error) {
		k, err := newKey()
		if err != nil {
			return nil, fmt.Errorf("lab: %v", err)
		}
		g := &genNode{priv: k, iface: opts.Interface, ifPrefix: opts.InterfacePrefix, ca: opts.CA, Node: Node{
			Name:      name,
			Role:      role,
			Config:    name + ".toml",
			KeyFile:   name + ".key",
			PublicKey: k.PublicKey(),
			Address:   overlayAddrs(block, n),
			Endpoint:  opts.endpoint(len(nodes), name),
		}}
		nodes = append(nodes, g)
		return g, nil
	}
	var proxies []*genNode
	for i := range opts.Proxies {
		p, err := add("p"+strconv.Itoa(i+1), config.RoleProxy, 0, i+1)
		if err != nil {
			return nil, err
		}
		p.Cluster = "c" + strconv.Itoa(i%opts.Clusters+1)
		p.seeded = i >= opts.Proxies-opts.Seeded
		proxies = append(proxies, p)
	}
	homeFirst := func(home int) []int {
		out := []int{home}
		for i := range opts.Proxies {
			if i != home {
				out = append(out, i)
			}
		}
		return out
	}
	for j := range opts.Targets {
		t, err := add("t"+strconv.Itoa(j+1), config.RoleTarget, 1, j+1)
		if err != nil {
			return nil, err
		}
		pl := opts.place(j)
		for _, i := range pl.Groups {
			g := GroupN(i)
			t.Groups = append(t.Groups, Service{g.String(), LocalPort(g)})
		}
		if opts.IPv6 {
			for _, i := range pl.Groups {
				g6 := GroupN6(i)
				t.Groups = append(t.Groups, Service{g6.String(), LocalPort(g6)})
			}
		}
		t.proxies, t.pinned = homeFirst(pl.Home), pl.Pinned
		if t.pinned {
			t.proxies = t.proxies[:1]
		}
		t.Home = proxies[t.proxies[0]].Name
	}
	for j := range opts.Clients {
		c, err := add("cl"+strconv.Itoa(j+1), config.RoleClient, 2, j+1)
		if err != nil {
			return nil, err
		}
		c.proxies = homeFirst((j + 1) % opts.Proxies)
		c.Home = proxies[c.proxies[0]].Name
		if !opts.CA {
			c.WGQuick = c.Name + ".wg.conf"
		}
	}

	p := &Plan{Lab: l}
	addFile := func(name, text string, mode fs.FileMode) {
		p.Files = append(p.Files, File{Name: name, Data: []byte(text), Mode: mode})
	}
	if opts.CA {
		files, err := signLab(l, nodes, time.Now())
		if err != nil {
			return nil, err
		}
		p.Files = append(p.Files, files...)
	} else {
		mesh, err := newKey()
		if err != nil {
			return nil, fmt.Errorf("lab: %v", err)
		}
		addFile(MeshKeyFile, mesh.String()+"\n", 0o600)
	}
	for _, n := range nodes {
		var text string
		if n.Role == config.RoleProxy {
			text = proxyTOML(l, n, proxies, nodes)
		} else {
			text = edgeTOML(l, n, proxies)
		}
		addFile(n.KeyFile, n.priv.String()+"\n", 0o600)
		addFile(n.Config, text, 0o644)
		if n.WGQuick != "" {
			addFile(n.WGQuick, wgQuick(l, n, proxies[n.proxies[0]]), 0o600)
		}
		l.Nodes = append(l.Nodes, n.Node)
	}
	data, err := l.encode()
	if err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	p.Files = append(p.Files, File{Name: LabFile, Data: data, Mode: 0o644})
	if err := l.check(p.reader()); err != nil {
		return nil, fmt.Errorf("lab: generated a bad config (a bug): %v", err)
	}
	return p, nil
}

// reader reads the plan's files by path, as if they were written.
func (p *Plan) reader() config.FileReader {
	byPath := make(map[string][]byte, len(p.Files))
	for _, f := range p.Files {
		byPath[p.Lab.Path(f.Name)] = f.Data
	}
	return func(path string) ([]byte, error) {
		if data, ok := byPath[filepath.Clean(path)]; ok {
			return data, nil
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
}

// Write creates the lab's directory if needed, which must then be empty,
// and writes the files into it; it never replaces a file. When a write fails
// it removes the files it wrote, so that the directory is empty again, and
// says so (or names the files it could not remove).
func (p *Plan) Write() error {
	dir := p.Lab.Dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lab: %v", err)
	}
	if ents, err := os.ReadDir(dir); err != nil {
		return fmt.Errorf("lab: %v", err)
	} else if len(ents) > 0 {
		return fmt.Errorf("lab: %s is not empty", dir)
	}
	var written []string
	for _, f := range p.Files {
		path := p.Lab.Path(f.Name)
		created, err := writeNew(path, f.Data, f.Mode)
		if created {
			written = append(written, path)
		}
		if err != nil {
			return fmt.Errorf("lab: %v%s", err, undo(dir, written))
		}
	}
	return nil
}

// writeNew writes a file that must not exist yet; created reports whether
// it now exists (when err is not nil, possibly incomplete).
func writeNew(path string, data []byte, mode fs.FileMode) (created bool, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return false, err
	}
	_, err = f.Write(data)
	if err1 := f.Close(); err == nil {
		err = err1
	}
	return true, err
}

// undo removes the files a failed Write created in dir, and says how that
// went, for the end of Write's error.
func undo(dir string, written []string) string {
	var left []string
	for _, path := range written {
		if err := os.Remove(path); err != nil {
			left = append(left, filepath.Base(path))
		}
	}
	switch {
	case len(left) > 0:
		return fmt.Sprintf(" (and %s holds a partial lab: could not remove %s)", dir, strings.Join(left, ", "))
	case len(written) > 0:
		return fmt.Sprintf(" (removed the %d files written before)", len(written))
	}
	return ""
}

// Check loads every node's config with the loader of its role.
func (l *Lab) Check() error { return l.check(os.ReadFile) }

func (l *Lab) check(r config.FileReader) error {
	for _, n := range l.Nodes {
		var err error
		switch n.Role {
		case config.RoleProxy:
			_, err = r.LoadProxy(l.Path(n.Config))
		case config.RoleTarget:
			_, err = r.LoadTarget(l.Path(n.Config))
		default:
			_, err = r.LoadClient(l.Path(n.Config))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func q(s string) string { return strconv.Quote(s) }

func list[T fmt.Stringer](vs []T) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = q(v.String())
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func commonTOML(b *strings.Builder, l *Lab, n *genNode) {
	fmt.Fprintf(b, "# pias %s %s, generated by pias lab gen (see lab.json)\n", n.Role, n.Name)
	fmt.Fprintf(b, "name = %s\n", q(n.Name))
	fmt.Fprintf(b, "private_key_file = %s\n", q(n.KeyFile))
	fmt.Fprintf(b, "listen = %s\n", q(n.Endpoint.String()))
	if n.ca {
		fmt.Fprintf(b, "ca_file = %s\n", q(l.CA))
		fmt.Fprintf(b, "cert_file = %s  # address", q(n.Cert))
		if n.Cluster != "" {
			b.WriteString(" and cluster")
		}
		b.WriteString(": the certificate's\n")
	} else {
		fmt.Fprintf(b, "address = %s\n", list(n.Address))
		if n.Cluster != "" {
			fmt.Fprintf(b, "cluster = %s\n", q(n.Cluster))
		}
	}
	fmt.Fprintf(b, "overlay_prefix = %s\n", list(l.OverlayPrefix))
	fmt.Fprintf(b, "anycast_prefix = %s\n", list(l.AnycastPrefix))
	if n.Role == config.RoleProxy {
		fmt.Fprintf(b, "rap_replicas = %d\n", config.DefaultRAPReplicas)
	}
	fmt.Fprintf(b, "mtu = %d\n", config.DefaultMTU)
	fmt.Fprintf(b, "control_port = %d\n", l.ControlPort)
	if n.ifPrefix != "" {
		fmt.Fprintf(b, "interface_name = %s\n", q(n.ifPrefix+n.Name))
	}
}

func proxyPeerTOML(b *strings.Builder, p *genNode, home bool) {
	b.WriteString("\n[[proxy]]")
	if home {
		b.WriteString("  # home")
	}
	fmt.Fprintf(b, "\nname = %s\n", q(p.Name))
	if p.ca { // its certificate tells the rest
		fmt.Fprintf(b, "endpoint = %s\n", q(p.Endpoint.String()))
		return
	}
	fmt.Fprintf(b, "public_key = %s\n", q(p.PublicKey.String()))
	fmt.Fprintf(b, "endpoint = %s\n", q(p.Endpoint.String()))
	fmt.Fprintf(b, "address = %s\n", list(p.Address))
	fmt.Fprintf(b, "cluster = %s\n", q(p.Cluster))
}

func proxyTOML(l *Lab, n *genNode, proxies, nodes []*genNode) string {
	var b strings.Builder
	commonTOML(&b, l, n)
	if n.ca {
		fmt.Fprintf(&b, "revocation_file = %s  # pias cert revoke --ca . replaces it; SIGHUP rereads it\n", q(l.Revoked))
	} else {
		fmt.Fprintf(&b, "mesh_key_file = %s\n", q(MeshKeyFile))
	}
	for _, p := range proxies {
		switch {
		case p == n:
		case n.seeded && p == proxies[0]:
			b.WriteString("\n# The seed: this proxy joins through it and learns the others.")
			proxyPeerTOML(&b, p, false)
		case !n.seeded && !p.seeded:
			proxyPeerTOML(&b, p, false)
		}
	}
	for _, e := range nodes {
		if e.Role == config.RoleProxy || n.ca { // in CA mode, edges come with certificates
			continue
		}
		fmt.Fprintf(&b, "\n[[edge]]  # %s\n", e.Role)
		fmt.Fprintf(&b, "name = %s\n", q(e.Name))
		fmt.Fprintf(&b, "public_key = %s\n", q(e.PublicKey.String()))
		fmt.Fprintf(&b, "address = %s\n", list(e.Address))
		if len(e.Groups) > 0 {
			gs := make([]string, len(e.Groups))
			for i, s := range e.Groups {
				gs[i] = q(s.Group)
			}
			fmt.Fprintf(&b, "groups = [%s]\n", strings.Join(gs, ", "))
			// The lab's targets are all the operator's: each may set its
			// groups' policy and ask for any weight (the demos do).
			fmt.Fprintf(&b, "policy = true\nmax_weight = %d\n", router.MaxWeight)
		}
	}
	return b.String()
}

func edgeTOML(l *Lab, n *genNode, proxies []*genNode) string {
	var b strings.Builder
	commonTOML(&b, l, n)
	fmt.Fprintf(&b, "interface = %s\n", q(n.iface))
	fmt.Fprintf(&b, "keepalive = %s\n", q(config.DefaultKeepalive.String()))
	if n.pinned {
		b.WriteString("learn_proxies = false  # pinned to its home: it never moves\n")
	}
	for i, pi := range n.proxies {
		proxyPeerTOML(&b, proxies[pi], i == 0)
	}
	for _, s := range n.Groups {
		fmt.Fprintf(&b, "\n[[group]]\ngroup = %s\nport = %d\n", q(s.Group), s.Port)
	}
	return b.String()
}

// wgQuick is a wg-quick file for a plain WireGuard client of home.
func wgQuick(l *Lab, n, home *genNode) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# plain WireGuard client %s of pias proxy %s, generated by pias lab gen\n", n.Name, home.Name)
	fmt.Fprintf(&b, "# wg-quick up ./%s, or import it into a WireGuard app. Address and MTU are\n", n.WGQuick)
	fmt.Fprintf(&b, "# wg-quick's: for wg, wg setconf IF <(wg-quick strip ./%s), then ip for\n", n.WGQuick)
	b.WriteString("# the addresses, MTU and AllowedIPs routes (README, \"Plain WireGuard clients\").\n")
	b.WriteString("[Interface]\n")
	fmt.Fprintf(&b, "PrivateKey = %s\n", n.priv)
	addrs := make([]string, len(n.Address))
	for i, a := range n.Address {
		addrs[i] = netip.PrefixFrom(a, a.BitLen()).String()
	}
	fmt.Fprintf(&b, "Address = %s\n", strings.Join(addrs, ", "))
	fmt.Fprintf(&b, "ListenPort = %d\n", n.Endpoint.Port())
	fmt.Fprintf(&b, "MTU = %d\n", config.DefaultMTU)
	b.WriteString("\n[Peer]\n")
	fmt.Fprintf(&b, "# %s\n", home.Name)
	fmt.Fprintf(&b, "PublicKey = %s\n", home.PublicKey)
	fmt.Fprintf(&b, "Endpoint = %s\n", home.Endpoint)
	var allowed []string
	for _, p := range l.AnycastPrefix {
		allowed = append(allowed, p.String())
	}
	for _, p := range l.OverlayPrefix {
		allowed = append(allowed, p.String())
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(allowed, ", "))
	b.WriteString("PersistentKeepalive = 25\n")
	return b.String()
}

// signLab makes a CA lab's CA, valid from now, its empty revocation list
// (serial 1) and a certificate per node, and returns their files:
// CAKeyFile, CAFile, RevokedFile, then the nodes' in order. It sets l.CA,
// l.Revoked and each node's Cert. The CA may sign only addresses of the
// lab's overlay prefixes and groups of its anycast prefixes.
func signLab(l *Lab, nodes []*genNode, now time.Time) ([]File, error) {
	var anycast []cert.GroupRight
	for _, p := range l.AnycastPrefix {
		for _, proto := range []uint8{router.ProtoTCP, router.ProtoUDP} {
			anycast = append(anycast, cert.GroupRight{Prefix: p, Proto: proto})
		}
	}
	ca, key, err := cert.NewCA(CAName, now.Add(-caSkew), now.Add(CAValidity), l.OverlayPrefix, anycast, nil)
	if err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	caPEM, err := ca.MarshalPEM()
	if err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	rl, err := cert.NewRevocationList(ca, key, 1, now, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	rlPEM, err := rl.MarshalPEM()
	if err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	l.CA, l.Revoked = CAFile, RevokedFile
	files := []File{
		{Name: CAKeyFile, Data: cert.MarshalKeyPEM(key), Mode: 0o600},
		{Name: CAFile, Data: caPEM, Mode: 0o644},
		{Name: RevokedFile, Data: rlPEM, Mode: 0o644},
	}
	for _, n := range nodes {
		c, err := nodeCert(n)
		if err != nil {
			return nil, err
		}
		c.NotBefore, c.NotAfter = ca.NotBefore, ca.NotAfter
		if err := ca.Sign(c, key); err != nil {
			return nil, fmt.Errorf("lab: %s: %v", n.Name, err)
		}
		text, err := c.MarshalPEM()
		if err != nil {
			return nil, fmt.Errorf("lab: %s: %v", n.Name, err)
		}
		n.Cert = n.Name + ".crt"
		files = append(files, File{Name: n.Cert, Data: text, Mode: 0o644})
	}
	return files, nil
}

// nodeCert is n's certificate, unsigned: a proxy's with its cluster; a
// target's with the right to exactly its groups, to set their policy and
// to ask for any weight; a client's.
func nodeCert(n *genNode) (*cert.Certificate, error) {
	c := &cert.Certificate{Name: n.Name, PublicKey: n.PublicKey, Addresses: cert.SortAddresses(n.Address)}
	switch n.Role {
	case config.RoleProxy:
		c.Role, c.Cluster = cert.RoleProxy, n.Cluster
	case config.RoleTarget:
		c.Role, c.SetsPolicy, c.MaxWeight = cert.RoleTarget, true, router.MaxWeight
		var rights []cert.GroupRight
		for _, s := range n.Groups {
			g, err := router.ParseGroup(s.Group)
			if err != nil {
				return nil, fmt.Errorf("lab: %s: %v", n.Name, err)
			}
			rights = append(rights, cert.GroupRightOf(g))
		}
		c.Groups = cert.SortGroupRights(rights)
	default:
		c.Role = cert.RoleClient
	}
	return c, nil
}
