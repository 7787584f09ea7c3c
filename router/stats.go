package router

import (
	"sync"
	"sync/atomic"
)

// DropReason says why Route dropped a packet.
type DropReason uint8

// Drop reasons. DropNone is the Reason of every result that is not a drop.
const (
	DropNone            DropReason = iota
	DropMalformed                  // too short, bad version or lengths, no headroom
	DropFragment                   // an IPv4 fragment or an IPv6 fragment header
	DropUnsupported                // a protocol or header the overlay does not carry
	DropNotForUs                   // neither for this proxy, an anycast group, nor a flow's reply
	DropNoFlow                     // a target's packet that matches no NAT flow
	DropNoGroup                    // the group (or anycast IP) has no JAP at all
	DropNoTarget                   // the group has JAPs, but none this packet may go to
	DropQueueFull                  // the group's resolve queue is full
	DropResolveTimeout             // the group was not resolved in time
	DropNotFromProxy               // an encapsulated packet from something that is not a proxy
	DropICMPUnsupported            // ICMP other than echo, or echo where nobody answers it
	DropNoPort                     // no free client port for the NAT within 64 tries
	DropResolveLimit               // a new group past the caps of groups being resolved (per client, or in all)
	DropQueueBytes                 // the resolve queues hold Config.MaxQueuedBytes
	DropFlowRate                   // a new flow of a source at its share of a table, past its churn rate
	NumDropReasons                 // the number of drop reasons, for arrays indexed by them
)

var dropNames = [NumDropReasons]string{
	DropNone:            "none",
	DropMalformed:       "malformed",
	DropFragment:        "fragment",
	DropUnsupported:     "unsupported",
	DropNotForUs:        "not-for-us",
	DropNoFlow:          "no-flow",
	DropNoGroup:         "no-group",
	DropNoTarget:        "no-target",
	DropQueueFull:       "queue-full",
	DropResolveTimeout:  "resolve-timeout",
	DropNotFromProxy:    "not-from-proxy",
	DropICMPUnsupported: "icmp-unsupported",
	DropNoPort:          "no-port",
	DropResolveLimit:    "resolve-limit",
	DropQueueBytes:      "queue-bytes",
	DropFlowRate:        "flow-rate",
}

// enumName is names[v], or "unknown" for a value past its end: the String
// of each of the counters' enums.
func enumName[T ~uint8](names []string, v T) string {
	if int(v) < len(names) {
		return names[v]
	}
	return "unknown"
}

// String is the reason's short kebab-case name, as status output shows it.
func (d DropReason) String() string { return enumName(dropNames[:], d) }

// Role is the step a forwarded packet took at this proxy. A packet counts
// under one role, the last step it took here, so the roles sum to
// Stats.Forwarded.
type Role uint8

const (
	// RoleIngress: the IAP step. A client's packet encapsulated to its
	// JAP, or a copy of a replicated datagram encapsulated to another JAP.
	RoleIngress Role = iota
	// RoleJoin: the JAP step. A client's packet NATed to a local target,
	// also at an IAP that is the flow's JAP itself.
	RoleJoin
	// RoleReply: a target's reply. At its JAP, NATed back and sent to the
	// IAP (or straight to the client when the JAP is the IAP); at the IAP,
	// a reply the JAP sent, decapsulated for the client.
	RoleReply
	// RoleEcho: an echo reply this proxy answered itself.
	RoleEcho
	NumRoles // the number of roles, for arrays indexed by them
)

var roleNames = [NumRoles]string{RoleIngress: "ingress", RoleJoin: "join", RoleReply: "reply", RoleEcho: "echo"}

// String is the role's name, as metrics label it.
func (r Role) String() string { return enumName(roleNames[:], r) }

// Lookup is what an IAP found when it looked a group up in its cache of
// RAP answers. It looks for the first packet of each flow that needs a JAP
// list (a group with no local target here, or a policy that takes
// others' targets too), for every datagram of a replicated group (they
// have no flow), and for each echo request to an anycast IP with no local
// target. Packets of established flows and packets routed once a resolve
// is answered do not look.
type Lookup uint8

const (
	// LookupHit: an unexpired entry of a group the RAP knew; the packet
	// goes on with its JAP list.
	LookupHit Lookup = iota
	// LookupMiss: no unexpired entry. The packet is queued for the group
	// to be resolved (a resolve starts, unless one is already out for
	// the group), or dropped at the resolve caps.
	LookupMiss
	// LookupNegative: an unexpired negative entry, a group that the RAP
	// said has no JAP. With no local target either, the packet is dropped
	// (DropNoGroup).
	LookupNegative
	NumLookups // the number of results, for arrays indexed by them
)

var lookupNames = [NumLookups]string{LookupHit: "hit", LookupMiss: "miss", LookupNegative: "negative"}

// String is the result's name, as metrics label it.
func (l Lookup) String() string { return enumName(lookupNames[:], l) }

// FlowProto is the transport protocol of a flow: flows are TCP or UDP.
type FlowProto uint8

const (
	FlowTCP FlowProto = iota
	FlowUDP
	NumFlowProtos // the number of protocols, for arrays indexed by them
)

