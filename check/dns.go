package check

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A minimal DNS codec (RFC 1035): enough to send one query and to read, and
// check, the response. The decoder takes hostile bytes: it bounds names,
// follows compression pointers only backwards, and never allocates by a
// count the message claims.

// DNS types by name.
const (
	TypeA     uint16 = 1
	TypeNS    uint16 = 2
	TypeCNAME uint16 = 5
	TypeSOA   uint16 = 6
	TypePTR   uint16 = 12
	TypeMX    uint16 = 15
	TypeTXT   uint16 = 16
	TypeAAAA  uint16 = 28
	TypeSRV   uint16 = 33
	TypeANY   uint16 = 255

	classIN = 1
)

var typeNames = map[uint16]string{TypeA: "A", TypeNS: "NS", TypeCNAME: "CNAME", TypeSOA: "SOA", TypePTR: "PTR",
	TypeMX: "MX", TypeTXT: "TXT", TypeAAAA: "AAAA", TypeSRV: "SRV", TypeANY: "ANY"}

// ParseDNSType parses a type name ("A", "aaaa") or "TYPE65" (RFC 3597).
func ParseDNSType(s string) (uint16, error) {
	for t, n := range typeNames {
		if strings.EqualFold(s, n) {
			return t, nil
		}
	}
	if len(s) > 4 && strings.EqualFold(s[:4], "TYPE") {
		if n, err := strconv.ParseUint(s[4:], 10, 16); err == nil && n > 0 {
			return uint16(n), nil
		}
	}
	return 0, fmt.Errorf("%q is not a DNS type (A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, ANY or TYPEn)", s)
}

// DNSTypeString is the name of a type.
func DNSTypeString(t uint16) string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// RCODEs.
const (
	rcodeNoError  = 0
	rcodeFormErr  = 1
	rcodeServFail = 2
	rcodeNXDomain = 3
	rcodeNotImp   = 4
	rcodeRefused  = 5
)

func rcodeString(r int) string {
	switch r {
	case rcodeNoError:
		return "NOERROR"
	case rcodeFormErr:
		return "FORMERR"
	case rcodeServFail:
		return "SERVFAIL"
	case rcodeNXDomain:
		return "NXDOMAIN"
	case rcodeNotImp:
		return "NOTIMP"
	case rcodeRefused:
		return "REFUSED"
	}
	return "RCODE" + strconv.Itoa(r)
}

// Header flags.
const (
	flagQR = 1 << 15
	flagTC = 1 << 9
	flagRD = 1 << 8
)

const (
	headerLen  = 12
	maxNameLen = 255 // on the wire
	maxLabel   = 63
)

// CheckDNSName reports whether name can be asked for: dot-separated labels
// of 1..63 printable ASCII characters (no spaces, dots or backslashes
// inside a label), at most 255 bytes on the wire; "." is the root.
func CheckDNSName(name string) error {
	_, err := appendName(nil, name)
	return err
}

// appendName appends name in wire form.
func appendName(b []byte, name string) ([]byte, error) {
	bad := func(why string) error { return fmt.Errorf("DNS name %q: %s", name, why) }
	n := strings.TrimSuffix(name, ".")
	if n == "" {
		if name == "" {
			return b, bad("empty (the root is \".\")")
		}
		return append(b, 0), nil
	}
	wire := 1
	for _, l := range strings.Split(n, ".") {
		switch {
		case l == "":
			return b, bad("empty label")
		case len(l) > maxLabel:
			return b, bad("a label is longer than 63 bytes")
		case strings.IndexFunc(l, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == '\\' }) >= 0:
			return b, bad("want printable ASCII without spaces or backslashes")
		}
		wire += 1 + len(l)
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	if wire > maxNameLen {
		return b, bad("longer than 255 bytes")
	}
	return append(b, 0), nil
}

// fqdn is name with one trailing dot, as the decoder returns names.
func fqdn(name string) string { return strings.TrimSuffix(name, ".") + "." }

// dnsQuestion is one entry of the question section.
type dnsQuestion struct {
	Name        string // with a trailing dot
	Type, Class uint16
}

// dnsRR is one resource record; Data aliases the message.
type dnsRR struct {
	Name        string
	Type, Class uint16
	TTL         uint32
	Data        []byte
}

