package overlay

import (
	"bytes"
	"encoding/binary"
	"fmt"
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