// String is "tcp" or "udp".
func (f FlowProto) String() string {
	switch f {
	case FlowTCP:
		return "tcp"
	case FlowUDP:
		return "udp"
	}
	return "unknown"
}

func flowProtoOf(proto uint8) FlowProto {
	if proto == ProtoTCP {
		return FlowTCP
	}
	return FlowUDP
}

// TableStats count a flow table's flows by protocol.
type TableStats struct {
	Live [NumFlowProtos]int    // flows now
	New  [NumFlowProtos]uint64 // flows created since New
}

// Stats are the router's counters since New.
type Stats struct {
	Drops [NumDropReasons]uint64 // by reason
	// Forwarded counts the packets handed back to WireGuard (Route,
	// ResolvedPolicy and the copies of Copy); Packets and Bytes count them
	// by role, Bytes as handed over (an encapsulated packet with its
	// outer header).
	Forwarded      uint64
	Packets, Bytes [NumRoles]uint64
	Lookups        [NumLookups]uint64 // the IAP's cache lookups, by result
	Control        uint64             // control messages handed to the overlay
	Queued         uint64             // packets held while their group was resolved
	Evicted        uint64             // flows evicted because a table was full
	// Resolving is how many groups are being resolved now (each has a
	// queue), QueuedBytes what their packets hold.
	Resolving   int
	QueuedBytes int
	IAPFlows    int // current IAP flows
	JAPFlows    int // current JAP (NAT) flows
	// IAP and JAP count each table's flows by protocol. Live may differ
	// from IAPFlows and JAPFlows by the flows made or gone in between.
	IAP, JAP TableStats
}

// fwdStripes spreads the per-packet counters over cache lines, so that
// peers forwarding on different cores do not fight over one line.
const fwdStripes = 16

// A forwarded packet costs one atomic add, as a plain packet count would:
// a stripe's word per role packs the packets (high 22 bits) and bytes (low
// 42 bits) added since they were last folded into the wide counters. Stats
// folds, and so does the packet that takes a word's packets to 2^21 (its
// top bit), long before either field could overflow: 2^22 packets of at
// most 64 KiB are 2^38 bytes.
const (
	packShift = 42
	packBytes = 1<<packShift - 1
	packFull  = 1 << 63
)

// fwdStripe is one stripe of the forwarding counters. Padding keeps two
// stripes' words off one line, however the array is aligned.
type fwdStripe struct {
	w [NumRoles]atomic.Uint64
	_ [64]byte
}

type counters struct {
	fwd     [fwdStripes]fwdStripe
	drops   [NumDropReasons]atomic.Uint64
	lookups [NumLookups]atomic.Uint64
	control atomic.Uint64
	queued  atomic.Uint64
	evicted atomic.Uint64

	mu             sync.Mutex // guards the folded counts
	packets, bytes [NumRoles]uint64
}

// forward counts a forwarded packet of n bytes (n < 2^22).
func (c *counters) forward(stripe uint32, role Role, n int) {
	if c.fwd[stripe%fwdStripes].w[role].Add(1<<packShift|uint64(n))&packFull != 0 {
		c.mu.Lock()
		c.foldLocked()
		c.mu.Unlock()
	}
}

// foldLocked moves the stripes' counts into the wide counters. Every
// reading goes through here under mu, so the counts it returns never go
// down, and a packet counted while it runs is counted by the next one.
func (c *counters) foldLocked() {
	for i := range c.fwd {
		for role := range NumRoles {
			v := c.fwd[i].w[role].Swap(0)
			c.packets[role] += v >> packShift
			c.bytes[role] += v & packBytes
		}
	}
}

// Stats returns a snapshot of the counters.
func (r *Router) Stats() Stats {
	var s Stats
	r.st.mu.Lock()
	r.st.foldLocked()
	s.Packets, s.Bytes = r.st.packets, r.st.bytes
	r.st.mu.Unlock()
	for _, n := range s.Packets {
		s.Forwarded += n
	}
	for i := range r.st.drops {
		s.Drops[i] = r.st.drops[i].Load()
	}
	for i := range r.st.lookups {
		s.Lookups[i] = r.st.lookups[i].Load()
	}
	s.Control = r.st.control.Load()
	s.Queued = r.st.queued.Load()
	s.Evicted = r.st.evicted.Load()
	s.IAPFlows = int(r.iap.n.Load())
	s.JAPFlows = int(r.jap.n.Load())
	s.IAP, s.JAP = r.iap.stats(), r.jap.stats()
	r.gmu.RLock()
	s.Resolving, s.QueuedBytes = len(r.queues), r.qbytes
	r.gmu.RUnlock()
	return s
}

// lookup is cached, counted.
func (r *Router) lookup(g Group, now int64) *cacheEntry {
	e := r.cached(g, now)
	switch {
	case e == nil:
		r.st.lookups[LookupMiss].Add(1)
	case e.known:
		r.st.lookups[LookupHit].Add(1)
	default:
		r.st.lookups[LookupNegative].Add(1)
	}
	return e
}

// drop counts a drop and records it in res.
func (r *Router) drop(res *Result, reason DropReason) *Result {
	r.st.drops[reason].Add(1)
	res.Action, res.Reason = Drop, reason
	return res
}