// dnsMessage is a decoded message.
type dnsMessage struct {
	ID, Flags  uint16
	Questions  []dnsQuestion
	Answers    []dnsRR
	Authority  []dnsRR
	Additional []dnsRR
}

func (m *dnsMessage) rcode() int { return int(m.Flags & 0xf) }

// appendQuery appends a recursive query for name and typ, class IN.
func appendQuery(b []byte, id uint16, name string, typ uint16) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, id)
	b = binary.BigEndian.AppendUint16(b, flagRD)
	b = append(b, 0, 1, 0, 0, 0, 0, 0, 0) // 1 question
	b, err := appendName(b, name)
	if err != nil {
		return nil, err
	}
	b = binary.BigEndian.AppendUint16(b, typ)
	return binary.BigEndian.AppendUint16(b, classIN), nil
}

var errShort = errors.New("message too short")

// parseDNS decodes a whole message.
func parseDNS(b []byte) (*dnsMessage, error) {
	if len(b) < headerLen {
		return nil, errShort
	}
	m := &dnsMessage{ID: binary.BigEndian.Uint16(b), Flags: binary.BigEndian.Uint16(b[2:])}
	var counts [4]int
	for i := range counts {
		counts[i] = int(binary.BigEndian.Uint16(b[4+2*i:]))
	}
	off := headerLen
	for range counts[0] {
		name, n, err := readName(b, off)
		if err != nil {
			return nil, fmt.Errorf("question: %w", err)
		}
		if n+4 > len(b) {
			return nil, fmt.Errorf("question: %w", errShort)
		}
		m.Questions = append(m.Questions, dnsQuestion{name, binary.BigEndian.Uint16(b[n:]), binary.BigEndian.Uint16(b[n+2:])})
		off = n + 4
	}
	for i, sec := range []*[]dnsRR{&m.Answers, &m.Authority, &m.Additional} {
		for range counts[i+1] {
			rr, n, err := readRR(b, off)
			if err != nil {
				return nil, fmt.Errorf("record: %w", err)
			}
			*sec = append(*sec, rr)
			off = n
		}
	}
	return m, nil
}

func readRR(b []byte, off int) (dnsRR, int, error) {
	name, n, err := readName(b, off)
	if err != nil {
		return dnsRR{}, 0, err
	}
	if n+10 > len(b) {
		return dnsRR{}, 0, errShort
	}
	rr := dnsRR{Name: name, Type: binary.BigEndian.Uint16(b[n:]), Class: binary.BigEndian.Uint16(b[n+2:]), TTL: binary.BigEndian.Uint32(b[n+4:])}
	l := int(binary.BigEndian.Uint16(b[n+8:]))
	n += 10
	if n+l > len(b) {
		return dnsRR{}, 0, errShort
	}
	rr.Data = b[n : n+l : n+l]
	return rr, n + l, nil
}

// readName decodes the name at off and returns it (with a trailing dot,
// bytes as they are) and the offset after it. A compression pointer must
// point before the label that holds it, so every name ends.
func readName(b []byte, off int) (string, int, error) {
	var name []byte
	end := -1 // the offset after the name where it started, once a pointer is taken
	wire := 0
	for {
		if off >= len(b) {
			return "", 0, errShort
		}
		c := int(b[off])
		switch c & 0xc0 {
		case 0x00:
			if c == 0 {
				if end < 0 {
					end = off + 1
				}
				if len(name) == 0 {
					return ".", end, nil
				}
				return string(name), end, nil
			}
			if off+1+c > len(b) {
				return "", 0, errShort
			}
			if wire += 1 + c; wire+1 > maxNameLen {
				return "", 0, errors.New("name longer than 255 bytes")
			}
			name = append(name, b[off+1:off+1+c]...)
			name = append(name, '.')
			off += 1 + c
		case 0xc0:
			if off+2 > len(b) {
				return "", 0, errShort
			}
			ptr := int(binary.BigEndian.Uint16(b[off:]) & 0x3fff)
			if ptr >= off {
				return "", 0, errors.New("compression pointer does not point backwards")
			}
			if end < 0 {
				end = off + 2
			}
			off = ptr
		default:
			return "", 0, fmt.Errorf("label type 0x%02x", c&0xc0)
		}
	}
}
