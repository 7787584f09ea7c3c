package admit

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/cert"
)

// The fuzz target opens arbitrary datagrams as a proxy (keys fuzzProxy)
// and as a node (keys fuzzNode) would, at fuzzNow: nothing panics, and
// whatever opens re-seals to exactly the datagram (one encoding per
// message, and a MAC that checks only for the holder of the node's key).
// Seeds: testdata/fuzz/FuzzAdmit, written by
//
//	go test ./admit -run TestAdmitCorpus -update-admit-corpus

var updateCorpus = flag.Bool("update-admit-corpus", false, "rewrite testdata/fuzz/FuzzAdmit")

var fuzzNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// fixture is a CA, a proxy and a node, all deterministic.
type fixture struct {
	proxy, node       *Keys
	proxyRaw, nodeRaw []byte // their certificates
	proxyCert         *cert.Certificate
}

func testKeys(t testing.TB, seed byte) *Keys {
	t.Helper()
	var priv [32]byte
	for i := range priv {
		priv[i] = seed + byte(i)
	}
	k, err := NewKeys(priv)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type zeroReader struct{ b byte }

func (z zeroReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = z.b
	}
	return len(p), nil
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ca, key, err := cert.NewCA("fuzz", fuzzNow.Add(-24*time.Hour), fuzzNow.Add(365*24*time.Hour), nil, nil, zeroReader{7})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{proxy: testKeys(t, 1), node: testKeys(t, 100)}
	sign := func(c *cert.Certificate) []byte {
		c.NotBefore, c.NotAfter = fuzzNow.Add(-time.Hour), fuzzNow.Add(time.Hour)
		if err := ca.Sign(c, key); err != nil {
			t.Fatal(err)
		}
		b, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	f.proxyCert = &cert.Certificate{Name: "p1", Role: cert.RoleProxy, PublicKey: f.proxy.Public,
		Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")}, Cluster: "c1"}
	f.proxyRaw = sign(f.proxyCert)
	right, err := cert.ParseGroupRight("100.65.0.0/24:*/udp")
	if err != nil {
		t.Fatal(err)
	}
	f.nodeRaw = sign(&cert.Certificate{Name: "t1", Role: cert.RoleTarget, PublicKey: f.node.Public,
		Addresses: []netip.Addr{netip.MustParseAddr("100.64.1.1")}, Groups: []cert.GroupRight{right}, MaxWeight: 1})
	return f
}

// seeds are valid messages of each kind, and a few near misses.
func (f *fixture) seeds(t testing.TB) map[string][]byte {
	t.Helper()
	hello := func(extra []byte) []byte {
		b, err := AppendHello(f.node, fuzzNow, 42, f.proxy.Public, f.nodeRaw, extra)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	h0 := hello(nil)
	h1 := hello(bytes.Repeat([]byte{0xab}, 200))
	m, err := Open(h0, fuzzNow)
	if err != nil {
		t.Fatal(err)
	}
	h, err := OpenHello(f.proxy, h0, m)
	if err != nil {
		t.Fatal(err)
	}
	mesh := append([]byte(nil), h0...)
	mesh[len(Magic)] = 2 // a mesh-key hello's version
	return map[string][]byte{
		"request":       AppendRequest(fuzzNow, 41),
		"offer":         AppendOffer(fuzzNow, 41, f.proxyRaw, RequestLen),
		"hello":         h0,
		"hello-extra":   h1,
		"welcome-ok":    AppendWelcome(h, fuzzNow, Welcome{Nonce: 42, OK: true}),
		"welcome-no":    AppendWelcome(h, fuzzNow, Welcome{Nonce: 42, Reason: "certificate has expired: \"t1\" expired at …"}),
		"hello-trunc":   h0[:len(h0)-1],
		"request-short": AppendRequest(fuzzNow, 41)[:RequestLen-1],
		"mesh-version":  mesh,
	}
}

// TestAdmitCorpus checks (or with -update-admit-corpus writes) the seed
// corpus: one file per seed, each a valid message but the near misses.
func TestAdmitCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzAdmit")
	seeds := newFixture(t).seeds(t)
	for name, b := range seeds {
		path := filepath.Join(dir, name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s is not current (%v): run with -update-admit-corpus", path, err)
		}
	}
}

func FuzzAdmit(f *testing.F) {
	fx := newFixture(f)
	for _, b := range fx.seeds(f) {
		f.Add(b)
	}
	proxyNodeKey, err := fx.proxy.macKey(fx.node.Public, false)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		m, err := Open(pkt, fuzzNow)
		if err != nil {
			return
		}
		if m.Size != len(pkt) || !bytes.Equal(m.Body, pkt[HeaderLen:]) || len(pkt) > MaxLen {
			t.Fatalf("Open: size %d body %d of %d bytes", m.Size, len(m.Body), len(pkt))
		}
		// Every parser takes every kind without panicking.
		nonce, rerr := ParseRequest(m)
		o, oerr := ParseOffer(m)
		h, herr := OpenHello(fx.proxy, pkt, m)
		w, werr := OpenWelcome(fx.node, fx.proxy.Public, pkt, m)
		if _, err := OpenHello(fx.node, pkt, m); err == nil {
			t.Fatal("a hello opened by a proxy it does not name")
		}
		ok := 0
		for _, err := range []error{rerr, oerr, herr, werr} {
			if err == nil {
				ok++
			}
		}
		if ok > 1 {
			t.Fatalf("a datagram of kind %d opens as %d kinds", m.Kind, ok)
		}
		switch {
		case rerr == nil:
			if len(pkt) < RequestLen {
				t.Fatalf("a request of %d bytes taken", len(pkt))
			}
			if binary.BigEndian.Uint64(pkt[HeaderLen:]) != nonce {
				t.Fatal("request nonce")
			}
			// The answer pays for itself.
			if b := AppendOffer(fuzzNow, nonce, fx.proxyRaw, m.Size); b == nil || len(b) > len(pkt) {
				t.Fatalf("offer of %d bytes to a request of %d", len(b), len(pkt))
			}
			if bytes.Count(pkt[HeaderLen+8:], []byte{0}) == len(pkt)-HeaderLen-8 && len(pkt) == RequestLen &&
				!bytes.Equal(AppendRequest(m.At, nonce), pkt) {
				t.Fatal("a zero-padded request re-encodes differently")
			}
		case oerr == nil:
			raw, err := o.Cert.Marshal()
			if err != nil {
				t.Fatalf("offer's certificate does not encode: %v", err)
			}
			if len(raw) <= MaxOfferCert {
				if b := AppendOffer(m.At, o.Nonce, raw, MaxLen); !bytes.Equal(b, pkt) {
					t.Fatalf("offer %x re-encodes to %x", pkt, b)
				}
			}
		case herr == nil:
			// A MAC that checks: only the node's key could have made it.
			if h.Cert.PublicKey != fx.node.Public {
				t.Fatalf("a hello MACed for key %x… opened", h.Cert.PublicKey[:4])
			}
			b, err := AppendHello(fx.node, m.At, h.Nonce, h.To, h.Raw, h.Extra)
			if err != nil || !bytes.Equal(b, pkt) {
				t.Fatalf("hello %x re-seals to %x (%v)", pkt, b, err)
			}
			for _, reason := range []string{"", strings.Repeat("é", 200)} {
				wb := AppendWelcome(h, fuzzNow, Welcome{Nonce: h.Nonce, OK: reason == "", Reason: reason})
				if len(wb) > len(pkt) {
					t.Fatalf("welcome of %d bytes to a hello of %d", len(wb), len(pkt))
				}
				wm, err := Open(wb, fuzzNow)
				if err != nil {
					t.Fatal(err)
				}
				if got, err := OpenWelcome(fx.node, fx.proxy.Public, wb, wm); err != nil || got.Nonce != h.Nonce || got.OK != (reason == "") || !strings.HasPrefix(reason, got.Reason) {
					t.Fatalf("the welcome opens as %+v, %v", got, err)
				}
			}
		case werr == nil:
			b := AppendWelcome(&Hello{key: proxyNodeKey, size: MaxLen}, m.At, w)
			if !bytes.Equal(b, pkt) {
				t.Fatalf("welcome %x re-seals to %x", pkt, b)
			}
		}
	})
}

