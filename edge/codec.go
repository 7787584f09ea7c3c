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

// encode numbers m with seq and encodes it.
func encode(seq uint32, m overlay.Msg) ([]byte, error) { return overlay.AppendMsg(nil, seq, m) }

// decode parses b; a malformed message is an error, never a panic.
func decode(b []byte) (uint32, overlay.Msg, error) { return overlay.ParseMsg(b) }
