package lab

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
)

// A CA lab grows as an operator grows one: a new node gets a key, a
// certificate that the lab's CA signs (what pias cert sign does) and a
// file that names only the CA, its certificate and proxies' endpoints. No
// other file changes; the proxies admit it by its certificate. Revoking
// one replaces revoked.pem with the next serial (what pias cert revoke
// does); a proxy that reads it passes it to every proxy.

// NewNode is a node to sign into a CA lab.
type NewNode struct {
	Name string
	Role string // config.RoleTarget or config.RoleClient
	// Groups are a target's groups; it serves each on LocalPort.
	Groups []router.Group
	// Rights, when not nil, are the certificate's group rights instead of
	// exactly Groups: a target whose file asks for a group its certificate
	// lacks is refused that group.
	Rights []cert.GroupRight
	// Proxies name the proxies its file lists by endpoint, home first
	// (default: the lab's first proxy).
	Proxies []string
	// Endpoint is its WireGuard UDP address.
	Endpoint netip.AddrPort
}

// caKey reads the lab's CA and its key.
func (l *Lab) caKey() (*cert.CA, ed25519.PrivateKey, error) {
	if l.CA == "" {
		return nil, nil, errors.New("lab: not a CA lab")
	}
	text, err := os.ReadFile(l.Path(l.CA))
	if err != nil {
		return nil, nil, fmt.Errorf("lab: %v", err)
	}
	ca, err := cert.ParseCAPEM(text)
	if err != nil {
		return nil, nil, fmt.Errorf("lab: %s: %v", l.CA, err)
	}
	text, err = os.ReadFile(l.Path(CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("lab: %v", err)
	}
	key, err := cert.ParseKeyPEM(text)
	if err != nil {
		return nil, nil, fmt.Errorf("lab: %s: %v", CAKeyFile, err)
	}
	if !key.Public().(ed25519.PublicKey).Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("lab: %s is not the key of %s", CAKeyFile, l.CA)
	}
	return ca, key, nil
}

