package cert

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tc := newTestCA(t, "Home CA", mustPrefixes(t, "100.64.0.0/16", "fd64::/48"), mustRights(t, "100.65.0.0/16:*/udp,100.65.0.0/16:*/tcp,[fd65::/64]:*/udp"))
	caBytes, err := tc.ca.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := ParseCA(caBytes)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := ca2.Marshal(); !bytes.Equal(b, caBytes) || ca2.Fingerprint() != tc.ca.Fingerprint() {
		t.Fatal("CA does not re-encode to the same bytes")
	}
	if err := ca2.CheckSignature(); err != nil {
		t.Fatal(err)
	}

	for _, c := range []*Certificate{tc.sign(t, targetCert(t)), tc.sign(t, proxyCert(t))} {
		b, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		if b2, _ := c2.Marshal(); !bytes.Equal(b, b2) {
			t.Fatal("certificate does not re-encode to the same bytes")
		}
		text, err := c.MarshalPEM()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(text), "-----BEGIN PIAS CERTIFICATE-----\n") {
			t.Fatalf("armor: %s", text)
		}
		c3, err := ParsePEM(text)
		if err != nil {
			t.Fatal(err)
		}
		if c3.Fingerprint() != c.Fingerprint() || c.Fingerprint().IsZero() {
			t.Fatal("PEM round trip changed the fingerprint")
		}
		if c2.Name != c.Name || c2.Role != c.Role || c2.Cluster != c.Cluster || c2.MaxWeight != c.MaxWeight ||
			c2.SetsPolicy != c.SetsPolicy || !c2.NotAfter.Equal(c.NotAfter) || len(c2.Groups) != len(c.Groups) {
			t.Fatalf("parsed %+v, want %+v", c2, c)
		}
		if len(b) > 300 {
			t.Errorf("a %v certificate takes %d bytes; the encoding should be compact", c.Role, len(b))
		}
		t.Logf("%v certificate: %d bytes, %d armored", c.Role, len(b), len(text))
	}

	key, err := ParseKeyPEM(MarshalKeyPEM(tc.key))
	if err != nil || !key.Equal(tc.key) {
		t.Fatalf("key round trip: %v", err)
	}
	if _, err := ParseCAPEM(MarshalKeyPEM(tc.key)); err == nil || !strings.Contains(err.Error(), `"PIAS CA PRIVATE KEY" block, want "PIAS CA CERTIFICATE"`) {
		t.Errorf("a key read as a CA: %v", err)
	}
}

// TestParseStrict: every prefix of a valid encoding, every encoding with a
// byte more, and every single-bit change either fails to parse or parses
// to something that re-encodes to exactly the input.
func TestParseStrict(t *testing.T) {
	tc := newTestCA(t, "ca", nil, nil)
	c := tc.sign(t, targetCert(t))
	b, _ := c.Marshal()
	for n := range len(b) {
		if _, err := Parse(b[:n]); err == nil {
			t.Fatalf("a %d-byte prefix of %d parsed", n, len(b))
		}
	}
	if _, err := Parse(append(bytes.Clone(b), 0)); err == nil || !strings.Contains(err.Error(), "1 bytes after the end") {
		t.Fatalf("a trailing byte: %v", err)
	}
	accepted := 0
	for i := range b {
		for bit := range 8 {
			m := bytes.Clone(b)
			m[i] ^= 1 << bit
			c2, err := Parse(m)
			if err != nil {
				continue
			}
			accepted++
			if b2, err := c2.Marshal(); err != nil || !bytes.Equal(b2, m) {
				t.Fatalf("flip %d.%d: parsed but re-encodes differently (%v)", i, bit, err)
			}
		}
	}
	t.Logf("%d of %d single-bit changes still parse (and re-encode identically)", accepted, 8*len(b))

	if _, err := Parse(make([]byte, MaxSize+1)); err == nil || !strings.Contains(err.Error(), "at most 4096") {
		t.Fatalf("oversized: %v", err)
	}
	caBytes, _ := tc.ca.Marshal()
	if _, err := Parse(caBytes); err == nil || !strings.Contains(err.Error(), "this is a CA certificate, not a node certificate") {
		t.Fatalf("a CA as a certificate: %v", err)
	}
	b2 := bytes.Clone(b)
	b2[0] = 2
	if _, err := Parse(b2); err == nil || !strings.Contains(err.Error(), "version 2 is not supported") {
		t.Fatalf("version 2: %v", err)
	}
}