// TestWelcomeNoLongerThanHello: whatever the certificate, extra and
// reason, the welcome is no longer than the hello it answers, and opens.
func TestWelcomeNoLongerThanHello(t *testing.T) {
	fx := newFixture(t)
	rng := rand.New(rand.NewPCG(1, 2))
	reasons := []string{"", "x", strings.Repeat("r", MaxReason), strings.Repeat("r", 4000), strings.Repeat("€", 300)}
	for _, extra := range []int{0, 1, 100, MaxExtra} {
		b, err := AppendHello(fx.node, fuzzNow, rng.Uint64(), fx.proxy.Public, fx.nodeRaw, make([]byte, extra))
		if err != nil {
			t.Fatal(err)
		}
		m, err := Open(b, fuzzNow)
		if err != nil {
			t.Fatal(err)
		}
		h, err := OpenHello(fx.proxy, b, m)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reasons {
			for _, ok := range []bool{true, false} {
				w := AppendWelcome(h, fuzzNow, Welcome{Nonce: h.Nonce, OK: ok, Reason: r})
				if len(w) > len(b) {
					t.Errorf("extra %d, reason of %d bytes: welcome of %d bytes to a hello of %d", extra, len(r), len(w), len(b))
				}
				wm, err := Open(w, fuzzNow)
				if err != nil {
					t.Fatal(err)
				}
				got, err := OpenWelcome(fx.node, fx.proxy.Public, w, wm)
				if err != nil || got.OK != ok || (!ok && (got.Reason == "" || !strings.HasPrefix(r+"refused", got.Reason))) {
					t.Errorf("extra %d, reason of %d bytes: welcome opens as %+v, %v", extra, len(r), got, err)
				}
			}
		}
	}
	// The smallest hello there can be (a hand-made, tiny certificate and
	// no extra) still pays for a refusal.
	small := &Hello{key: []byte("k"), size: HeaderLen + 8 + 32 + 2 + 2 + macLen}
	if w := AppendWelcome(small, fuzzNow, Welcome{Reason: strings.Repeat("r", 300)}); len(w) > small.size {
		t.Errorf("welcome of %d bytes to a hello of %d", len(w), small.size)
	}
}

// TestOfferNoLongerThanRequest: an offer is never longer than the request
// it answers: AppendOffer returns nil instead.
func TestOfferNoLongerThanRequest(t *testing.T) {
	for _, certLen := range []int{0, 1, 300, MaxOfferCert - 1, MaxOfferCert, MaxOfferCert + 1, cert.MaxSize} {
		for _, reqLen := range []int{0, HeaderLen, RequestLen - 1, RequestLen, RequestLen + 1, MaxLen} {
			b := AppendOffer(fuzzNow, 1, make([]byte, certLen), reqLen)
			fits := HeaderLen+8+2+certLen <= reqLen && certLen <= MaxOfferCert
			switch {
			case b == nil && fits:
				t.Errorf("certificate %d, request %d: no offer, though it fits", certLen, reqLen)
			case b != nil && !fits, len(b) > reqLen:
				t.Errorf("certificate %d, request %d: offer of %d bytes", certLen, reqLen, len(b))
			}
		}
	}
	// A real proxy certificate fits in the smallest request taken.
	fx := newFixture(t)
	if AppendOffer(fuzzNow, 1, fx.proxyRaw, RequestLen) == nil {
		t.Errorf("a %d-byte proxy certificate does not fit in a request", len(fx.proxyRaw))
	}
}
