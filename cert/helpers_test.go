package cert

import (
	"crypto/ed25519"
	"net/netip"
	"testing"
	"time"
)

// t0 is the tests' "now": every fixture is valid around it.
var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

type testCA struct {
	ca  *CA
	key ed25519.PrivateKey
}

func newTestCA(t testing.TB, name string, networks []netip.Prefix, groups []GroupRight) testCA {
	t.Helper()
	ca, key, err := NewCA(name, t0.Add(-24*time.Hour), t0.Add(365*24*time.Hour), networks, groups, nil)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{ca, key}
}

func mustRights(t testing.TB, s string) []GroupRight {
	t.Helper()
	rs, err := ParseGroupRights(s)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func mustPrefixes(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

// targetCert is an unsigned target certificate valid around t0.
func targetCert(t testing.TB) *Certificate {
	t.Helper()
	return &Certificate{
		Name:       "t1",
		Role:       RoleTarget,
		PublicKey:  [32]byte{1, 2, 3},
		Addresses:  []netip.Addr{netip.MustParseAddr("100.64.1.1"), netip.MustParseAddr("fd64::1:1")},
		Groups:     mustRights(t, "100.65.0.1:53/udp,100.65.1.0/24:*/tcp,[fd65::1]:53/udp"),
		SetsPolicy: true,
		MaxWeight:  10,
		NotBefore:  t0.Add(-time.Hour),
		NotAfter:   t0.Add(30 * 24 * time.Hour),
	}
}

func proxyCert(t testing.TB) *Certificate {
	t.Helper()
	return &Certificate{
		Name:      "p1",
		Role:      RoleProxy,
		PublicKey: [32]byte{9},
		Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")},
		Cluster:   "east",
		NotBefore: t0.Add(-time.Hour),
		NotAfter:  t0.Add(time.Hour),
	}
}

// sign signs c as tc with checks of constraints.
func (tc testCA) sign(t testing.TB, c *Certificate) *Certificate {
	t.Helper()
	if err := tc.ca.Sign(c, tc.key); err != nil {
		t.Fatal(err)
	}
	return c
}

// signRaw signs c with key under issuer without any check of constraints:
// what a CA (or a forger holding some key) could produce.
func signRaw(t testing.TB, c *Certificate, issuer *CA, key ed25519.PrivateKey) *Certificate {
	t.Helper()
	c.Issuer = issuer.Fingerprint()
	tbs, err := c.SignedBytes()
	if err != nil {
		t.Fatal(err)
	}
	c.Signature = ed25519.Sign(key, tbs)
	return c
}
