package overlaytest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"
)

// Link is how packets travel between two hosts.
type Link struct {
	Delay  time.Duration // one-way delay
	Jitter time.Duration // extra delay per packet, uniform in [0, Jitter]; may reorder
	Loss   float64       // probability that a packet is lost, 0 to 1
}

// Handler receives the packets delivered to a host. The payload is the
// handler's to keep.
type Handler func(src, dst netip.AddrPort, payload []byte)

// Stats count packets. For a host: Sent are the packets it sent, Received
// those delivered to it, Dropped those it sent that were dropped. For the
// Net: the totals.
type Stats struct {
	Sent, Received, Dropped uint64
}

// Net is an in-memory network on a Clock. Each host owns one or more
// addresses (an overlay address per family and an underlay endpoint, say);
// a packet goes to the host that owns its destination address, whatever
// the port, after the link's delay, as an event on the clock: never from
// within Send, so handlers never re-enter each other.
//
// Reachability (Down, Partition, Cut) is checked when a packet is sent and
// again when it arrives, so a cut or a kill also drops what is in flight.
// A packet from an address no host owns (a test playing an outsider)
// reaches every host over the default link.
//
// Loss and jitter draw from one random source seeded by NewNet: one seed,
// one exact run. Like its Clock, a Net is not safe for concurrent use.
type Net struct {
	clk    *Clock
	id     int32 // index in clk.nets
	rng    *rand.Rand
	hosts  []*Host
	byName map[string]*Host
	byAddr map[netip.Addr]*Host
	// by4 holds byAddr's IPv4 hosts again, keyed by a uint32: two lookups
	// a packet, and at 10,000 hosts the generic key's hash and compare
	// were a tenth of a large simulation.
	by4    map[uint32]*Host
	def    Link
	links  map[pair]Link
	cuts   map[pair]bool
	trace  func(Packet)
	dropIf func(Packet) bool
	// flight: the packets in flight, by slot; a free slot's to is -1.
	// Slots are taken in turn from next on, not from a list of freed
	// ones: packets arrive in about the order they were sent, so a run
	// reads and writes the table nearly in order, and a freed slot taken
	// at random was a cache miss a packet at 10,000 proxies. At most half
	// of it is in use (inUse), so the next free slot is near.
	flight []flight
	inUse  int
	next   int
	bytes  arena // their payloads
	stats  Stats
	// zones are the IPv6 zones of addresses in flight, which addr holds
	// by number.
	zones   []string
	zoneIdx map[string]uint32
}

// pair is an unordered pair of hosts, by index, the smaller first.
type pair [2]int32

func pairOf(a, b *Host) pair {
	if a.idx > b.idx {
		a, b = b, a
	}
	return pair{a.idx, b.idx}
}

// flight is a packet in flight. It holds no pointers (its payload is in
// the Net's arena, its addresses in addr form), so that the table of ten
// million of them is no work for the collector.
type flight struct {
	sent     int64
	src, dst addr
	from, to int32  // host indexes; from is -1 for an outsider
	epoch    uint32 // to.epoch when sent: a Down since drops the packet
	payload  span
}

// addr is a netip.AddrPort without the pointer to its zone.
type addr struct {
	ip   [16]byte
	port uint16
	bits uint8  // 0: the zero Addr, 32: IPv4, 128: IPv6
	zone uint32 // 1 + its index in Net.zones; 0 for none
}

func (n *Net) addrOf(ap netip.AddrPort) addr {
	a := addr{ip: ap.Addr().As16(), port: ap.Port(), bits: uint8(ap.Addr().BitLen())}
	if a.bits == 0 {
		a.ip = [16]byte{}
	}
	if z := ap.Addr().Zone(); z != "" {
		k, ok := n.zoneIdx[z]
		if !ok {
			n.zones = append(n.zones, z)
			k = uint32(len(n.zones))
			n.zoneIdx[z] = k
		}
		a.zone = k
	}
	return a
}

func (n *Net) addrPort(a addr) netip.AddrPort {
	var ip netip.Addr
	switch a.bits {
	case 32:
		ip = netip.AddrFrom4([4]byte(a.ip[12:]))
	case 128:
		ip = netip.AddrFrom16(a.ip)
		if a.zone != 0 {
			ip = ip.WithZone(n.zones[a.zone-1])
		}
	}
	return netip.AddrPortFrom(ip, a.port)
}

// NewNet returns an empty network on clk whose loss and jitter draw from a
// source seeded with seed. The default link is instant and lossless.
func NewNet(clk *Clock, seed uint64) *Net {
	n := &Net{
		clk:     clk,
		id:      int32(len(clk.nets)),
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		byName:  map[string]*Host{},
		byAddr:  map[netip.Addr]*Host{},
		by4:     map[uint32]*Host{},
		links:   map[pair]Link{},
		cuts:    map[pair]bool{},
		zoneIdx: map[string]uint32{},
	}
	clk.nets = append(clk.nets, n)
	return n
}

// Clock is the network's clock.
func (n *Net) Clock() *Clock { return n.clk }

