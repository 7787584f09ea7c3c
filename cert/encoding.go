package cert

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Version is the encoding version this package writes and reads.
const Version = 1

// Kinds: the second byte of every encoding. It is covered by the signature,
// so a signature over one kind is never valid as another.
const (
	kindCA             = 1
	kindCertificate    = 2
	kindRevocationList = 3
)

// Size limits. A certificate is read from files and, later, from the
// network: its size is bounded before anything else is looked at.
const (
	MaxSize               = 4096  // a CA or node certificate
	MaxRevocationListSize = 65536 // a revocation list
	MaxRevoked            = 2000  // fingerprints in one revocation list
	MaxGroups             = 64    // group rights in one certificate
	MaxNetworks           = 16    // networks a CA may constrain to
	MaxNameLen            = 15    // a node name (config.MaxNameLen: names become interface names)
	MaxCANameLen          = 64
	MaxClusterLen         = 63
)

const sigLen = 64 // ed25519.SignatureSize

// Times are whole seconds since the Unix epoch, from 1970 to the end of
// year 9999 (so that every time has an RFC 3339 form).
const maxUnix = 253402300799

var errShort = errors.New("truncated")

// encoder appends fields in their canonical form.
type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) raw(b []byte) { e.b = append(e.b, b...) }
func (e *encoder) time(t time.Time) {
	e.u64(uint64(t.Unix()))
}
func (e *encoder) str(s string) {
	e.u8(uint8(len(s)))
	e.b = append(e.b, s...)
}
func (e *encoder) addr(a netip.Addr) {
	if a.Is4() {
		e.u8(4)
		b := a.As4()
		e.raw(b[:])
		return
	}
	e.u8(6)
	b := a.As16()
	e.raw(b[:])
}
func (e *encoder) prefix(p netip.Prefix) {
	e.addr(p.Addr())
	e.u8(uint8(p.Bits()))
}
func (e *encoder) right(r GroupRight) {
	e.prefix(r.Prefix)
	e.u16(r.Port)
	e.u8(r.Proto)
}

// decoder reads fields; the first failure sticks and later reads return
// zero values, so a parser checks d.err once per group of fields.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = errShort
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() uint8 {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if b := d.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) time(what string) time.Time {
	v := d.u64()
	if d.err == nil && v > maxUnix {
		d.fail("%s: time %d is out of range", what, v)
	}
	return time.Unix(int64(v), 0).UTC()
}

func (d *decoder) str() string { return string(d.take(int(d.u8()))) }

func (d *decoder) addr() netip.Addr {
	switch fam := d.u8(); {
	case d.err != nil:
	case fam == 4:
		if b := d.take(4); b != nil {
			return netip.AddrFrom4([4]byte(b))
		}
	case fam == 6:
		if b := d.take(16); b != nil {
			a := netip.AddrFrom16([16]byte(b))
			if a.Is4In6() {
				d.fail("IPv4-mapped IPv6 address %s", a)
			}
			return a
		}
	default:
		d.fail("address family %d is not 4 or 6", fam)
	}
	return netip.Addr{}
}

func (d *decoder) prefix() netip.Prefix {
	a := d.addr()
	bits := d.u8()
	if d.err != nil {
		return netip.Prefix{}
	}
	p, err := a.Prefix(int(bits))
	if err != nil || int(bits) > a.BitLen() {
		d.fail("prefix length %d is too long for %s", bits, a)
		return netip.Prefix{}
	}
	if p.Addr() != a {
		d.fail("prefix %s/%d has host bits set", a, bits)
	}
	return p
}

func (d *decoder) right() GroupRight {
	r := GroupRight{Prefix: d.prefix(), Port: d.u16(), Proto: d.u8()}
	if d.err == nil {
		if err := r.validate(); err != nil {
			d.fail("%v", err)
		}
	}
	return r
}

// end fails unless every byte was read.
func (d *decoder) end() {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after the end", len(d.b))
	}
}

// unixTime rounds t to the whole second the encoding holds, in UTC.
func unixTime(t time.Time) time.Time { return time.Unix(t.Unix(), 0).UTC() }

func checkTime(what string, t time.Time) error {
	if u := t.Unix(); u < 0 || u > maxUnix {
		return fmt.Errorf("%s %s is out of range (1970..9999)", what, t)
	}
	if t.Nanosecond() != 0 {
		return fmt.Errorf("%s %s is not a whole second", what, t)
	}
	return nil
}

func checkWindow(notBefore, notAfter time.Time) error {
	if err := checkTime("not before", notBefore); err != nil {
		return err
	}
	if err := checkTime("not after", notAfter); err != nil {
		return err
	}
	if !notBefore.Before(notAfter) {
		return fmt.Errorf("not before %s is not before not after %s", fmtTime(notBefore), fmtTime(notAfter))
	}
	return nil
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// checkAddr accepts a plain unicast-looking IPv4 or IPv6 address.
func checkAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("invalid address")
	case a.Zone() != "":
		return fmt.Errorf("address %s has a zone", a)
	case a.Is4In6():
		return fmt.Errorf("address %s is IPv4-mapped IPv6", a)
	case a.IsUnspecified(), a.IsMulticast():
		return fmt.Errorf("address %s is not a unicast address", a)
	}
	return nil
}

func checkPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("invalid prefix")
	case p.Addr().Zone() != "" || p.Addr().Is4In6():
		return fmt.Errorf("prefix %s: want plain IPv4 or IPv6", p)
	case p.Masked() != p:
		return fmt.Errorf("prefix %s has host bits set (did you mean %s?)", p, p.Masked())
	}
	return nil
}

// comparePrefix orders prefixes: IPv4 before IPv6, then by address, then by
// length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
