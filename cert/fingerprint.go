package cert

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Fingerprint is the SHA-256 of an object's canonical encoding, signature
// included. It names a certificate in revocation lists and a CA in the
// certificates it signs.
type Fingerprint [32]byte

func fingerprint(b []byte) Fingerprint { return sha256.Sum256(b) }

// String is the fingerprint in lower-case hex (64 characters).
func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// IsZero reports whether f is the zero fingerprint.
func (f Fingerprint) IsZero() bool { return f == Fingerprint{} }

// ParseFingerprint reads the 64 hex digits String writes.
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	if len(s) != 2*len(f) {
		return f, fmt.Errorf("fingerprint %q: want %d hex digits", s, 2*len(f))
	}
	if _, err := hex.Decode(f[:], []byte(s)); err != nil {
		return f, fmt.Errorf("fingerprint %q: not hex", s)
	}
	return f, nil
}

func compareFingerprint(a, b Fingerprint) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// MarshalText writes String's form.
func (f Fingerprint) MarshalText() ([]byte, error) { return []byte(f.String()), nil }