// Host is a node of a Net.
type Host struct {
	n       *Net
	idx     int32
	name    string
	addrs   []netip.Addr
	handler Handler
	down    bool
	epoch   uint32 // counts Downs
	group   int    // partition group; 0 is none
	stats   Stats
}

// AddHost adds a host that owns addrs. Names and addresses must be unique.
func (n *Net) AddHost(name string, addrs ...netip.Addr) *Host {
	if _, ok := n.byName[name]; ok {
		panic(fmt.Sprintf("overlaytest: host %q added twice", name))
	}
	h := &Host{n: n, idx: int32(len(n.hosts)), name: name, addrs: append([]netip.Addr(nil), addrs...)}
	for _, a := range addrs {
		if o := n.byAddr[a]; o != nil {
			panic(fmt.Sprintf("overlaytest: address %v of host %q already belongs to %q", a, name, o.name))
		}
		n.byAddr[a] = h
		if a.Is4() {
			n.by4[key4(a)] = h
		}
	}
	n.hosts = append(n.hosts, h)
	n.byName[name] = h
	return h
}

// Host is the host named name; it panics if there is none.
func (n *Net) Host(name string) *Host {
	h := n.byName[name]
	if h == nil {
		panic(fmt.Sprintf("overlaytest: no host %q", name))
	}
	return h
}

// Hosts are the hosts in the order they were added.
func (n *Net) Hosts() []*Host { return append([]*Host(nil), n.hosts...) }

// Name is the host's name.
func (h *Host) Name() string { return h.name }

// Addrs are the addresses the host owns.
func (h *Host) Addrs() []netip.Addr { return append([]netip.Addr(nil), h.addrs...) }

// Handle sets the function that receives the host's packets. A host
// without one drops them silently (they still count as received).
func (h *Host) Handle(f Handler) { h.handler = f }

// IsUp reports whether the host is up (not Down).
func (h *Host) IsUp() bool { return !h.down }

// Stats are the host's counters.
func (h *Host) Stats() Stats { return h.stats }

// Stats are the network's totals.
func (n *Net) Stats() Stats { return n.stats }

// SetDefault sets the link between hosts that have no link of their own.
func (n *Net) SetDefault(l Link) { n.def = checkLink(l) }

// SetLink sets the link between hosts a and b, both ways.
func (n *Net) SetLink(a, b string, l Link) { n.links[pairOf(n.Host(a), n.Host(b))] = checkLink(l) }

func checkLink(l Link) Link {
	if l.Delay < 0 || l.Jitter < 0 || !(l.Loss >= 0 && l.Loss <= 1) {
		panic(fmt.Sprintf("overlaytest: bad link %+v", l))
	}
	return l
}

// Partition splits the network: hosts in different groups cannot reach
// each other. Hosts named in no group reach, and are reached by, every
// group. It replaces any earlier partition; cut links stay cut.
func (n *Net) Partition(groups ...[]string) {
	for _, h := range n.hosts {
		h.group = 0
	}
	for i, g := range groups {
		for _, name := range g {
			h := n.Host(name)
			if h.group != 0 {
				panic(fmt.Sprintf("overlaytest: host %q in two partition groups", name))
			}
			h.group = i + 1
		}
	}
}

// Cut breaks the link between hosts a and b, both ways.
func (n *Net) Cut(a, b string) { n.cuts[pairOf(n.Host(a), n.Host(b))] = true }

// Heal ends the partition and mends every cut link. Hosts that are Down
// stay down.
func (n *Net) Heal() {
	for _, h := range n.hosts {
		h.group = 0
	}
	clear(n.cuts)
}

// Down kills host name: it neither sends nor receives, and the packets in
// flight to it are dropped, even if it comes Up before they would arrive.
func (n *Net) Down(name string) {
	h := n.Host(name)
	h.down = true
	h.epoch++
}

// Up revives host name.
func (n *Net) Up(name string) { n.Host(name).down = false }

// Trace calls f with every packet sent, once its fate is known: when it is
// dropped, or when it is delivered, just before the handler runs. The
// payload is valid only during the call (Recorder.Record copies it). A nil
// f stops tracing.
func (n *Net) Trace(f func(Packet)) { n.trace = f }

// DropIf drops, as they are sent, the packets for which f returns true (a
// test losing one chosen message). The payload is valid only during the
// call. A nil f drops nothing.
func (n *Net) DropIf(f func(Packet) bool) { n.dropIf = f }

func (n *Net) reachable(from, to *Host) bool {
	if from == nil || from == to {
		return true
	}
	if from.group != 0 && to.group != 0 && from.group != to.group {
		return false
	}
	return len(n.cuts) == 0 || !n.cuts[pairOf(from, to)]
}

func (n *Net) link(from, to *Host) Link {
	if from == nil || len(n.links) == 0 {
		return n.def
	}
	if l, ok := n.links[pairOf(from, to)]; ok {
		return l
	}
	return n.def
}

