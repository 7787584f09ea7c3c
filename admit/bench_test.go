package admit

import (
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/pias-net/pias/cert"
)

// benchHello is a proxy's keys and a node's hello to it, signed by a CA.
func benchHello(b *testing.B) (*Keys, []byte, *cert.Pool) {
	ca, caKey, err := cert.NewCA("bench", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	pool, err := cert.NewPool(ca)
	if err != nil {
		b.Fatal(err)
	}
	var ps, ns [32]byte
	rand.Read(ps[:])
	rand.Read(ns[:])
	proxy, _ := NewKeys(ps)
	node, _ := NewKeys(ns)
	c := &cert.Certificate{Name: "t1", Role: cert.RoleTarget, PublicKey: node.Public, Addresses: mustAddrs("100.64.1.1"),
		MaxWeight: 1, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	if err := ca.Sign(c, caKey); err != nil {
		b.Fatal(err)
	}
	raw, _ := c.Marshal()
	pkt, err := AppendHello(node, time.Now(), 1, proxy.Public, raw, nil)
	if err != nil {
		b.Fatal(err)
	}
	return proxy, pkt, pool
}

// BenchmarkAdmitHello is what a proxy spends on the hello of a node it
// has not met lately: parse, X25519, MAC, and the certificate's Ed25519.
// go test -run XXX -bench Hello ./admit/
func BenchmarkAdmitHello(b *testing.B) {
	proxy, pkt, pool := benchHello(b)
	now := time.Now()
	for b.Loop() {
		proxy.cache = nil
		m, err := Open(pkt, now)
		if err != nil {
			b.Fatal(err)
		}
		h, err := OpenHello(proxy, pkt, m)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Verify(h.Cert, now, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenewHello is a renewal: the MAC key is at hand and the
// certificate was verified at admission.
func BenchmarkRenewHello(b *testing.B) {
	proxy, pkt, _ := benchHello(b)
	now := time.Now()
	for b.Loop() {
		m, err := Open(pkt, now)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := OpenHello(proxy, pkt, m); err != nil {
			b.Fatal(err)
		}
	}
}

func mustAddrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}
