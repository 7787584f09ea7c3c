package router

import "sync/atomic"

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
}

// String is the reason's short kebab-case name, as status output shows it.
func (d DropReason) String() string {
	if d < NumDropReasons {
		return dropNames[d]
	}
	return "unknown"
}

// Stats are the router's counters since New.
type Stats struct {
	Drops     [NumDropReasons]uint64 // by reason
	Forwarded uint64                 // packets handed back to WireGuard (Route and ResolvedPolicy)
	Control   uint64                 // control messages handed to the overlay
	Queued    uint64                 // packets held while their group was resolved
	Evicted   uint64                 // flows evicted because a table was full
	// Resolving is how many groups are being resolved now (each has a
	// queue), QueuedBytes what their packets hold.
	Resolving   int
	QueuedBytes int
	IAPFlows    int // current IAP flows
	JAPFlows    int // current JAP (NAT) flows
}

// fwdStripes spreads the per-packet Forwarded counter over cache lines, so
// that peers forwarding on different cores do not fight over one line.
const fwdStripes = 16

type paddedCounter struct {
	n atomic.Uint64
	_ [56]byte
}

type counters struct {
	forwarded [fwdStripes]paddedCounter
	drops     [NumDropReasons]atomic.Uint64
	control   atomic.Uint64
	queued    atomic.Uint64
	evicted   atomic.Uint64
}

func (c *counters) forward(stripe uint32) { c.forwarded[stripe%fwdStripes].n.Add(1) }

// Stats returns a snapshot of the counters.
func (r *Router) Stats() Stats {
	var s Stats
	for i := range r.st.forwarded {
		s.Forwarded += r.st.forwarded[i].n.Load()
	}
	for i := range r.st.drops {
		s.Drops[i] = r.st.drops[i].Load()
	}
	s.Control = r.st.control.Load()
	s.Queued = r.st.queued.Load()
	s.Evicted = r.st.evicted.Load()
	s.IAPFlows = int(r.iap.n.Load())
	s.JAPFlows = int(r.jap.n.Load())
	r.gmu.RLock()
	s.Resolving, s.QueuedBytes = len(r.queues), r.qbytes
	r.gmu.RUnlock()
	return s
}

// drop counts a drop and records it in res.
func (r *Router) drop(res *Result, reason DropReason) *Result {
	r.st.drops[reason].Add(1)
	res.Action, res.Reason = Drop, reason
	return res
}
