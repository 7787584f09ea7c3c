package cert

import (
	"bytes"
	"testing"
)

// The fuzz targets check that the parsers never panic, that whatever they
// accept re-encodes to exactly the input (one encoding per meaning), and
// that Verify and the PEM parsers take any input. Seed corpora live in
// testdata/fuzz/<target>; f.Add adds a fresh valid object too.

func FuzzParse(f *testing.F) {
	tc := newTestCA(f, "home", mustPrefixes(f, "100.64.0.0/16", "fd64::/48"), mustRights(f, "100.65.0.0/16:*/udp,100.65.0.0/16:*/tcp,[fd65::/64]:*/udp"))
	pool, _ := NewPool(tc.ca)
	for _, c := range []*Certificate{tc.sign(f, targetCert(f)), tc.sign(f, proxyCert(f))} {
		b, _ := c.Marshal()
		f.Add(b)
		text, _ := c.MarshalPEM()
		f.Add(text)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, err := ParsePEM(data); err == nil {
			if text, err := c.MarshalPEM(); err != nil || !bytes.Equal(bytes.TrimSpace(text), bytes.TrimSpace(data)) {
				t.Fatalf("accepted PEM re-encodes differently (%v)", err)
			}
		}
		c, err := Parse(data)
		if err != nil {
			return
		}
		b, err := c.Marshal()
		if err != nil {
			t.Fatalf("accepted but does not encode: %v", err)
		}
		if !bytes.Equal(b, data) {
			t.Fatalf("accepted %x, re-encodes to %x", data, b)
		}
		if c.Fingerprint().IsZero() {
			t.Fatal("zero fingerprint")
		}
		pool.Verify(c, t0, nil)
	})
}

func FuzzParseRevocationList(f *testing.F) {
	tc := newTestCA(f, "home", nil, nil)
	pool, _ := NewPool(tc.ca)
	rl, err := NewRevocationList(tc.ca, tc.key, 7, t0, nil, []Fingerprint{{1}, {2}, {3}})
	if err != nil {
		f.Fatal(err)
	}
	b, _ := rl.Marshal()
	f.Add(b)
	text, _ := rl.MarshalPEM()
	f.Add(text)
	f.Fuzz(func(t *testing.T, data []byte) {
		if l, err := ParseRevocationListPEM(data); err == nil {
			if text, err := l.MarshalPEM(); err != nil || !bytes.Equal(bytes.TrimSpace(text), bytes.TrimSpace(data)) {
				t.Fatalf("accepted PEM re-encodes differently (%v)", err)
			}
		}
		l, err := ParseRevocationList(data)
		if err != nil {
			return
		}
		b, err := l.Marshal()
		if err != nil {
			t.Fatalf("accepted but does not encode: %v", err)
		}
		if !bytes.Equal(b, data) {
			t.Fatalf("accepted %x, re-encodes to %x", data, b)
		}
		for _, f := range l.Revoked {
			if !l.IsRevoked(f) {
				t.Fatalf("%s is listed but not revoked", f)
			}
		}
		pool.Update(rl, l)
	})
}

func FuzzParseCA(f *testing.F) {
	tc := newTestCA(f, "home", mustPrefixes(f, "100.64.0.0/16", "fd64::/48"), mustRights(f, "100.65.0.0/16:*/udp"))
	b, _ := tc.ca.Marshal()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		ca, err := ParseCA(data)
		if err != nil {
			return
		}
		b, err := ca.Marshal()
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("accepted %x, re-encodes to %x (%v)", data, b, err)
		}
		ca.CheckSignature()
	})
}
