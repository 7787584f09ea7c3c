package cert

import (
	"bytes"
	"crypto/ed25519"
	"encoding/pem"
	"errors"
	"fmt"
)

// Armor types: the word after BEGIN in a file.
const (
	TypeCA             = "PIAS CA CERTIFICATE"
	TypeCAKey          = "PIAS CA PRIVATE KEY"
	TypeCertificate    = "PIAS CERTIFICATE"
	TypeRevocationList = "PIAS REVOCATION LIST"
)

// MaxArmoredSize bounds the text of any armored object: the base64 of the
// largest (a revocation list) and its lines.
const MaxArmoredSize = MaxRevocationListSize*4/3 + MaxRevocationListSize/48 + 256

// Armor wraps b in a PEM block of the given type: the form of every file.
func Armor(typ string, b []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})
}

// Unarmor reads one PEM block, strictly: nothing but blanks around it, no
// headers, and exactly the lines Armor writes. It returns the block's type
// and bytes.
func Unarmor(text []byte) (typ string, b []byte, err error) {
	if len(text) > MaxArmoredSize {
		return "", nil, fmt.Errorf("%d bytes, at most %d", len(text), MaxArmoredSize)
	}
	trimmed := bytes.TrimSpace(text)
	block, rest := pem.Decode(trimmed)
	switch {
	case block == nil:
		return "", nil, errors.New("not a PEM block (want -----BEGIN PIAS ...-----)")
	case len(rest) != 0:
		return "", nil, errors.New("text after the PEM block")
	case len(block.Headers) != 0:
		return "", nil, errors.New("PEM headers are not allowed")
	}
	if !bytes.Equal(bytes.TrimSpace(Armor(block.Type, block.Bytes)), trimmed) {
		return "", nil, fmt.Errorf("%q block is not in canonical form (64-column base64 lines)", block.Type)
	}
	return block.Type, block.Bytes, nil
}

func unarmorType(text []byte, want string) ([]byte, error) {
	typ, b, err := Unarmor(text)
	if err != nil {
		return nil, err
	}
	if typ != want {
		return nil, fmt.Errorf("a %q block, want %q", typ, want)
	}
	return b, nil
}

// MarshalPEM is c's file form.
func (c *Certificate) MarshalPEM() ([]byte, error) {
	b, err := c.Marshal()
	if err != nil {
		return nil, err
	}
	return Armor(TypeCertificate, b), nil
}

// ParsePEM parses a certificate file.
func ParsePEM(text []byte) (*Certificate, error) {
	b, err := unarmorType(text, TypeCertificate)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	return Parse(b)
}

// MarshalPEM is ca's file form.
func (ca *CA) MarshalPEM() ([]byte, error) {
	b, err := ca.Marshal()
	if err != nil {
		return nil, err
	}
	return Armor(TypeCA, b), nil
}

// ParseCAPEM parses a CA certificate file.
func ParseCAPEM(text []byte) (*CA, error) {
	b, err := unarmorType(text, TypeCA)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	return ParseCA(b)
}

// MarshalPEM is rl's file form.
func (rl *RevocationList) MarshalPEM() ([]byte, error) {
	b, err := rl.Marshal()
	if err != nil {
		return nil, err
	}
	return Armor(TypeRevocationList, b), nil
}

// ParseRevocationListPEM parses a revocation list file.
func ParseRevocationListPEM(text []byte) (*RevocationList, error) {
	b, err := unarmorType(text, TypeRevocationList)
	if err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	return ParseRevocationList(b)
}

// MarshalKeyPEM is the file form of a CA private key: its 32-byte seed.
func MarshalKeyPEM(key ed25519.PrivateKey) []byte {
	return Armor(TypeCAKey, key.Seed())
}

// ParseKeyPEM parses a CA private key file. Its errors never hold key
// bytes.
func ParseKeyPEM(text []byte) (ed25519.PrivateKey, error) {
	b, err := unarmorType(text, TypeCAKey)
	if err != nil {
		return nil, fmt.Errorf("CA private key: %w", err)
	}
	if len(b) != ed25519.SeedSize {
		return nil, fmt.Errorf("CA private key: %d bytes, want %d", len(b), ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(b), nil
}
