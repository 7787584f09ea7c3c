package config

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/crypto/curve25519"
)

func hexKey(t *testing.T, s string) Key {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad test vector %q", s)
	}
	var k Key
	copy(k[:], b)
	return k
}

// RFC 7748 §6.1.
func TestKeyRFC7748(t *testing.T) {
	alice := hexKey(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	alicePub := hexKey(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
	bob := hexKey(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
	bobPub := hexKey(t, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
	shared := hexKey(t, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

	if got := alice.PublicKey(); got != alicePub {
		t.Errorf("alice pub = %x", got)
	}
	if got := bob.PublicKey(); got != bobPub {
		t.Errorf("bob pub = %x", got)
	}
	s1, _ := curve25519.X25519(alice[:], bobPub[:])
	s2, _ := curve25519.X25519(bob[:], alicePub[:])
	if !bytes.Equal(s1, shared[:]) || !bytes.Equal(s2, shared[:]) {
		t.Errorf("shared secrets %x %x", s1, s2)
	}
	// Round trip through the text form.
	for _, k := range []Key{alice, alicePub, bob, bobPub} {
		p, err := ParseKey(k.String())
		if err != nil || p != k {
			t.Errorf("ParseKey(%s) = %v, %v", k, p, err)
		}
		if len(k.String()) != 44 {
			t.Errorf("len(%s) = %d", k, len(k.String()))
		}
	}
}

func TestGeneratePrivateKey(t *testing.T) {
	seen := map[Key]bool{}
	for range 100 {
		k, err := GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		if k[0]&7 != 0 || k[31]&128 != 0 || k[31]&64 == 0 {
			t.Fatalf("key %x is not clamped", k)
		}
		if seen[k] || k.IsZero() || k.PublicKey().IsZero() {
			t.Fatalf("bad key %x", k)
		}
		seen[k] = true
	}
}

func TestParseKeyErrors(t *testing.T) {
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))
	long := base64.StdEncoding.EncodeToString(make([]byte, 33))
	for _, s := range []string{"", "not base64!", short, long, "AAAA", strings.Repeat("A", 43)} {
		_, err := ParseKey(s)
		if err == nil {
			t.Errorf("ParseKey(%q) succeeded", s)
			continue
		}
		if strings.Contains(err.Error(), "\n") || (s != "" && strings.Contains(err.Error(), s)) {
			t.Errorf("ParseKey(%q): error %q is multi-line or echoes the key", s, err)
		}
	}
	var k Key
	if !k.IsZero() {
		t.Error("zero key not IsZero")
	}
	if err := k.UnmarshalText([]byte("x")); err == nil {
		t.Error("UnmarshalText accepted garbage")
	}
	want, _ := GeneratePrivateKey()
	b, _ := want.MarshalText()
	if err := k.UnmarshalText(b); err != nil || k != want {
		t.Errorf("text round trip: %v", err)
	}
}

func wgTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("wg")
	if err != nil {
		t.Skip("wg (wireguard-tools) is not installed")
	}
	return p
}

func wgRun(t *testing.T, wg, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(wg, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("wg %v: %v: %s", args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// Our keys and wg's are interchangeable.
func TestKeyWireGuardTools(t *testing.T) {
	wg := wgTool(t)
	for range 20 {
		// wg genkey → our public key == wg pubkey.
		priv := wgRun(t, wg, "", "genkey")
		k, err := ParseKey(priv)
		if err != nil {
			t.Fatalf("ParseKey(wg genkey): %v", err)
		}
		if k.String() != priv {
			t.Fatalf("re-encoding changed the key")
		}
		if got, want := k.PublicKey().String(), wgRun(t, wg, priv+"\n", "pubkey"); got != want {
			t.Fatalf("pubkey: ours %s, wg %s", got, want)
		}

		// our key → wg pubkey accepts it and agrees.
		ours, err := GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := wgRun(t, wg, ours.String()+"\n", "pubkey"), ours.PublicKey().String(); got != want {
			t.Fatalf("pubkey of our key: wg %s, ours %s", got, want)
		}
	}
}
