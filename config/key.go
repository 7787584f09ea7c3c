package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// Key is a WireGuard Curve25519 key, private or public. Its text form is
// standard base64 with padding (44 characters), exactly what `wg genkey`,
// `wg pubkey` and wg-quick files use.
type Key [32]byte

// GeneratePrivateKey returns a new random private key, clamped exactly like
// `wg genkey` does.
func GeneratePrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("generate private key: %v", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// ParseKey parses a base64 key. The error never contains the key itself, as
// it may be a private key.
func ParseKey(s string) (Key, error) {
	var k Key
	if s == "" {
		return k, errors.New("key is empty")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return k, errors.New("key is not valid base64")
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("key is %d bytes, want %d", len(b), len(k))
	}
	copy(k[:], b)
	return k, nil
}

// String is the base64 form of k.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// PublicKey is the public key of the private key k.
func (k Key) PublicKey() Key {
	var pub Key
	out, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// Impossible with the base point: a clamped scalar times the
		// generator is never the all-zero point.
		return pub
	}
	copy(pub[:], out)
	return pub
}

// IsZero reports whether k is all zeroes (unset).
func (k Key) IsZero() bool { return k == Key{} }

// MarshalText encodes k as base64 (for JSON and TOML encoders).
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses base64 into k.
func (k *Key) UnmarshalText(b []byte) error {
	v, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}