func TestParseRejectsNonCanonical(t *testing.T) {
	tc := newTestCA(t, "ca", nil, nil)
	for name, mutate := range map[string]func(c *Certificate){
		"unsorted groups": func(c *Certificate) { c.Groups[0], c.Groups[1] = c.Groups[1], c.Groups[0] },
		"duplicate group": func(c *Certificate) { c.Groups[1] = c.Groups[0] },
		"IPv6 first":      func(c *Certificate) { c.Addresses[0], c.Addresses[1] = c.Addresses[1], c.Addresses[0] },
		"two IPv4":        func(c *Certificate) { c.Addresses[1] = netip.MustParseAddr("100.64.1.2") },
		"no address":      func(c *Certificate) { c.Addresses = nil },
		"bad name":        func(c *Certificate) { c.Name = "-x" },
		"long name":       func(c *Certificate) { c.Name = "abcdefghijklmnop" },
		"cluster":         func(c *Certificate) { c.Cluster = "east" },
		"weight 0":        func(c *Certificate) { c.MaxWeight = 0 },
		"weight 1001":     func(c *Certificate) { c.MaxWeight = 1001 },
		"zero key":        func(c *Certificate) { c.PublicKey = [32]byte{} },
		"empty window":    func(c *Certificate) { c.NotAfter = c.NotBefore },
		"client rights":   func(c *Certificate) { c.Role = RoleClient },
		"multicast":       func(c *Certificate) { c.Addresses[0] = netip.MustParseAddr("224.0.0.1") },
		"role 0":          func(c *Certificate) { c.Role = 0 },
	} {
		c := tc.sign(t, targetCert(t))
		mutate(c)
		if _, err := c.Marshal(); err == nil {
			t.Errorf("%s: Marshal accepted it", name)
		}
		// Encode it anyway, as a forger would, and check Parse refuses.
		if _, err := Parse(rawEncode(c)); err == nil {
			t.Errorf("%s: Parse accepted it", name)
		}
	}
}

// rawEncode encodes c without validating it.
func rawEncode(c *Certificate) []byte {
	e := encoder{}
	c.encode(&e)
	e.raw(c.Signature)
	return e.b
}

func TestUnarmorStrict(t *testing.T) {
	tc := newTestCA(t, "ca", nil, nil)
	good, _ := tc.sign(t, proxyCert(t)).MarshalPEM()
	lines := strings.Split(strings.TrimSpace(string(good)), "\n")
	body := strings.Join(lines[1:len(lines)-1], "")
	for name, text := range map[string]string{
		"empty":      "",
		"random":     "hello world\n",
		"text after": string(good) + "x\n",
		"two blocks": string(good) + string(good),
		"header":     lines[0] + "\nProc-Type: 4,ENCRYPTED\n\n" + strings.Join(lines[1:], "\n") + "\n",
		"one line":   lines[0] + "\n" + body + "\n" + lines[len(lines)-1] + "\n",
		"wrong type": strings.ReplaceAll(string(good), "PIAS CERTIFICATE", "PIAS THING"),
		"truncated":  string(good[:len(good)/2]),
		"oversized":  strings.Repeat("A", MaxArmoredSize+1),
		"bad base64": strings.Replace(string(good), lines[1][:4], "!!!!", 1),
		"huge block": string(Armor(TypeCertificate, make([]byte, MaxSize+1))),
		"random der": string(Armor(TypeCertificate, []byte("random bytes, not a certificate"))),
	} {
		if _, err := ParsePEM([]byte(text)); err == nil {
			t.Errorf("%s: parsed", name)
		} else if strings.Contains(err.Error(), body) {
			t.Errorf("%s: the error holds the whole body", name)
		}
	}
	// Blanks around the block are fine.
	if _, err := ParsePEM([]byte("\n  " + string(good) + "\n\n")); err != nil {
		t.Error(err)
	}
}
