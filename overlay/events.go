package overlay

import (
	"net/netip"

	"github.com/pias-net/pias/router"
)

// Event is a control-plane happening worth telling a person about.
type Event struct {
	Proxy  string // the proxy it happened at (edges: the proxy it concerns)
	Kind   EventKind
	Group  router.Group
	Target netip.AddrPort // join, leave, expire, moved
	Name   string         // the target's or JAP's name; dead, alive, member…: the proxy's; edges: the edge's
	RAPs   []string       // register, resolve: the group's RAPs
	JAPs   []router.JAP   // register, resolved
	Reason string         // refuse, not-admitted, join-refused, unadmitted; member: its state; move: from → to
}

// EventKind says what happened. Every kind the code emits is listed here.
type EventKind string

// At a proxy, as JAP, RAP and IAP.
const (
	EventJoin     EventKind = "join"     // a target joined a group here
	EventLeave    EventKind = "leave"    // a target left
	EventExpire   EventKind = "expire"   // a target fell silent and was dropped
	EventMoved    EventKind = "moved"    // a target joined elsewhere and was dropped here
	EventDrain    EventKind = "drain"    // a target here takes no new flows; its flows go on
	EventDrained  EventKind = "drained"  // a draining target was dropped; Reason: its flows ended, or its timeout
	EventRegister EventKind = "register" // this JAP told a group's RAPs its count
	EventResolve  EventKind = "resolve"  // this IAP asked a RAP
	EventResolved EventKind = "resolved" // and got the group's JAPs
	// EventRefuse: this proxy refused something (a join, a registration
	// whose policy conflicts, a newcomer, a record); Reason says what.
	EventRefuse EventKind = "refuse"
)

// At a proxy, about other proxies.
const (
	EventDead        EventKind = "dead"         // a proxy was declared dead
	EventAlive       EventKind = "alive"        // a proxy is alive (new, back, or restarted)
	EventUnreachable EventKind = "unreachable"  // alive for others, but cut off from this proxy
	EventReachable   EventKind = "reachable"    // reachable from here again
	EventMember      EventKind = "member"       // a proxy learned at run time; Reason: its state
	EventAdmitted    EventKind = "admitted"     // this proxy's seed admitted it
	EventNotAdmitted EventKind = "not-admitted" // a seed refused this proxy; Reason says why
	EventUnadmitted  EventKind = "unadmitted"   // no seed answers this proxy's hellos
)

// Admission by certificate (CA mode), at a proxy.
const (
	EventEdgeAdmitted EventKind = "edge-admitted" // an edge proved its certificate here
	// EventEdgeRemoved: an admitted edge was cut off; Reason: its lease
	// lapsed, or its certificate expired or was revoked.
	EventEdgeRemoved EventKind = "edge-removed"
	// EventCertExpiring: a certificate (this node's, or an admitted
	// node's) expires within a day; Reason says when.
	EventCertExpiring EventKind = "cert-expiring"
	EventRevocation   EventKind = "revocation" // a newer revocation list is held; Reason: its serial
)

// At an edge.
const (
	EventJoined      EventKind = "joined"       // a target's group is joined
	EventJoinRefused EventKind = "join-refused" // its JAP refused the join; Reason says why
	EventRejoin      EventKind = "rejoin"       // it joins again (moved, or its JAP forgot it)
	EventMove        EventKind = "move"         // the edge moved its prefixes to another proxy
	EventLearned     EventKind = "learned"      // the edge learned a proxy
	// EventCheckFailed: a target's check of a group's service failed fall
	// times in a row; the target drains the group. Reason: the last error.
	EventCheckFailed EventKind = "check-failed"
	// EventCheckOK: the check passed (rise times after failing, or the
	// first time); a drained group joins again. Reason: the last result.
	EventCheckOK EventKind = "check-ok"
)
