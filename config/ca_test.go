package config

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/router"
)

// Minimal valid CA-mode files: setupCA writes the CA, certificates and
// revocation list they name.
const caProxyBase = `name = "p1"
private_key_file = "p1.key"
ca_file = "ca.pem"
cert_file = "p1.crt"
listen = "127.0.0.1:51820"
[[proxy]]
endpoint = "127.0.0.1:51821"
`

const caTargetBase = `name = "t1"
private_key_file = "t1.key"
ca_file = "ca.pem"
cert_file = "t1.crt"
[[proxy]]
endpoint = "127.0.0.1:51820"
[[group]]
group = "100.65.0.1:80/tcp"
port = 8080
`

const caClientBase = `name = "cl1"
private_key_file = "cl1.key"
ca_file = "ca.pem"
cert_file = "cl1.crt"
[[proxy]]
endpoint = "127.0.0.1:51820"
`

type testCA struct {
	ca  *cert.CA
	key ed25519.PrivateKey
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	now := time.Now()
	ca, key, err := cert.NewCA(name, now.Add(-30*24*time.Hour), now.Add(365*24*time.Hour), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{ca, key}
}

// sign signs c, valid from an hour ago for a month unless c sets its times.
func (tc testCA) sign(t *testing.T, c *cert.Certificate) *cert.Certificate {
	t.Helper()
	now := time.Now()
	if c.NotBefore.IsZero() {
		c.NotBefore = now.Add(-time.Hour)
	}
	if c.NotAfter.IsZero() {
		c.NotAfter = now.Add(30 * 24 * time.Hour)
	}
	if err := tc.ca.Sign(c, tc.key); err != nil {
		t.Fatal(err)
	}
	return c
}

func mustGroup(t *testing.T, s string) router.Group {
	t.Helper()
	g, err := router.ParseGroup(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func addrs(ss ...string) []netip.Addr {
	var as []netip.Addr
	for _, s := range ss {
		as = append(as, netip.MustParseAddr(s))
	}
	return as
}

func writePEM(t *testing.T, dir, name string, text []byte, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), text, 0o644); err != nil {
		t.Fatal(err)
	}
}

// setupCA writes the keys of setup and: ca.pem; p1.crt, t1.crt and cl1.crt
// that fit the CA-mode bases; variants of t1.crt, each wrong in one way;
// other-ca.pem (another CA) and forged-ca.pem (a bad self-signature);
// revoked.pem, which revokes t1-revoked.crt, and other-revoked.pem, signed
// by the other CA.
func setupCA(t *testing.T) *testKeys {
	t.Helper()
	tk := setup(t)
	ca, other := newTestCA(t, "test CA"), newTestCA(t, "other CA")
	caPEM, err := ca.ca.MarshalPEM()
	writePEM(t, tk.dir, "ca.pem", caPEM, err)
	otherPEM, err := other.ca.MarshalPEM()
	writePEM(t, tk.dir, "other-ca.pem", otherPEM, err)
	forged := *ca.ca
	forged.Name = "forged CA"
	forgedPEM, err := forged.MarshalPEM()
	writePEM(t, tk.dir, "forged-ca.pem", forgedPEM, err)

	now := time.Now()
	t1 := func() *cert.Certificate {
		return &cert.Certificate{Name: "t1", Role: cert.RoleTarget, PublicKey: tk.pubs["t1"], Addresses: addrs("100.64.1.1", "fd64::1:1"),
			Groups: cert.SortGroupRights([]cert.GroupRight{
				cert.GroupRightOf(mustGroup(t, "100.65.0.1:80/tcp")),
				cert.GroupRightOf(mustGroup(t, "100.65.0.2:53/udp")),
			}), MaxWeight: 5}
	}
	certs := map[string]*cert.Certificate{
		"p1.crt":       ca.sign(t, &cert.Certificate{Name: "p1", Role: cert.RoleProxy, PublicKey: tk.pubs["p1"], Addresses: addrs("100.64.0.1", "fd64::1"), Cluster: "c1"}),
		"cl1.crt":      ca.sign(t, &cert.Certificate{Name: "cl1", Role: cert.RoleClient, PublicKey: tk.pubs["cl1"], Addresses: addrs("100.64.2.1")}),
		"t1.crt":       ca.sign(t, t1()),
		"t1-other.crt": other.sign(t, t1()),
		"t1-expired.crt": func() *cert.Certificate {
			c := t1()
			c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
			return ca.sign(t, c)
		}(),
		"t1-future.crt": func() *cert.Certificate {
			c := t1()
			c.NotBefore = now.Add(time.Hour)
			return ca.sign(t, c)
		}(),
		"t1-soon.crt": func() *cert.Certificate {
			c := t1()
			c.NotAfter = now.Add(time.Hour)
			return ca.sign(t, c)
		}(),
		"t1-revoked.crt": ca.sign(t, t1()),
		"t1-client.crt":  ca.sign(t, &cert.Certificate{Name: "t1", Role: cert.RoleClient, PublicKey: tk.pubs["t1"], Addresses: addrs("100.64.1.1")}),
		"t2.crt": func() *cert.Certificate {
			c := t1()
			c.Name = "t2"
			return ca.sign(t, c)
		}(),
		"t1-p1key.crt": func() *cert.Certificate {
			c := t1()
			c.PublicKey = tk.pubs["p1"]
			return ca.sign(t, c)
		}(),
		"t1-outside.crt": func() *cert.Certificate {
			c := t1()
			c.Addresses = addrs("10.9.9.9")
			return ca.sign(t, c)
		}(),
	}
	forgedT1 := *certs["t1.crt"]
	forgedT1.Signature = append([]byte(nil), forgedT1.Signature...)
	forgedT1.Signature[0] ^= 1
	certs["t1-forged.crt"] = &forgedT1
	for name, c := range certs {
		text, err := c.MarshalPEM()
		writePEM(t, tk.dir, name, text, err)
	}
	rl, err := cert.NewRevocationList(ca.ca, ca.key, 1, now, nil, []cert.Fingerprint{certs["t1-revoked.crt"].Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	text, err := rl.MarshalPEM()
	writePEM(t, tk.dir, "revoked.pem", text, err)
	orl, err := cert.NewRevocationList(other.ca, other.key, 2, now, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	text, err = orl.MarshalPEM()
	writePEM(t, tk.dir, "other-revoked.pem", text, err)
	return tk
}

// wantError checks that err is the one-line *Error "PATH:LINE: KEY: …msg…".
func wantError(t *testing.T, v any, err error, path string, line int, key, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("loaded: %+v", v)
	}
	if !isNilPtr(v) {
		t.Errorf("returned a config along with the error")
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T is not *Error: %v", err, err)
	}
	s := err.Error()
	t.Log(s)
	if strings.ContainsAny(s, "\r\n") {
		t.Errorf("error is not one line: %q", s)
	}
	prefix := fmt.Sprintf("%s:%d: %s: ", path, line, key)
	if !strings.HasPrefix(s, prefix) || !strings.Contains(e.Msg, msg) {
		t.Errorf("got  %s\nwant %s…%s…", s, prefix, msg)
	}
}

func TestCABadFiles(t *testing.T) {
	tests := []struct {
		name string
		role string
		text string
		line int
		key  string
		msg  string // a substring of the message
	}{
		// The CA, the revocation list and the certificate files.
		{"ca_file missing", RoleTarget, set(caTargetBase, 3, `ca_file = "none.pem"`), 3, "ca_file", "none.pem: no such file"},
		{"ca_file not a CA", RoleTarget, set(caTargetBase, 3, `ca_file = "t1.crt"`), 3, "ca_file", `want "PIAS CA CERTIFICATE"`},
		{"ca_file bad self-signature", RoleTarget, set(caTargetBase, 3, `ca_file = "forged-ca.pem"`), 3, "ca_file", "forged-ca.pem"},
		{"ca_file not a string", RoleTarget, set(caTargetBase, 3, `ca_file = 1`), 3, "ca_file", "want a string"},
		{"cert_file missing key", RoleTarget, set(caTargetBase, 4, `# none`), 1, "cert_file", "required key is missing"},
		{"cert_file missing file", RoleClient, set(caClientBase, 4, `cert_file = "none.crt"`), 4, "cert_file", "none.crt: no such file"},
		{"cert_file garbage", RoleClient, set(caClientBase, 4, `cert_file = "bad.key"`), 4, "cert_file", "not a PEM block"},
		{"cert_file is the CA", RoleClient, set(caClientBase, 4, `cert_file = "ca.pem"`), 4, "cert_file", `want "PIAS CERTIFICATE"`},
		{"cert_file without ca_file", RoleClient, set(caClientBase, 3, `address = ["100.64.2.1"]`), 4, "cert_file", "needs ca_file"},
		{"revocation_file without ca_file", RoleTarget, ins(targetBase, 2, `revocation_file = "revoked.pem"`), 3, "revocation_file", "needs ca_file"},
		{"revocation_file missing", RoleTarget, ins(caTargetBase, 4, `revocation_file = "none.pem"`), 5, "revocation_file", "no such file"},
		{"revocation_file of another CA", RoleTarget, ins(caTargetBase, 4, `revocation_file = "other-revoked.pem"`), 5, "revocation_file", "unknown CA"},
		{"revocation_file not a list", RoleTarget, ins(caTargetBase, 4, `revocation_file = "ca.pem"`), 5, "revocation_file", `want "PIAS REVOCATION LIST"`},
		// The certificate does not verify.
		{"forged certificate", RoleTarget, set(caTargetBase, 4, `cert_file = "t1-forged.crt"`), 4, "cert_file", `signature is not valid: "t1" is not signed by CA "test CA"`},
		{"certificate of another CA", RoleTarget, set(caTargetBase, 4, `cert_file = "t1-other.crt"`), 4, "cert_file", "signed by an unknown CA"},
		{"another CA's certificate and CA", RoleTarget, set(caTargetBase, 3, `ca_file = "other-ca.pem"`), 4, "cert_file", "signed by an unknown CA"},
		{"expired certificate", RoleTarget, set(caTargetBase, 4, `cert_file = "t1-expired.crt"`), 4, "cert_file", `certificate has expired: "t1" expired at`},
		{"not yet valid certificate", RoleTarget, set(caTargetBase, 4, `cert_file = "t1-future.crt"`), 4, "cert_file", `certificate is not valid yet: "t1" is valid from`},
		{"revoked certificate", RoleTarget, ins(set(caTargetBase, 4, `cert_file = "t1-revoked.crt"`), 4, `revocation_file = "revoked.pem"`), 4, "cert_file", `certificate is revoked: "t1"`},
		// The certificate is another node's.
		{"client certificate in a target file", RoleTarget, set(caTargetBase, 4, `cert_file = "t1-client.crt"`), 4, "cert_file", "is a client's certificate; this file is a target's"},
		{"target certificate in a proxy file", RoleProxy, set(caProxyBase, 4, `cert_file = "t1.crt"`), 4, "cert_file", "is a target's certificate; this file is a proxy's"},
		{"proxy certificate in a client file", RoleClient, set(caClientBase, 4, `cert_file = "p1.crt"`), 4, "cert_file", "is a proxy's certificate; this file is a client's"},
		{"name mismatch", RoleTarget, set(caTargetBase, 4, `cert_file = "t2.crt"`), 4, "cert_file", `is the certificate of "t2"; this file's name is "t1"`},
		{"key mismatch", RoleTarget, set(caTargetBase, 4, `cert_file = "t1-p1key.crt"`), 4, "cert_file", "not the one of private_key_file"},
		{"certificate address outside overlay", RoleTarget, set(caTargetBase, 4, `cert_file = "t1-outside.crt"`), 4, "cert_file", "address 10.9.9.9 is outside overlay_prefix"},
		// The file says something else than the certificate.
		{"address mismatch", RoleTarget, ins(caTargetBase, 4, `address = ["100.64.1.2", "fd64::1:1"]`), 5, "address", "differs from the certificate's addresses [100.64.1.1 fd64::1:1] (cert_file at line 4)"},
		{"address subset", RoleTarget, ins(caTargetBase, 4, `address = ["100.64.1.1"]`), 5, "address", "differs from the certificate's addresses"},
		{"address malformed", RoleTarget, ins(caTargetBase, 4, `address = ["x"]`), 5, "address", `"x" is not an IP address`},
		{"cluster mismatch", RoleProxy, ins(caProxyBase, 4, `cluster = "c2"`), 5, "cluster", `"c2" differs from the certificate's cluster "c1"`},
		{"group outside rights", RoleTarget, set(caTargetBase, 8, `group = "100.65.0.1:81/tcp"`), 8, "group.group", "group 100.65.0.1:81/tcp is outside the certificate's group rights [100.65.0.1:80/tcp 100.65.0.2:53/udp] (cert_file at line 4)"},
		{"second group outside rights", RoleTarget, caTargetBase + "[[group]]\ngroup = \"100.65.0.3:53/udp\"\nport = 53\n", 11, "group.group", "outside the certificate's group rights"},
		{"weight above the certificate's", RoleTarget, ins(caTargetBase, 9, `weight = 6`), 10, "group.weight", "6 is more than the certificate's max weight 5"},
		// Static mode in a CA-mode file.
		{"mesh_key_file in CA mode", RoleProxy, ins(caProxyBase, 5, `mesh_key_file = "p2.key"`), 6, "mesh_key_file", "mesh_key_file is static mode; this file is in CA mode (ca_file at line 3): use one or the other"},
		{"edge in CA mode", RoleProxy, caProxyBase + "# an edge\n[[edge]]\nname = \"t1\"\npublic_key = \"T1PUB\"\naddress = [\"100.64.1.1\"]\n", 9, "edge", "[[edge]] is static mode; this file is in CA mode (ca_file at line 3)"},
		{"inline edges in CA mode", RoleProxy, ins(caProxyBase, 5, `edge = [{name = "t1"}, {name = "t2"}]`), 6, "edge", "static mode"},
		{"proxy public_key in CA mode", RoleTarget, ins(caTargetBase, 6, `public_key = "P1PUB"`), 7, "proxy.public_key", "the proxy's certificate tells it; this file is in CA mode (ca_file at line 3)"},
		{"proxy address in CA mode", RoleClient, ins(caClientBase, 6, `address = ["100.64.0.1"]`), 7, "proxy.address", "certificate tells it"},
		{"proxy cluster in CA mode", RoleProxy, ins(caProxyBase, 7, `cluster = "c2"`), 8, "proxy.cluster", "certificate tells it"},
		{"proxy without endpoint in CA mode", RoleTarget, set(caTargetBase, 6, `name = "p1"`), 5, "proxy.endpoint", "required key is missing"},
		{"proxy bad name in CA mode", RoleTarget, ins(caTargetBase, 6, `name = "P1"`), 7, "proxy.name", "a-z"},
		{"edge without proxies in CA mode", RoleClient, head(caClientBase, 4), 1, "proxy", "at least one [[proxy]]"},
		{"unknown key in CA proxy", RoleTarget, ins(caTargetBase, 6, `colour = 1`), 7, "proxy.colour", "unknown key"},
	}
	tk := setupCA(t)
	seen := map[string]bool{}
	for i, tc := range tests {
		if seen[tc.name] {
			t.Fatalf("duplicate test name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			path := tk.write(t, fmt.Sprintf("cabad%02d.toml", i), tc.text)
			v, err := load(tc.role, path)
			wantError(t, v, err, path, tc.line, tc.key, tc.msg)
		})
	}
}

func TestCAGoodFiles(t *testing.T) {
	tk := setupCA(t)
	p, err := LoadProxy(tk.write(t, "p1.toml", caProxyBase))
	if err != nil {
		t.Fatal(err)
	}
	if !p.CAMode() || p.CA.Name != "test CA" || p.Cert.Name != "p1" || p.Revocation != nil || p.CertExpiresSoon ||
		p.CAFile != filepath.Join(tk.dir, "ca.pem") || p.CertFile != filepath.Join(tk.dir, "p1.crt") || p.RevocationFile != "" ||
		p.Cluster != "c1" || fmt.Sprint(p.Address) != "[100.64.0.1 fd64::1]" || p.MeshKey != nil || len(p.Edges) != 0 {
		t.Errorf("proxy: %+v", p)
	}
	if len(p.Proxies) != 1 || fmt.Sprintf("%+v", p.Proxies[0]) != fmt.Sprintf("%+v", ProxyPeer{Endpoint: netip.MustParseAddrPort("127.0.0.1:51821")}) {
		t.Errorf("proxy peers: %+v", p.Proxies)
	}

	// The first proxy of an overlay lists none; address and cluster may
	// repeat the certificate's.
	p, err = LoadProxy(tk.write(t, "p1.toml", ins(head(caProxyBase, 5), 5, `address = ["fd64::1", "100.64.0.1"]`, `cluster = "c1"`)))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Proxies) != 0 || p.Cluster != "c1" || p.Addr4() != netip.MustParseAddr("100.64.0.1") {
		t.Errorf("first proxy: %+v", p)
	}

	tg, err := LoadTarget(tk.write(t, "t1.toml", ins(ins(caTargetBase, 9, `weight = 5`), 6, `name = "p1"`)))
	if err != nil {
		t.Fatal(err)
	}
	if !tg.CAMode() || tg.Cert.Name != "t1" || fmt.Sprint(tg.Address) != "[100.64.1.1 fd64::1:1]" || tg.Groups[0].Weight != 5 ||
		len(tg.Proxies) != 1 || tg.Proxies[0].Name != "p1" || !tg.Proxies[0].PublicKey.IsZero() || tg.Proxies[0].Address != nil {
		t.Errorf("target: %+v", tg)
	}

	// A revocation list that does not name the certificate; a certificate
	// about to expire loads, flagged.
	tg, err = LoadTarget(tk.write(t, "t1.toml", ins(set(caTargetBase, 4, `cert_file = "t1-soon.crt"`), 4, `revocation_file = "revoked.pem"`)))
	if err != nil {
		t.Fatal(err)
	}
	if tg.Revocation == nil || tg.Revocation.Serial != 1 || tg.RevocationFile != filepath.Join(tk.dir, "revoked.pem") || !tg.CertExpiresSoon {
		t.Errorf("target with revocation list, expiring: %+v", tg)
	}

	cl, err := LoadClient(tk.write(t, "cl1.toml", caClientBase))
	if err != nil {
		t.Fatal(err)
	}
	if !cl.CAMode() || cl.Cert.Role != cert.RoleClient || fmt.Sprint(cl.Address) != "[100.64.2.1]" {
		t.Errorf("client: %+v", cl)
	}

	// Static files are not in CA mode.
	sp, err := LoadProxy(tk.write(t, "static.toml", proxyBase))
	if err != nil {
		t.Fatal(err)
	}
	if sp.CAMode() || sp.Cert != nil || sp.CAFile != "" {
		t.Errorf("static proxy in CA mode: %+v", sp.Node)
	}
}
