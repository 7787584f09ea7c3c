package cert

import (
	"crypto/ed25519"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestVerify has one case per way a certificate can fail, and checks the
// error wraps the right Err* value and names the reason.
func TestVerify(t *testing.T) {
	tc := newTestCA(t, "home", mustPrefixes(t, "100.64.0.0/16", "fd64::/48"),
		mustRights(t, "100.65.0.0/16:*/udp,100.65.0.0/16:*/tcp,[fd65::/64]:*/udp"))
	other := newTestCA(t, "other", nil, nil)
	pool, err := NewPool(tc.ca)
	if err != nil {
		t.Fatal(err)
	}
	good := tc.sign(t, targetCert(t))
	goodFP := good.Fingerprint()
	revoked, err := NewRevocationList(tc.ca, tc.key, 1, t0, nil, []Fingerprint{goodFP})
	if err != nil {
		t.Fatal(err)
	}
	expiredCA, expiredCAKey, err := NewCA("old", t0.Add(-48*time.Hour), t0.Add(-24*time.Hour), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Add(expiredCA); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name    string
		cert    func() *Certificate
		now     time.Time
		revoked Revoked
		want    error
		msg     string
	}{
		{name: "good", cert: func() *Certificate { return good }},
		{name: "good at its first second", cert: func() *Certificate { return good }, now: good.NotBefore},
		{name: "good at its last second", cert: func() *Certificate { return good }, now: good.NotAfter},
		{name: "a proxy", cert: func() *Certificate { return tc.sign(t, proxyCert(t)) }},
		{name: "a list that revokes others", cert: func() *Certificate { return tc.sign(t, proxyCert(t)) }, revoked: revoked},
		{
			name: "malformed", want: ErrMalformed, msg: "name",
			cert: func() *Certificate { c := *good; c.Name = "Bad Name"; return &c },
		},
		{
			name: "revoked", cert: func() *Certificate { return good }, revoked: revoked,
			want: ErrRevoked, msg: `"t1" (fingerprint ` + goodFP.String(),
		},
		{
			name: "another CA", want: ErrUnknownIssuer, msg: "signed by CA " + other.ca.Fingerprint().String(),
			cert: func() *Certificate { return other.sign(t, targetCert(t)) },
		},
		{
			name: "another key claiming the CA", want: ErrBadSignature, msg: `"t1" is not signed by CA "home"`,
			cert: func() *Certificate { return signRaw(t, targetCert(t), tc.ca, other.key) },
		},
		{
			name: "forged signature", want: ErrBadSignature,
			cert: func() *Certificate {
				c := *good
				c.Signature = append([]byte(nil), good.Signature...)
				c.Signature[10] ^= 1
				return &c
			},
		},
		{
			name: "field changed after signing", want: ErrBadSignature,
			cert: func() *Certificate { c := *good; c.MaxWeight = 1000; return &c },
		},
		{
			name: "group added after signing", want: ErrBadSignature,
			cert: func() *Certificate {
				c := *good
				c.Groups = SortGroupRights(append(mustRights(t, "100.65.9.9:22/tcp"), good.Groups...))
				return &c
			},
		},
		{
			name: "not yet valid", cert: func() *Certificate { return good }, now: good.NotBefore.Add(-time.Second),
			want: ErrNotYetValid, msg: `"t1" is valid from 2029-12-31T23:00:00Z`,
		},
		{
			name: "expired", cert: func() *Certificate { return good }, now: good.NotAfter.Add(time.Second),
			want: ErrExpired, msg: `"t1" expired at 2030-01-31T00:00:00Z`,
		},
		{
			name: "CA expired", want: ErrCAExpired, msg: `CA "old"`,
			cert: func() *Certificate { return signRaw(t, targetCert(t), expiredCA, expiredCAKey) },
		},
		{
			name: "group outside the CA's", want: ErrConstraint, msg: `group 100.66.0.1:53/udp is outside CA "home"'s groups`,
			cert: func() *Certificate {
				c := targetCert(t)
				c.Groups = mustRights(t, "100.65.0.1:53/udp,100.66.0.1:53/udp")
				return signRaw(t, c, tc.ca, tc.key)
			},
		},
		{
			name: "pattern wider than the CA's", want: ErrConstraint, msg: `group 100.64.0.0/10:*/udp is outside`,
			cert: func() *Certificate {
				c := targetCert(t)
				c.Groups = mustRights(t, "100.64.0.0/10:*/udp")
				return signRaw(t, c, tc.ca, tc.key)
			},
		},
		{
			name: "IPv4 address outside the CA's networks", want: ErrConstraint, msg: `address 10.0.0.1 is outside CA "home"'s networks [100.64.0.0/16 fd64::/48]`,
			cert: func() *Certificate {
				c := targetCert(t)
				c.Addresses[0] = netip.MustParseAddr("10.0.0.1")
				return signRaw(t, c, tc.ca, tc.key)
			},
		},
		{
			name: "IPv6 address outside the CA's networks", want: ErrConstraint, msg: `address fd99::1 is outside`,
			cert: func() *Certificate {
				c := targetCert(t)
				c.Addresses[1] = netip.MustParseAddr("fd99::1")
				return signRaw(t, c, tc.ca, tc.key)
			},
		},
		{
			name: "outlives its CA", want: ErrConstraint, msg: `outside CA "home"'s`,
			cert: func() *Certificate {
				c := targetCert(t)
				c.NotAfter = tc.ca.NotAfter.Add(time.Second)
				return signRaw(t, c, tc.ca, tc.key)
			},
		},
		{
			name: "starts before its CA", want: ErrConstraint,
			cert: func() *Certificate {
				c := targetCert(t)
				c.NotBefore = tc.ca.NotBefore.Add(-time.Second)
				return signRaw(t, c, tc.ca, tc.key)
			},
		},
		// Nebula's order: the first failing check names the error.
		{
			name: "revoked beats everything", revoked: revoked, now: good.NotAfter.Add(time.Hour), want: ErrRevoked,
			cert: func() *Certificate { return good },
		},
		{
			name: "issuer before validity", now: t0.Add(-10 * 24 * time.Hour), want: ErrUnknownIssuer,
			cert: func() *Certificate { return other.sign(t, targetCert(t)) },
		},
		{
			name: "validity before signature", now: good.NotAfter.Add(time.Hour), want: ErrExpired,
			cert: func() *Certificate { return signRaw(t, targetCert(t), tc.ca, other.key) },
		},
		{
			name: "signature before constraints", want: ErrBadSignature,
			cert: func() *Certificate {
				c := targetCert(t)
				c.Addresses[0] = netip.MustParseAddr("10.0.0.1")
				return signRaw(t, c, tc.ca, other.key)
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			now := c.now
			if now.IsZero() {
				now = t0
			}
			ca, err := pool.Verify(c.cert(), now, c.revoked)
			if c.want == nil {
				if err != nil || ca != tc.ca {
					t.Fatalf("Verify = %v, %v; want the CA, nil", ca, err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify error %v, want %v", err, c.want)
			}
			if ca != nil {
				t.Fatal("Verify returned a CA with an error")
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("Verify error %q does not say %q", err, c.msg)
			}
		})
	}
}

func TestSignChecksConstraints(t *testing.T) {
	tc := newTestCA(t, "home", mustPrefixes(t, "100.64.0.0/16"), mustRights(t, "100.65.0.0/16:*/udp"))
	other := newTestCA(t, "other", nil, nil)
	for name, c := range map[string]*Certificate{
		"group": func() *Certificate {
			c := proxyCert(t)
			c.Role, c.Cluster, c.MaxWeight = RoleTarget, "", 1
			c.Groups = mustRights(t, "100.65.0.1:53/tcp")
			return c
		}(),
		"address": func() *Certificate {
			c := proxyCert(t)
			c.Addresses[0] = netip.MustParseAddr("100.63.0.1")
			return c
		}(),
		"validity": func() *Certificate {
			c := proxyCert(t)
			c.NotAfter = tc.ca.NotAfter.Add(time.Hour)
			return c
		}(),
	} {
		if err := tc.ca.Sign(c, tc.key); !errors.Is(err, ErrConstraint) {
			t.Errorf("%s: Sign error %v, want a constraint error", name, err)
		}
		if c.Signature != nil {
			t.Errorf("%s: signed anyway", name)
		}
	}
	if err := tc.ca.Sign(proxyCert(t), other.key); err == nil || !strings.Contains(err.Error(), "not the CA's") {
		t.Errorf("signing with another key: %v", err)
	}
}

func TestPoolRefusesForgedCA(t *testing.T) {
	tc := newTestCA(t, "home", nil, nil)
	ca := *tc.ca
	ca.Name = "evil"
	if _, err := NewPool(&ca); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("a CA with a changed name: %v", err)
	}
	ca = *tc.ca
	_, k2, _ := ed25519.GenerateKey(nil)
	ca.PublicKey = k2.Public().(ed25519.PublicKey)
	if _, err := NewPool(&ca); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("a CA with another key: %v", err)
	}
}

// BenchmarkVerify: the cost of one admission check of a target
// certificate (encode, SHA-256, Ed25519 verify, constraints).
func BenchmarkVerify(b *testing.B) {
	tc := newTestCA(b, "home", mustPrefixes(b, "100.64.0.0/16", "fd64::/48"),
		mustRights(b, "100.65.0.0/16:*/udp,100.65.0.0/16:*/tcp,[fd65::/64]:*/udp"))
	pool, _ := NewPool(tc.ca)
	c := tc.sign(b, targetCert(b))
	var fps []Fingerprint
	for i := range 1000 {
		fps = append(fps, Fingerprint{byte(i), byte(i >> 8), 1})
	}
	rl, err := NewRevocationList(tc.ca, tc.key, 1, t0, nil, fps)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pool.Verify(c, t0, rl); err != nil {
			b.Fatal(err)
		}
	}
}
