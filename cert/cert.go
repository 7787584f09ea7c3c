package cert

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"time"

	"github.com/pias-net/pias/router"
)

// Role is what a node may do in the overlay.
type Role uint8

// Roles. The zero Role is not valid.
const (
	RoleProxy  Role = 1
	RoleTarget Role = 2
	RoleClient Role = 3
)

// String is the role's name, as ParseRole reads it.
func (r Role) String() string {
	switch r {
	case RoleProxy:
		return "proxy"
	case RoleTarget:
		return "target"
	case RoleClient:
		return "client"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// ParseRole reads "proxy", "target" or "client".
func ParseRole(s string) (Role, error) {
	for _, r := range []Role{RoleProxy, RoleTarget, RoleClient} {
		if s == r.String() {
			return r, nil
		}
	}
	return 0, fmt.Errorf("role %q is not proxy, target or client", s)
}

// Certificate is a node certificate.
type Certificate struct {
	// Name is the node's name: 1..MaxNameLen characters of a-z, 0-9 and
	// '-', not starting with '-' (the rule of config's name).
	Name string
	Role Role
	// PublicKey is the node's WireGuard (Curve25519) public key.
	PublicKey [32]byte
	// Addresses are the node's overlay addresses, IPv4 first. A proxy has
	// exactly one IPv4 and at most one IPv6 address; a target or client
	// one or two, at most one per family.
	Addresses []netip.Addr
	// Cluster is a proxy's cluster; empty for other roles.
	Cluster string
	// Groups, SetsPolicy and MaxWeight are a target's rights: the groups
	// it may join, whether it may set their policy, and the most weight it
	// may ask for (1..router.MaxWeight). Other roles have none of them
	// (MaxWeight 0).
	Groups     []GroupRight
	SetsPolicy bool
	MaxWeight  int
	// NotBefore and NotAfter bound the certificate's validity, whole
	// seconds.
	NotBefore, NotAfter time.Time
	// Issuer is the fingerprint of the CA certificate that signed this.
	Issuer    Fingerprint
	Signature []byte
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

func checkName(what, s string, max int) error {
	if len(s) > max || !nameRE.MatchString(s) {
		return fmt.Errorf("%s %q: want 1..%d characters of a-z, 0-9 and '-', not starting with '-'", what, s, max)
	}
	return nil
}

// validate checks everything but the signature.
func (c *Certificate) validate() error {
	if err := checkName("name", c.Name, MaxNameLen); err != nil {
		return err
	}
	if c.Role < RoleProxy || c.Role > RoleClient {
		return fmt.Errorf("%v is not a role", c.Role)
	}
	if c.PublicKey == ([32]byte{}) {
		return errors.New("public key is all zeroes")
	}
	if err := c.checkAddresses(); err != nil {
		return err
	}
	if c.Role == RoleProxy {
		if err := checkName("cluster", c.Cluster, MaxClusterLen); err != nil {
			return fmt.Errorf("a proxy needs a cluster: %v", err)
		}
	} else if c.Cluster != "" {
		return fmt.Errorf("a %v has no cluster, got %q", c.Role, c.Cluster)
	}
	if c.Role == RoleTarget {
		if c.MaxWeight < 1 || c.MaxWeight > router.MaxWeight {
			return fmt.Errorf("max weight %d is not 1..%d", c.MaxWeight, router.MaxWeight)
		}
	} else if len(c.Groups) > 0 || c.SetsPolicy || c.MaxWeight != 0 {
		return fmt.Errorf("a %v has no groups, policy or weight rights; only a target does", c.Role)
	}
	if err := checkRights(c.Groups); err != nil {
		return err
	}
	return checkWindow(c.NotBefore, c.NotAfter)
}

func (c *Certificate) checkAddresses() error {
	n4, n6 := 0, 0
	for _, a := range c.Addresses {
		if err := checkAddr(a); err != nil {
			return err
		}
		if a.Is4() {
			n4++
			if n6 > 0 {
				return errors.New("addresses: IPv4 comes first")
			}
		} else {
			n6++
		}
	}
	switch {
	case c.Role == RoleProxy && n4 != 1:
		return fmt.Errorf("a proxy needs exactly one IPv4 address, got %d", n4)
	case len(c.Addresses) == 0:
		return errors.New("want at least one address")
	case n4 > 1:
		return fmt.Errorf("at most one IPv4 address, got %d", n4)
	case n6 > 1:
		return fmt.Errorf("at most one IPv6 address, got %d", n6)
	}
	return nil
}

// SortAddresses puts addresses in the order a certificate holds them:
// IPv4 first.
func SortAddresses(as []netip.Addr) []netip.Addr {
	as = slices.Clone(as)
	slices.SortStableFunc(as, func(a, b netip.Addr) int {
		switch {
		case a.Is4() == b.Is4():
			return 0
		case a.Is4():
			return -1
		}
		return 1
	})
	return as
}

// SignedBytes is the canonical encoding without the signature: what the
// signature covers.
func (c *Certificate) SignedBytes() ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	e := encoder{make([]byte, 0, 256)}
	c.encode(&e)
	return e.b, nil
}

// encode writes c's fields, all but the signature, unchecked.
func (c *Certificate) encode(e *encoder) {
	e.u8(Version)
	e.u8(kindCertificate)
	e.str(c.Name)
	e.u8(uint8(c.Role))
	e.raw(c.PublicKey[:])
	e.u8(uint8(len(c.Addresses)))
	for _, a := range c.Addresses {
		e.addr(a)
	}
	e.str(c.Cluster)
	e.u8(uint8(len(c.Groups)))
	for _, r := range c.Groups {
		e.right(r)
	}
	var flags uint8
	if c.SetsPolicy {
		flags |= flagPolicy
	}
	e.u8(flags)
	e.u16(uint16(c.MaxWeight))
	e.time(c.NotBefore)
	e.time(c.NotAfter)
	e.raw(c.Issuer[:])
}

const flagPolicy = 1

// Marshal is the canonical encoding, signature included.
func (c *Certificate) Marshal() ([]byte, error) {
	b, err := c.SignedBytes()
	if err != nil {
		return nil, err
	}
	if len(c.Signature) != sigLen {
		return nil, fmt.Errorf("certificate: signature is %d bytes, want %d", len(c.Signature), sigLen)
	}
	b = append(b, c.Signature...)
	if len(b) > MaxSize {
		return nil, fmt.Errorf("certificate: %d bytes, at most %d", len(b), MaxSize)
	}
	return b, nil
}

// Fingerprint is the SHA-256 of c's encoding; zero if c is not valid.
func (c *Certificate) Fingerprint() Fingerprint {
	b, err := c.Marshal()
	if err != nil {
		return Fingerprint{}
	}
	return fingerprint(b)
}

// Parse parses a node certificate's canonical encoding. It checks the
// structure only: Pool.Verify decides whether the certificate is good.
func Parse(b []byte) (*Certificate, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("certificate: %d bytes, at most %d", len(b), MaxSize)
	}
	d := decoder{b: b}
	if err := d.header(kindCertificate); err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	c := &Certificate{Name: d.str(), Role: Role(d.u8())}
	copy(c.PublicKey[:], d.take(32))
	n := int(d.u8())
	if d.err == nil && n > 2 {
		d.fail("%d addresses, at most 2", n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		c.Addresses = append(c.Addresses, d.addr())
	}
	c.Cluster = d.str()
	n = int(d.u8())
	if d.err == nil && n > MaxGroups {
		d.fail("%d groups, at most %d", n, MaxGroups)
	}
	for i := 0; i < n && d.err == nil; i++ {
		c.Groups = append(c.Groups, d.right())
	}
	flags := d.u8()
	if d.err == nil && flags&^flagPolicy != 0 {
		d.fail("unknown flags %#x", flags)
	}
	c.SetsPolicy = flags&flagPolicy != 0
	c.MaxWeight = int(d.u16())
	c.NotBefore = d.time("not before")
	c.NotAfter = d.time("not after")
	copy(c.Issuer[:], d.take(32))
	c.Signature = slices.Clone(d.take(sigLen))
	d.end()
	if d.err != nil {
		return nil, fmt.Errorf("certificate: %w", d.err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	return c, nil
}

// AllowsGroup reports whether c's rights include joining g. Only a target
// joins groups.
func (c *Certificate) AllowsGroup(g router.Group) bool {
	return c.Role == RoleTarget && AllowsGroup(c.Groups, g)
}