// SignNode adds n to the lab: it writes NAME.key, NAME.crt (signed by the
// lab's CA at now, valid from a minute before until the CA expires, as
// pias cert sign signs it) and NAME.toml, and adds the node to l.Nodes,
// its groups to l.Groups, and both to lab.json. Its overlay address is the
// next free one of its role's block. It does not start the node.
func (l *Lab) SignNode(n NewNode, now time.Time) (*Node, error) {
	block := 1
	switch n.Role {
	case config.RoleTarget:
	case config.RoleClient:
		block = 2
		if len(n.Groups) > 0 || n.Rights != nil {
			return nil, fmt.Errorf("lab: %s: a client has no groups", n.Name)
		}
	default:
		return nil, fmt.Errorf("lab: %s: role %q: want target or client", n.Name, n.Role)
	}
	if l.Node(n.Name) != nil {
		return nil, fmt.Errorf("lab: %s exists", n.Name)
	}
	if len(n.Proxies) == 0 {
		if ps := l.Role(config.RoleProxy); len(ps) > 0 {
			n.Proxies = []string{ps[0].Name}
		}
	}
	var proxies []*Node
	for _, name := range n.Proxies {
		p := l.Node(name)
		if p == nil || p.Role != config.RoleProxy {
			return nil, fmt.Errorf("lab: %s: no proxy %q", n.Name, name)
		}
		proxies = append(proxies, p)
	}
	if len(proxies) == 0 {
		return nil, fmt.Errorf("lab: %s: no proxy to list", n.Name)
	}
	ca, caKey, err := l.caKey()
	if err != nil {
		return nil, err
	}
	k, err := config.GeneratePrivateKey()
	if err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	nd := Node{Name: n.Name, Role: n.Role, Config: n.Name + ".toml", KeyFile: n.Name + ".key", Cert: n.Name + ".crt",
		PublicKey: k.PublicKey(), Address: l.freeAddrs(block), Endpoint: n.Endpoint, Home: proxies[0].Name}
	c := &cert.Certificate{Name: n.Name, PublicKey: nd.PublicKey, Addresses: cert.SortAddresses(slices.Clone(nd.Address)),
		NotBefore: now.Add(-caSkew), NotAfter: ca.NotAfter}
	if c.NotBefore.Before(ca.NotBefore) {
		c.NotBefore = ca.NotBefore
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# pias %s %s, signed into the lab (see lab.json): its certificate tells the proxies the rest\n", n.Role, n.Name)
	fmt.Fprintf(&b, "name = %s\nprivate_key_file = %s\nlisten = %s\n", q(n.Name), q(nd.KeyFile), q(n.Endpoint.String()))
	fmt.Fprintf(&b, "ca_file = %s\ncert_file = %s\ninterface = %s\n", q(l.CA), q(nd.Cert), q(config.InterfaceNetstack))
	for _, p := range proxies {
		fmt.Fprintf(&b, "\n[[proxy]]\nendpoint = %s\n", q(p.Endpoint.String()))
	}
	if n.Role == config.RoleTarget {
		c.Role, c.SetsPolicy, c.MaxWeight = cert.RoleTarget, true, router.MaxWeight
		rights := n.Rights
		if rights == nil {
			for _, g := range n.Groups {
				rights = append(rights, cert.GroupRightOf(g))
			}
		}
		c.Groups = cert.SortGroupRights(slices.Clone(rights))
		for _, g := range n.Groups {
			nd.Groups = append(nd.Groups, Service{g.String(), LocalPort(g)})
			fmt.Fprintf(&b, "\n[[group]]\ngroup = %s\nport = %d\n", q(g.String()), LocalPort(g))
		}
	} else {
		c.Role = cert.RoleClient
	}
	if err := ca.Sign(c, caKey); err != nil {
		return nil, fmt.Errorf("lab: %s: %v", n.Name, err)
	}
	certPEM, err := c.MarshalPEM()
	if err != nil {
		return nil, fmt.Errorf("lab: %s: %v", n.Name, err)
	}
	var written []string
	for _, f := range []File{
		{nd.KeyFile, []byte(k.String() + "\n"), 0o600},
		{nd.Cert, certPEM, 0o644},
		{nd.Config, []byte(b.String()), 0o644},
	} {
		created, err := writeNew(l.Path(f.Name), f.Data, f.Mode)
		if created {
			written = append(written, l.Path(f.Name))
		}
		if err != nil {
			return nil, fmt.Errorf("lab: %v%s", err, undo(l.Dir, written))
		}
	}
	l.Nodes = append(l.Nodes, nd)
	for _, s := range nd.Groups {
		if !slices.Contains(l.Groups, s.Group) {
			l.Groups = append(l.Groups, s.Group)
		}
	}
	if err := l.Write(); err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	return l.Node(n.Name), nil
}

// freeAddrs is the first pair of overlay addresses of a role's block that
// no node of the lab holds.
func (l *Lab) freeAddrs(block int) []netip.Addr {
	for i := 1; ; i++ {
		as := overlayAddrs(block, i)
		if !slices.ContainsFunc(l.Nodes, func(n Node) bool { return slices.Contains(n.Address, as[0]) }) {
			return as
		}
	}
}

// Revoke adds the named nodes' certificates to the lab's revocation list:
// it replaces revoked.pem with the next serial, signed at now (as pias
// cert revoke does), and returns the new list, for a proxy to take.
func (l *Lab) Revoke(now time.Time, names ...string) (*cert.RevocationList, error) {
	ca, key, err := l.caKey()
	if err != nil {
		return nil, err
	}
	pool, err := cert.NewPool(ca)
	if err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	var held *cert.RevocationList
	if l.Revoked != "" {
		text, err := os.ReadFile(l.Path(l.Revoked))
		if err != nil {
			return nil, fmt.Errorf("lab: %v", err)
		}
		if held, err = cert.ParseRevocationListPEM(text); err != nil {
			return nil, fmt.Errorf("lab: %s: %v", l.Revoked, err)
		}
		if _, err := pool.VerifyRevocationList(held); err != nil {
			return nil, fmt.Errorf("lab: %s: %v", l.Revoked, err)
		}
	}
	var fps []cert.Fingerprint
	for _, name := range names {
		n := l.Node(name)
		if n == nil || n.Cert == "" {
			return nil, fmt.Errorf("lab: no node %q with a certificate", name)
		}
		text, err := os.ReadFile(l.Path(n.Cert))
		if err != nil {
			return nil, fmt.Errorf("lab: %v", err)
		}
		c, err := cert.ParsePEM(text)
		if err != nil {
			return nil, fmt.Errorf("lab: %s: %v", n.Cert, err)
		}
		fps = append(fps, c.Fingerprint())
	}
	serial := uint64(1)
	if held != nil {
		serial = held.Serial + 1
	}
	rl, err := cert.NewRevocationList(ca, key, serial, now, held, fps)
	if err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	text, err := rl.MarshalPEM()
	if err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	if l.Revoked == "" {
		l.Revoked = RevokedFile
		if err := l.Write(); err != nil {
			return nil, fmt.Errorf("lab: %v", err)
		}
	}
	// Whole or not at all: a proxy may read it at any moment.
	path := l.Path(l.Revoked)
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.WriteFile(tmp, text, 0o644); err != nil {
		return nil, fmt.Errorf("lab: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("lab: %v", err)
	}
	return rl, nil
}