// hostAt is the host that owns a, or nil.
func (n *Net) hostAt(a netip.Addr) *Host {
	if a.Is4() {
		return n.by4[key4(a)]
	}
	return n.byAddr[a]
}

func key4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Send sends payload from src to dst. The payload is copied; delivery, if
// any, is an event on the clock after the link's delay.
func (n *Net) Send(src, dst netip.AddrPort, payload []byte) {
	now := n.clk.now
	from, to := n.hostAt(src.Addr()), n.hostAt(dst.Addr())
	p := Packet{Sent: now, At: now, Src: src, Dst: dst}
	if from != nil {
		p.From = from.name
		from.stats.Sent++
	}
	if to != nil {
		p.To = to.name
	}
	n.stats.Sent++
	l := n.link(from, to)
	switch {
	case from != nil && from.down:
		p.Fate = DropDown
	case to == nil:
		p.Fate = DropNoHost
	case to.down:
		p.Fate = DropDown
	case !n.reachable(from, to):
		p.Fate = DropCut
	}
	if p.Fate == Delivered && n.dropIf != nil {
		p.Payload = payload
		if n.dropIf(p) {
			p.Fate = DropFilter
		}
	}
	if p.Fate == Delivered && l.Loss > 0 && n.rng.Float64() < l.Loss {
		p.Fate = DropLoss
	}
	if p.Fate != Delivered {
		p.Payload = payload
		n.dropped(p, from)
		return
	}
	d := int64(l.Delay)
	if l.Jitter > 0 {
		d += n.rng.Int64N(int64(l.Jitter) + 1)
	}
	slot := n.take()
	fromIdx := int32(-1)
	if from != nil {
		fromIdx = from.idx
	}
	n.flight[slot] = flight{sent: now, src: n.addrOf(src), dst: n.addrOf(dst), from: fromIdx, to: to.idx, epoch: to.epoch, payload: n.bytes.put(payload)}
	n.clk.push(now+d, slot, n.id)
}

// take finds a free slot in flight, growing it to keep at most half in use.
func (n *Net) take() int32 {
	if n.inUse*2 >= len(n.flight) {
		old := len(n.flight)
		n.flight = append(n.flight, make([]flight, max(old, 64))...)
		for i := old; i < len(n.flight); i++ {
			n.flight[i].to = -1
		}
		n.next = old
	}
	for n.flight[n.next].to >= 0 {
		if n.next++; n.next == len(n.flight) {
			n.next = 0
		}
	}
	slot := n.next
	if n.next++; n.next == len(n.flight) {
		n.next = 0
	}
	n.inUse++
	return int32(slot)
}

// compactAbove is the fewest slots compact bothers with.
var compactAbove = 1 << 16

// compact moves the packets in flight to the front of a new, smaller
// n.flight when at most an eighth of it is in use: a burst (every proxy of
// a simulated overlay greets every other at its start) left it at its
// high-water mark for the rest of a run, 3 GB at 10,000 proxies. Each
// packet in flight has one event, which is told its new slot; the order of
// events does not change.
func (n *Net) compact() {
	if len(n.flight) < compactAbove || n.inUse*8 > len(n.flight) {
		return
	}
	moved := make([]flight, 0, 4*n.inUse)
	n.clk.q.each(func(e *event) {
		if e.net == n.id {
			moved = append(moved, n.flight[e.ref])
			e.ref = int32(len(moved) - 1)
		}
	})
	n.next = len(moved)
	moved = moved[:cap(moved)]
	for i := n.next; i < len(moved); i++ {
		moved[i].to = -1
	}
	if n.next == len(moved) {
		n.next = 0
	}
	n.flight = moved
}

// deliver runs when the packet in slot arrives.
func (n *Net) deliver(slot int32) {
	f := n.flight[slot]
	n.flight[slot].to = -1
	n.inUse--
	n.compact()
	to := n.hosts[f.to]
	var from *Host
	if f.from >= 0 {
		from = n.hosts[f.from]
	}
	p := Packet{Sent: f.sent, At: n.clk.now, Src: n.addrPort(f.src), Dst: n.addrPort(f.dst), To: to.name}
	if from != nil {
		p.From = from.name
	}
	switch {
	case to.down || to.epoch != f.epoch:
		p.Fate = DropDown
	case !n.reachable(from, to):
		p.Fate = DropCut
	}
	if p.Fate != Delivered {
		// The trace may send: the span stays put until after it.
		p.Payload = n.bytes.bytes(f.payload)
		n.dropped(p, from)
		n.bytes.release(f.payload)
		return
	}
	p.Payload = append([]byte(nil), n.bytes.bytes(f.payload)...)
	n.bytes.release(f.payload)
	n.stats.Received++
	to.stats.Received++
	if n.trace != nil {
		n.trace(p)
	}
	if to.handler != nil {
		to.handler(p.Src, p.Dst, p.Payload)
	}
}

func (n *Net) dropped(p Packet, from *Host) {
	n.stats.Dropped++
	if from != nil {
		from.stats.Dropped++
	}
	if n.trace != nil {
		n.trace(p)
	}
}
