package cert

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"
)

// Verification failures. Verify's errors wrap exactly one of these, with the
// details (names quoted: they may come from the network).
var (
	ErrMalformed     = errors.New("malformed certificate")
	ErrRevoked       = errors.New("certificate is revoked")
	ErrUnknownIssuer = errors.New("certificate is signed by an unknown CA")
	ErrNotYetValid   = errors.New("certificate is not valid yet")
	ErrExpired       = errors.New("certificate has expired")
	ErrCAExpired     = errors.New("CA certificate is not valid now")
	ErrBadSignature  = errors.New("signature is not valid")
	ErrConstraint    = errors.New("certificate exceeds its CA's constraints")
)

// Revoked tells whether a certificate is revoked. A *RevocationList is
// one; so is nil, which revokes nothing.
type Revoked interface {
	IsRevoked(Fingerprint) bool
}

// Pool is the set of CAs a node trusts.
type Pool struct {
	cas map[Fingerprint]*CA
}

// NewPool makes a pool of the given CAs; see Add.
func NewPool(cas ...*CA) (*Pool, error) {
	p := &Pool{cas: map[Fingerprint]*CA{}}
	for _, ca := range cas {
		if err := p.Add(ca); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Add trusts ca, which must be validly self-signed.
func (p *Pool) Add(ca *CA) error {
	if err := ca.CheckSignature(); err != nil {
		return err
	}
	p.cas[ca.Fingerprint()] = ca
	return nil
}

// CA returns the CA of the given fingerprint, or nil.
func (p *Pool) CA(f Fingerprint) *CA { return p.cas[f] }

// Verify decides whether c is good at time now: the one check that every
// admission uses. In order (Nebula's): c is not revoked; its issuer is in
// the pool; now is within c's validity and its CA's; the CA's signature is
// valid; c is within the CA's constraints (validity, addresses, groups).
// It returns c's CA, or an error wrapping one of the Err* values.
func (p *Pool) Verify(c *Certificate, now time.Time, revoked Revoked) (*CA, error) {
	b, err := c.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	fp := fingerprint(b)
	if revoked != nil && revoked.IsRevoked(fp) {
		return nil, fmt.Errorf("%w: %q (fingerprint %s)", ErrRevoked, c.Name, fp)
	}
	ca := p.cas[c.Issuer]
	if ca == nil {
		return nil, fmt.Errorf("%w: %q is signed by CA %s", ErrUnknownIssuer, c.Name, c.Issuer)
	}
	switch {
	case now.Before(c.NotBefore):
		return nil, fmt.Errorf("%w: %q is valid from %s", ErrNotYetValid, c.Name, fmtTime(c.NotBefore))
	case now.After(c.NotAfter):
		return nil, fmt.Errorf("%w: %q expired at %s", ErrExpired, c.Name, fmtTime(c.NotAfter))
	case now.Before(ca.NotBefore) || now.After(ca.NotAfter):
		return nil, fmt.Errorf("%w: CA %q is valid from %s to %s", ErrCAExpired, ca.Name, fmtTime(ca.NotBefore), fmtTime(ca.NotAfter))
	}
	if !ed25519.Verify(ca.PublicKey, b[:len(b)-sigLen], c.Signature) {
		return nil, fmt.Errorf("%w: %q is not signed by CA %q", ErrBadSignature, c.Name, ca.Name)
	}
	if err := ca.constraints(c); err != nil {
		return nil, err
	}
	return ca, nil
}

// constraints checks that c asks for nothing the CA may not grant.
func (ca *CA) constraints(c *Certificate) error {
	if c.NotBefore.Before(ca.NotBefore) || c.NotAfter.After(ca.NotAfter) {
		return fmt.Errorf("%w: %q is valid from %s to %s, outside CA %q's %s to %s", ErrConstraint, c.Name,
			fmtTime(c.NotBefore), fmtTime(c.NotAfter), ca.Name, fmtTime(ca.NotBefore), fmtTime(ca.NotAfter))
	}
	for _, a := range c.Addresses {
		if !ca.allowsAddr(a) {
			return fmt.Errorf("%w: %q: address %s is outside CA %q's networks %v", ErrConstraint, c.Name, a, ca.Name, ca.Networks)
		}
	}
	for _, r := range c.Groups {
		if !ca.allowsRight(r) {
			return fmt.Errorf("%w: %q: group %s is outside CA %q's groups %v", ErrConstraint, c.Name, r, ca.Name, ca.Groups)
		}
	}
	return nil
}
