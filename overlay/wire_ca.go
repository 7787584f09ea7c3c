package overlay

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
)

// RevocationPart (TypeRevocation): proxy → proxy: part Part of Parts
// (from 0) of the encoding of a revocation list of serial Serial. The list
// is signed by the CA, so it may come from anyone; a proxy checks it once
// every part has come (certs.go).
//
//	serial:u64 part:u8 parts:u8 data:u16-length bytes
type RevocationPart struct {
	Serial      uint64
	Part, Parts uint8
	Data        []byte // at most revocationChunk bytes
}

// revocationChunk is the most list bytes one part carries: one tunnel
// packet. A full list (64 KiB) takes 55 parts.
const revocationChunk = 1200

func (*RevocationPart) Type() Type { return TypeRevocation }

func (m *RevocationPart) appendBody(b []byte) ([]byte, error) {
	if m.Parts == 0 || m.Part >= m.Parts || len(m.Data) == 0 || len(m.Data) > revocationChunk {
		return b, fmt.Errorf("revocation part %d of %d, %d bytes", m.Part, m.Parts, len(m.Data))
	}
	b = binary.BigEndian.AppendUint64(b, m.Serial)
	b = append(b, m.Part, m.Parts)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Data)))
	return append(b, m.Data...), nil
}

func decodeRevocation(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &RevocationPart{Serial: d.u64("serial"), Part: d.u8("part"), Parts: d.u8("parts")}
	n := int(d.u16("data length"))
	if d.err == nil && (m.Parts == 0 || m.Part >= m.Parts || n == 0 || n > revocationChunk) {
		d.fail(fmt.Errorf("revocation part %d of %d, %d bytes", m.Part, m.Parts, n))
	}
	m.Data = bytes.Clone(d.take(n, "data"))
	return d.end(m)
}

// EdgeClaim (TypeEdgeClaim): proxy → proxy: the proxy From admitted the
// edge Name with WireGuard key Key at Since (its wall clock, Unix ms), and
// it holds Addrs there; with Release, it no longer does (CA mode: so that
// no two live edges hold one address anywhere, see certs.go).
//
//	from:string flags:u8 key:32 name:string since:u64 n:u8 n×addr
type EdgeClaim struct {
	From    string
	Release bool
	Key     [32]byte
	Name    string
	Since   int64
	Addrs   []netip.Addr // 1 or 2
}

const claimRelease uint8 = 1

func (*EdgeClaim) Type() Type { return TypeEdgeClaim }

func (m *EdgeClaim) appendBody(b []byte) ([]byte, error) {
	if len(m.Addrs) == 0 || len(m.Addrs) > 2 {
		return b, fmt.Errorf("%d addresses, want 1 or 2", len(m.Addrs))
	}
	b, err := appendStr(b, "from", m.From)
	if err != nil {
		return b, err
	}
	var flags uint8
	if m.Release {
		flags |= claimRelease
	}
	b = append(b, flags)
	b = append(b, m.Key[:]...)
	if b, err = appendStr(b, "name", m.Name); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint64(b, uint64(m.Since))
	b = append(b, byte(len(m.Addrs)))
	for _, a := range m.Addrs {
		if err := checkAddr(a); err != nil {
			return b, err
		}
		b = appendAddr(b, a)
	}
	return b, nil
}

func decodeEdgeClaim(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &EdgeClaim{From: d.str("from length", "from")}
	flags := d.u8("flags")
	if d.err == nil && flags&^claimRelease != 0 {
		d.fail(fmt.Errorf("unknown claim flags %#x", flags&^claimRelease))
	}
	m.Release = flags&claimRelease != 0
	copy(m.Key[:], d.take(32, "key"))
	m.Name = d.str("name length", "name")
	m.Since = int64(d.u64("since"))
	n := int(d.u8("address count"))
	if d.err == nil && (n == 0 || n > 2) {
		d.fail(fmt.Errorf("%d addresses, want 1 or 2", n))
	}
	for range n {
		if a := d.addr("address family", "address"); d.err == nil {
			m.Addrs = append(m.Addrs, a)
		}
	}
	return d.end(m)
}
