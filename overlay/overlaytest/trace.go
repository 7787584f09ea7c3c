package overlaytest

import (
	"fmt"
	"net/netip"
	"time"
)

// Fate is what became of a packet: delivered, or why it was dropped.
type Fate uint8

const (
	Delivered  Fate = iota
	DropLoss        // lost at random on its link
	DropDown        // its sender or receiver was Down (or went down while it was in flight)
	DropCut         // a Partition or Cut lay between the hosts
	DropNoHost      // no host owns the destination address
	DropFilter      // the DropIf function chose it
)

var fateNames = [...]string{"delivered", "lost", "down", "cut", "no-host", "filtered"}

func (f Fate) String() string {
	if int(f) < len(fateNames) {
		return fateNames[f]
	}
	return fmt.Sprintf("fate(%d)", f)
}

// Packet is one packet sent on a Net, as the trace sees it.
type Packet struct {
	Sent, At int64 // clock times when it was sent, and delivered or dropped
	Src, Dst netip.AddrPort
	From, To string // the hosts owning Src and Dst, "" for none
	Payload  []byte
	Fate     Fate
}

// String is a line for logs and diffs, e.g.
// "1.5ms p1 100.64.0.1:9→100.64.0.2:9 12B delivered (sent 1ms)".
func (p Packet) String() string {
	return fmt.Sprintf("%v %s %v→%v %dB %v (sent %v)", time.Duration(p.At), p.From, p.Src, p.Dst, len(p.Payload), p.Fate, time.Duration(p.Sent))
}

// Recorder keeps a Net's trace: n.Trace(rec.Record).
type Recorder struct {
	Packets []Packet
}

// Record appends p, with a copy of its payload.
func (r *Recorder) Record(p Packet) {
	p.Payload = append([]byte(nil), p.Payload...)
	r.Packets = append(r.Packets, p)
}

// Count is the number of recorded packets for which match is true.
func (r *Recorder) Count(match func(Packet) bool) int {
	k := 0
	for _, p := range r.Packets {
		if match(p) {
			k++
		}
	}
	return k
}
