package cert

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"
)

// RevocationList is a CA's signed list of revoked certificates. Lists are
// numbered: one with a higher serial replaces the one held.
type RevocationList struct {
	Serial   uint64
	IssuedAt time.Time // whole seconds
	Issuer   Fingerprint
	// Revoked holds the fingerprints of the revoked certificates, sorted,
	// without duplicates, at most MaxRevoked.
	Revoked   []Fingerprint
	Signature []byte
}

// NewRevocationList makes a list of the given serial that revokes every
// fingerprint of held (if not nil) and of add, and signs it as ca with
// key. The serial must be higher than held's.
func NewRevocationList(ca *CA, key ed25519.PrivateKey, serial uint64, issuedAt time.Time, held *RevocationList, add []Fingerprint) (*RevocationList, error) {
	if len(key) != ed25519.PrivateKeySize || !key.Public().(ed25519.PublicKey).Equal(ca.PublicKey) {
		return nil, errors.New("the private key is not the CA's")
	}
	if held != nil && serial <= held.Serial {
		return nil, fmt.Errorf("serial %d is not above the held list's %d", serial, held.Serial)
	}
	var all []Fingerprint
	if held != nil {
		all = append(all, held.Revoked...)
	}
	all = sortUnique(append(all, add...), compareFingerprint)
	rl := &RevocationList{Serial: serial, IssuedAt: unixTime(issuedAt), Issuer: ca.Fingerprint(), Revoked: all}
	tbs, err := rl.SignedBytes()
	if err != nil {
		return nil, err
	}
	rl.Signature = ed25519.Sign(key, tbs)
	return rl, nil
}

func (rl *RevocationList) validate() error {
	if err := checkTime("issued at", rl.IssuedAt); err != nil {
		return err
	}
	if len(rl.Revoked) > MaxRevoked {
		return fmt.Errorf("%d fingerprints, at most %d", len(rl.Revoked), MaxRevoked)
	}
	if !strictlySorted(rl.Revoked, compareFingerprint) {
		return errors.New("fingerprints are not sorted or have duplicates")
	}
	return nil
}

// SignedBytes is the canonical encoding without the signature.
func (rl *RevocationList) SignedBytes() ([]byte, error) {
	if err := rl.validate(); err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	e := encoder{make([]byte, 0, 64+32*len(rl.Revoked)+sigLen)}
	e.u8(Version)
	e.u8(kindRevocationList)
	e.u64(rl.Serial)
	e.time(rl.IssuedAt)
	e.raw(rl.Issuer[:])
	e.u16(uint16(len(rl.Revoked)))
	for _, f := range rl.Revoked {
		e.raw(f[:])
	}
	return e.b, nil
}

// Marshal is the canonical encoding, signature included.
func (rl *RevocationList) Marshal() ([]byte, error) {
	b, err := rl.SignedBytes()
	if err != nil {
		return nil, err
	}
	if len(rl.Signature) != sigLen {
		return nil, fmt.Errorf("revocation list: signature is %d bytes, want %d", len(rl.Signature), sigLen)
	}
	return append(b, rl.Signature...), nil
}

// ParseRevocationList parses a list's canonical encoding. It checks the
// structure only; Pool.VerifyRevocationList checks the signature.
func ParseRevocationList(b []byte) (*RevocationList, error) {
	if len(b) > MaxRevocationListSize {
		return nil, fmt.Errorf("revocation list: %d bytes, at most %d", len(b), MaxRevocationListSize)
	}
	d := decoder{b: b}
	if err := d.header(kindRevocationList); err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	rl := &RevocationList{Serial: d.u64(), IssuedAt: d.time("issued at")}
	copy(rl.Issuer[:], d.take(32))
	n := int(d.u16())
	if d.err == nil && n > MaxRevoked {
		d.fail("%d fingerprints, at most %d", n, MaxRevoked)
	}
	if d.err == nil && len(d.b) < 32*n {
		d.err = errShort
	}
	for i := 0; i < n && d.err == nil; i++ {
		rl.Revoked = append(rl.Revoked, Fingerprint(d.take(32)))
	}
	rl.Signature = slices.Clone(d.take(sigLen))
	d.end()
	if d.err != nil {
		return nil, fmt.Errorf("revocation list: %w", d.err)
	}
	if err := rl.validate(); err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	return rl, nil
}

// IsRevoked reports whether the list revokes the certificate of
// fingerprint f. A nil list revokes nothing.
func (rl *RevocationList) IsRevoked(f Fingerprint) bool {
	if rl == nil {
		return false
	}
	_, found := slices.BinarySearchFunc(rl.Revoked, f, compareFingerprint)
	return found
}

// Newer reports whether rl replaces than: whether its serial is higher.
// Every list is newer than nil.
func (rl *RevocationList) Newer(than *RevocationList) bool {
	return than == nil || rl.Serial > than.Serial
}

// ErrOlderList is the error of a revocation list that would replace the
// one held but does not have a higher serial.
var ErrOlderList = errors.New("revocation list is not newer than the one held")

// VerifyRevocationList checks that rl is signed by a CA of the pool, and
// returns that CA.
func (p *Pool) VerifyRevocationList(rl *RevocationList) (*CA, error) {
	b, err := rl.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	ca := p.cas[rl.Issuer]
	if ca == nil {
		return nil, fmt.Errorf("%w: revocation list %d is signed by CA %s", ErrUnknownIssuer, rl.Serial, rl.Issuer)
	}
	if !ed25519.Verify(ca.PublicKey, b[:len(b)-sigLen], rl.Signature) {
		return nil, fmt.Errorf("%w: revocation list %d is not signed by CA %q", ErrBadSignature, rl.Serial, ca.Name)
	}
	return ca, nil
}

// Update decides whether offered replaces held (nil if none): it must be
// signed by a CA of the pool, by held's CA if there is one, and be newer.
// It returns the list to hold from now on.
func (p *Pool) Update(held, offered *RevocationList) (*RevocationList, error) {
	if _, err := p.VerifyRevocationList(offered); err != nil {
		return held, err
	}
	if held != nil && offered.Issuer != held.Issuer {
		return held, fmt.Errorf("%w: revocation list %d is signed by CA %s, the held one by %s", ErrUnknownIssuer, offered.Serial, offered.Issuer, held.Issuer)
	}
	if !offered.Newer(held) {
		return held, fmt.Errorf("%w: serial %d, held %d", ErrOlderList, offered.Serial, held.Serial)
	}
	return offered, nil
}
