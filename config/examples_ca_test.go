package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/router"
)

var updateCAExamples = flag.Bool("update-ca-examples", false, "sign examples/ca's certificates anew, with a new CA whose key is then thrown away")

// The sample certificates are valid for a century, so that the examples
// load; TestCAExamples fails a decade before they expire.
var exampleValidity = [2]time.Time{time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC)}

// writeCAExamples writes examples/ca's CA, revocation list and
// certificates for the sample keys in examples/keys.
func writeCAExamples(t *testing.T) {
	ca, key, err := cert.NewCA("pias example CA", exampleValidity[0], exampleValidity[1], nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(name string) [32]byte {
		b, err := os.ReadFile(filepath.Join("examples", "keys", name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		k, err := ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return k.PublicKey()
	}
	rights, err := cert.ParseGroupRights("100.65.0.1:80/tcp,100.65.1.0/24:*/udp")
	if err != nil {
		t.Fatal(err)
	}
	certs := map[string]*cert.Certificate{
		"p1.crt":  {Name: "p1", Role: cert.RoleProxy, PublicKey: pub("p1"), Addresses: addrs("100.64.0.1", "fd64::1"), Cluster: "c1"},
		"t1.crt":  {Name: "t1", Role: cert.RoleTarget, PublicKey: pub("t1"), Addresses: addrs("100.64.1.1", "fd64::1:1"), Groups: rights, SetsPolicy: true, MaxWeight: 10},
		"cl1.crt": {Name: "cl1", Role: cert.RoleClient, PublicKey: pub("cl1"), Addresses: addrs("100.64.2.1", "fd64::2:1")},
	}
	dir := filepath.Join("examples", "ca")
	text, err := ca.MarshalPEM()
	writePEM(t, dir, cert.DirCAFile, text, err)
	rl, err := cert.NewRevocationList(ca, key, 1, exampleValidity[0], nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	text, err = rl.MarshalPEM()
	writePEM(t, dir, cert.DirRevoked, text, err)
	for name, c := range certs {
		c.NotBefore, c.NotAfter = exampleValidity[0], exampleValidity[1]
		if err := ca.Sign(c, key); err != nil {
			t.Fatal(err)
		}
		text, err := c.MarshalPEM()
		writePEM(t, dir, name, text, err)
	}
}

// The CA-mode examples load, each in CA mode with its certificate, and
// agree with the static examples' keys and addresses.
func TestCAExamples(t *testing.T) {
	if *updateCAExamples {
		writeCAExamples(t)
	}
	p, err := LoadProxy("examples/ca/proxy.toml")
	if err != nil {
		t.Fatal(err)
	}
	tg, err := LoadTarget("examples/ca/target.toml")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := LoadClient("examples/ca/client.toml")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := LoadProxy("examples/proxy.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{&p.Node, &tg.Node, &cl.Node} {
		if !n.CAMode() || n.Cert == nil || n.CertExpiresSoon || n.Cert.Name != n.Name {
			t.Errorf("%s: CA mode %v, certificate %+v", n.Path, n.CAMode(), n.Cert)
		}
		if n.CA.Fingerprint() != p.CA.Fingerprint() {
			t.Errorf("%s: another CA", n.Path)
		}
		if time.Until(n.Cert.NotAfter) < 10*365*24*time.Hour {
			t.Errorf("%s: the sample certificate expires %v: go test ./config -run TestCAExamples -update-ca-examples", n.Path, n.Cert.NotAfter)
		}
	}
	if p.Revocation == nil || p.Cluster != "c1" || p.PublicKey != sp.PublicKey || len(p.Proxies) != 1 || p.Proxies[0].Name != "p2" || p.MeshKey != nil {
		t.Errorf("proxy: %+v", p)
	}
	g := func(s string) router.Group { return mustGroup(t, s) }
	if len(tg.Groups) != 2 || tg.Groups[0].Group != g("100.65.0.1:80/tcp") || tg.Groups[0].Weight != 10 ||
		tg.Groups[1].Group != g("100.65.1.7:53/udp") || len(tg.Proxies) != 2 || tg.Proxies[1].Name != "" {
		t.Errorf("target: %+v", tg)
	}
	if cl.Addr6().String() != "fd64::2:1" || cl.InterfaceName != "wg-cl1" || len(cl.Proxies) != 2 {
		t.Errorf("client: %+v", cl)
	}
}
