package router

import "encoding/binary"

// TCP MSS clamping. Packets between IAP and JAP carry the outer header, so
// segments must be EncapOverhead smaller than the tunnel MTU allows. Both
// ends learn that from the MSS option of the other's SYN: the client's SYN
// is clamped at the IAP, the target's SYN-ACK at the JAP.

const (
	tcpOptEnd = 0
	tcpOptNOP = 1
	tcpOptMSS = 2
)

// clampMSS lowers the MSS option of the TCP SYN p to max, if it is larger,
// and fixes the checksum.
func clampMSS(buf []byte, p *parsed, max uint16) {
	doff := int(buf[p.l4+12]>>4) * 4
	opts := buf[p.l4+tcpMinLen : p.l4+doff]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case tcpOptEnd:
			return
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return
		}
		n := int(opts[i+1])
		if n < 2 || i+n > len(opts) {
			return // malformed options: leave them to the endpoints
		}
		if opts[i] == tcpOptMSS && n == 4 {
			old := binary.BigEndian.Uint16(opts[i+2:])
			if old <= max {
				return
			}
			binary.BigEndian.PutUint16(opts[i+2:], max)
			d := delta16(old, max)
			if (tcpMinLen+i+2)%2 == 1 {
				// At an odd offset the value straddles two checksum words:
				// its bytes count swapped.
				d = delta16(old>>8|old<<8, max>>8|max<<8)
			}
			adjustAt(buf, p.l4+tcpChecksum, d)
			return
		}
		i += n
	}
}

// clampFor is the largest MSS an encapsulated segment of family fam fits.
func (r *Router) clampFor(fam uint8) uint16 {
	if fam == 4 {
		return r.mss4
	}
	return r.mss6
}
