package cert

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"
)

// CA is a CA certificate: a self-signed statement of the CA's name, its
// Ed25519 public key, its validity, and the constraints on what it signs.
type CA struct {
	Name      string
	PublicKey ed25519.PublicKey
	// NotBefore and NotAfter bound the CA's own validity and that of every
	// certificate it signs. Whole seconds.
	NotBefore, NotAfter time.Time
	// Networks, if not empty, holds every address of the certificates the
	// CA signs. Sorted, masked, no duplicates.
	Networks []netip.Prefix
	// Groups, if not empty, holds every group right of the certificates
	// the CA signs: each right must lie within one of these. Sorted (see
	// SortGroupRights), no duplicates.
	Groups    []GroupRight
	Signature []byte
}

// NewCA makes a CA with a new key from rand (crypto/rand.Reader if nil),
// valid from notBefore to notAfter (rounded down to whole seconds), and
// self-signs it. networks and groups need not be sorted.
func NewCA(name string, notBefore, notAfter time.Time, networks []netip.Prefix, groups []GroupRight, rand io.Reader) (*CA, ed25519.PrivateKey, error) {
	pub, key, err := ed25519.GenerateKey(rand)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %v", err)
	}
	ca := &CA{
		Name:      name,
		PublicKey: pub,
		NotBefore: unixTime(notBefore),
		NotAfter:  unixTime(notAfter),
		Networks:  sortUnique(networks, comparePrefix),
		Groups:    SortGroupRights(groups),
	}
	tbs, err := ca.SignedBytes()
	if err != nil {
		return nil, nil, err
	}
	ca.Signature = ed25519.Sign(key, tbs)
	return ca, key, nil
}

func (ca *CA) validate() error {
	if err := checkCAName(ca.Name); err != nil {
		return err
	}
	if len(ca.PublicKey) != ed25519.PublicKeySize {
		return fmt.Errorf("public key is %d bytes, want %d", len(ca.PublicKey), ed25519.PublicKeySize)
	}
	if err := checkWindow(ca.NotBefore, ca.NotAfter); err != nil {
		return err
	}
	if len(ca.Networks) > MaxNetworks {
		return fmt.Errorf("%d networks, at most %d", len(ca.Networks), MaxNetworks)
	}
	for _, p := range ca.Networks {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("network: %v", err)
		}
	}
	if !strictlySorted(ca.Networks, comparePrefix) {
		return errors.New("networks are not sorted or have duplicates")
	}
	return checkRights(ca.Groups)
}

func checkRights(rs []GroupRight) error {
	if len(rs) > MaxGroups {
		return fmt.Errorf("%d groups, at most %d", len(rs), MaxGroups)
	}
	for _, r := range rs {
		if err := r.validate(); err != nil {
			return fmt.Errorf("group: %v", err)
		}
	}
	if !strictlySorted(rs, compareRight) {
		return errors.New("groups are not sorted or have duplicates")
	}
	return nil
}

// checkCAName accepts 1..MaxCANameLen printable ASCII characters, not
// starting or ending with a space.
func checkCAName(s string) error {
	ok := len(s) > 0 && len(s) <= MaxCANameLen && s[0] != ' ' && s[len(s)-1] != ' '
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] >= 0x20 && s[i] < 0x7f
	}
	if !ok {
		return fmt.Errorf("CA name %q: want 1..%d printable ASCII characters, no space at either end", s, MaxCANameLen)
	}
	return nil
}

// SignedBytes is the canonical encoding without the signature: what the
// signature covers.
func (ca *CA) SignedBytes() ([]byte, error) {
	if err := ca.validate(); err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	e := encoder{make([]byte, 0, 256)}
	e.u8(Version)
	e.u8(kindCA)
	e.str(ca.Name)
	e.raw(ca.PublicKey)
	e.time(ca.NotBefore)
	e.time(ca.NotAfter)
	e.u8(uint8(len(ca.Networks)))
	for _, p := range ca.Networks {
		e.prefix(p)
	}
	e.u8(uint8(len(ca.Groups)))
	for _, r := range ca.Groups {
		e.right(r)
	}
	return e.b, nil
}

// Marshal is the canonical encoding, signature included.
func (ca *CA) Marshal() ([]byte, error) {
	b, err := ca.SignedBytes()
	if err != nil {
		return nil, err
	}
	if len(ca.Signature) != sigLen {
		return nil, fmt.Errorf("CA certificate: signature is %d bytes, want %d", len(ca.Signature), sigLen)
	}
	b = append(b, ca.Signature...)
	if len(b) > MaxSize {
		return nil, fmt.Errorf("CA certificate: %d bytes, at most %d", len(b), MaxSize)
	}
	return b, nil
}

