package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
)

// A CA lab: every node file loads in CA mode with the config loaders; every
// certificate verifies against the lab's CA and holds what lab.json says
// (a target exactly its groups); the files name no key of another node.
func TestGenerateCA(t *testing.T) {
	shapes := []Options{
		{Proxies: 1, Clusters: 1},
		{Proxies: 3, Clusters: 2, Targets: 4, Clients: 3, Groups: 3},
		{Proxies: 3, Clusters: 2, Targets: 4, Clients: 2, Groups: 3, IPv6: true},
		{Proxies: 4, Clusters: 2, Targets: 2, Clients: 1, Groups: 2, Seeded: 2},
		{Proxies: 2, Clusters: 1, Targets: 2, Clients: 1, Groups: 2, InterfacePrefix: "x-", Interface: config.InterfaceTUN},
	}
	for _, o := range shapes {
		o.CA = true
		name := fmt.Sprintf("p%d-c%d-t%d-cl%d-g%d-ipv6=%v-seeded%d", o.Proxies, o.Clusters, o.Targets, o.Clients, o.Groups, o.IPv6, o.Seeded)
		t.Run(name, func(t *testing.T) {
			o.Out = filepath.Join(t.TempDir(), "lab")
			l, err := Generate(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Check(); err != nil {
				t.Fatal(err)
			}
			back, err := ReadLab(o.Out)
			if err != nil || !reflect.DeepEqual(back, l) {
				t.Fatalf("lab.json does not round-trip: %v", err)
			}
			checkCALab(t, o, l)
		})
	}
}

func checkCALab(t *testing.T, o Options, l *Lab) {
	t.Helper()
	if l.CA != CAFile {
		t.Fatalf("lab.json ca = %q", l.CA)
	}
	text, err := os.ReadFile(l.Path(l.CA))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := cert.ParseCAPEM(text)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := cert.NewPool(ca)
	if err != nil {
		t.Fatal(err)
	}
	keyText, err := os.ReadFile(l.Path(CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if key, err := cert.ParseKeyPEM(keyText); err != nil || !ca.PublicKey.Equal(key.Public()) {
		t.Errorf("%s is not the key of %s: %v", CAKeyFile, CAFile, err)
	}
	if fi, err := os.Stat(l.Path(CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode: %v", err)
	}
	// The revocation list: empty, serial 1, the CA's; every proxy holds it.
	if l.Revoked != RevokedFile {
		t.Errorf("lab.json revoked = %q", l.Revoked)
	}
	rlText, err := os.ReadFile(l.Path(RevokedFile))
	if err != nil {
		t.Fatal(err)
	}
	rl, err := cert.ParseRevocationListPEM(rlText)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.VerifyRevocationList(rl); err != nil || rl.Serial != 1 || len(rl.Revoked) != 0 {
		t.Errorf("%s: serial %d, %d revoked, %v; want an empty list, serial 1, of the lab's CA", RevokedFile, rl.Serial, len(rl.Revoked), err)
	}
	for _, f := range []string{MeshKeyFile, "cl1.wg.conf"} {
		if _, err := os.Stat(l.Path(f)); err == nil {
			t.Errorf("a CA lab has %s", f)
		}
	}
	now := time.Now()
	if d := ca.NotAfter.Sub(now); d < CAValidity-time.Hour || d > CAValidity {
		t.Errorf("CA valid for %v more", d)
	}

	proxies := l.Role(config.RoleProxy)
	for _, n := range l.Nodes {
		text, err := os.ReadFile(l.Path(n.Cert))
		if err != nil {
			t.Fatal(err)
		}
		c, err := cert.ParsePEM(text)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Verify(c, now, nil); err != nil {
			t.Errorf("%s: %v", n.Name, err)
		}
		if c.Name != n.Name || c.Role.String() != n.Role || config.Key(c.PublicKey) != n.PublicKey ||
			!reflect.DeepEqual(c.Addresses, n.Address) || c.Cluster != n.Cluster || c.NotAfter != ca.NotAfter {
			t.Errorf("%s: certificate %+v vs lab.json %+v", n.Name, c, n)
		}
		var node *config.Node
		var peers []config.ProxyPeer
		switch n.Role {
		case config.RoleProxy:
			p, err := config.LoadProxy(l.Path(n.Config))
			if err != nil {
				t.Fatal(err)
			}
			node, peers = &p.Node, p.Proxies
			if p.Cluster != n.Cluster || p.MeshKey != nil || len(p.Edges) != 0 {
				t.Errorf("%s: %+v", n.Name, p)
			}
			if p.Revocation == nil || p.Revocation.Serial != 1 || p.RevocationFile != l.Path(RevokedFile) {
				t.Errorf("%s: revocation_file %q, list %+v; want %s, serial 1", n.Name, p.RevocationFile, p.Revocation, RevokedFile)
			}
			// Seeds: every other proxy, or only p1 for a newcomer; a
			// newcomer is in no other file.
			var want []string
			for i, m := range proxies {
				newcomer := i >= o.Proxies-o.Seeded
				switch {
				case m.Name == n.Name:
				case slices.Index(proxies, l.Node(n.Name)) >= o.Proxies-o.Seeded:
					if i == 0 {
						want = append(want, m.Name)
					}
				case !newcomer:
					want = append(want, m.Name)
				}
			}
			var got []string
			for _, pp := range peers {
				got = append(got, pp.Name)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: seeds %v, want %v", n.Name, got, want)
			}
		case config.RoleTarget:
			e, err := config.LoadTarget(l.Path(n.Config))
			if err != nil {
				t.Fatal(err)
			}
			node, peers = &e.Node, e.Proxies
			var rights []cert.GroupRight
			for _, s := range e.Groups {
				rights = append(rights, cert.GroupRightOf(s.Group))
				if !c.AllowsGroup(s.Group) {
					t.Errorf("%s: certificate does not allow %s", n.Name, s.Group)
				}
			}
			if !reflect.DeepEqual(c.Groups, cert.SortGroupRights(rights)) || !c.SetsPolicy || c.MaxWeight != router.MaxWeight {
				t.Errorf("%s: rights %v policy %v max weight %d, want exactly %v", n.Name, c.Groups, c.SetsPolicy, c.MaxWeight, rights)
			}
		default:
			e, err := config.LoadClient(l.Path(n.Config))
			if err != nil {
				t.Fatal(err)
			}
			node, peers = &e.Node, e.Proxies
			if len(c.Groups) != 0 || n.WGQuick != "" {
				t.Errorf("%s: client certificate %+v, lab.json %+v", n.Name, c, n)
			}
		}
		if !node.CAMode() || node.CertExpiresSoon || node.Cert.Fingerprint() != c.Fingerprint() ||
			!reflect.DeepEqual(node.Address, n.Address) || node.Listen != n.Endpoint {
			t.Errorf("%s: loaded %+v", n.Name, node)
		}
		if n.Role != config.RoleProxy {
			if len(peers) != o.Proxies || peers[0].Name != n.Home {
				t.Errorf("%s: proxies %+v, home %s", n.Name, peers, n.Home)
			}
		}
		for _, pp := range peers {
			m := l.Node(pp.Name)
			if m == nil || m.Role != config.RoleProxy || pp.Endpoint != m.Endpoint || !pp.PublicKey.IsZero() || pp.Address != nil || pp.Cluster != "" {
				t.Errorf("%s: proxy %+v does not match lab.json", n.Name, pp)
			}
		}
	}
}

// A static lab stays as it was: no CA, no certificates.
func TestGenerateStaticHasNoCA(t *testing.T) {
	o := Options{Out: filepath.Join(t.TempDir(), "lab"), Proxies: 2, Clusters: 1, Targets: 1, Clients: 1, Groups: 1}
	l, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	if l.CA != "" || l.Revoked != "" {
		t.Errorf("static lab has CA %q, revocation list %q", l.CA, l.Revoked)
	}
	for _, n := range l.Nodes {
		if n.Cert != "" {
			t.Errorf("%s: certificate %q", n.Name, n.Cert)
		}
	}
	for _, f := range []string{CAFile, CAKeyFile, RevokedFile, "p1.crt"} {
		if _, err := os.Stat(l.Path(f)); err == nil {
			t.Errorf("static lab has %s", f)
		}
	}
}
