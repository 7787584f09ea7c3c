package edge

import (
	"net/netip"

	"github.com/pias-net/pias/overlay"
)

// Packet is a control message to send from the edge's overlay address of
// To's family.
type Packet struct {
	To   netip.AddrPort
	Data []byte
}

// encode and decode are the only places that know the wire format of the
// edge's control messages.
func encode(m *overlay.Message) ([]byte, error) { return m.AppendBinary(nil) }

// decode parses b; a malformed message is an error, never a panic.
func decode(b []byte) (*overlay.Message, error) {
	var m overlay.Message
	if err := m.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return &m, nil
}