// Fingerprint is the SHA-256 of ca's encoding; zero if ca is not valid.
func (ca *CA) Fingerprint() Fingerprint {
	b, err := ca.Marshal()
	if err != nil {
		return Fingerprint{}
	}
	return fingerprint(b)
}

// CheckSignature reports whether ca is validly self-signed.
func (ca *CA) CheckSignature() error {
	tbs, err := ca.SignedBytes()
	if err != nil {
		return err
	}
	if len(ca.Signature) != sigLen || !ed25519.Verify(ca.PublicKey, tbs, ca.Signature) {
		return fmt.Errorf("%w: CA certificate %q is not validly self-signed", ErrBadSignature, ca.Name)
	}
	return nil
}

// ParseCA parses a CA certificate's canonical encoding. It checks the
// structure only; Pool.Add checks the self-signature.
func ParseCA(b []byte) (*CA, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("CA certificate: %d bytes, at most %d", len(b), MaxSize)
	}
	d := decoder{b: b}
	if err := d.header(kindCA); err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	ca := &CA{Name: d.str(), PublicKey: ed25519.PublicKey(d.take(ed25519.PublicKeySize))}
	ca.NotBefore = d.time("not before")
	ca.NotAfter = d.time("not after")
	n := int(d.u8())
	if d.err == nil && n > MaxNetworks {
		d.fail("%d networks, at most %d", n, MaxNetworks)
	}
	for i := 0; i < n && d.err == nil; i++ {
		ca.Networks = append(ca.Networks, d.prefix())
	}
	n = int(d.u8())
	if d.err == nil && n > MaxGroups {
		d.fail("%d groups, at most %d", n, MaxGroups)
	}
	for i := 0; i < n && d.err == nil; i++ {
		ca.Groups = append(ca.Groups, d.right())
	}
	ca.Signature = d.take(sigLen)
	d.end()
	if d.err != nil {
		return nil, fmt.Errorf("CA certificate: %w", d.err)
	}
	ca.PublicKey = slices.Clone(ca.PublicKey)
	ca.Signature = slices.Clone(ca.Signature)
	if err := ca.validate(); err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	return ca, nil
}

// header reads and checks the version and kind bytes.
func (d *decoder) header(kind uint8) error {
	v, k := d.u8(), d.u8()
	switch {
	case d.err != nil:
		return d.err
	case v != Version:
		return fmt.Errorf("version %d is not supported (want %d)", v, Version)
	case k != kind:
		return fmt.Errorf("this is a %s, not a %s", kindName(k), kindName(kind))
	}
	return nil
}

func kindName(k uint8) string {
	switch k {
	case kindCA:
		return "CA certificate"
	case kindCertificate:
		return "node certificate"
	case kindRevocationList:
		return "revocation list"
	}
	return fmt.Sprintf("object of unknown kind %d", k)
}

// allowsAddr reports whether the CA's networks hold a.
func (ca *CA) allowsAddr(a netip.Addr) bool {
	if len(ca.Networks) == 0 {
		return true
	}
	for _, p := range ca.Networks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// allowsRight reports whether one of the CA's group rights covers r.
func (ca *CA) allowsRight(r GroupRight) bool {
	if len(ca.Groups) == 0 {
		return true
	}
	for _, c := range ca.Groups {
		if c.covers(r) {
			return true
		}
	}
	return false
}

// Sign checks c against the CA's constraints, sets its issuer to the CA's
// fingerprint and signs it with key, the CA's private key. c's times are
// rounded down to whole seconds first.
func (ca *CA) Sign(c *Certificate, key ed25519.PrivateKey) error {
	if err := ca.CheckSignature(); err != nil {
		return err
	}
	if len(key) != ed25519.PrivateKeySize || !key.Public().(ed25519.PublicKey).Equal(ca.PublicKey) {
		return errors.New("the private key is not the CA's")
	}
	c.NotBefore, c.NotAfter = unixTime(c.NotBefore), unixTime(c.NotAfter)
	c.Issuer = ca.Fingerprint()
	if err := ca.constraints(c); err != nil {
		return err
	}
	tbs, err := c.SignedBytes()
	if err != nil {
		return err
	}
	c.Signature = ed25519.Sign(key, tbs)
	return nil
}
