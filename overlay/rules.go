package overlay

// Who may send each control message, and to where: one table, checked in
// one place (Permit) before any handler runs.

import (
	"fmt"
	"strings"
)

// Sender is a set of classes of the node a message comes from.
type Sender uint8

// Senders.
const (
	SenderProxy  Sender = 1 << iota // a proxy of the overlay
	SenderTarget                    // an admitted edge with groups
	SenderClient                    // an admitted edge without groups
)

// Dest is a set of kinds of address a message is sent to.
type Dest uint8

// Destinations.
const (
	DestSelf    Dest = 1 << iota // this proxy's IPv4 overlay address
	DestSelf6                    // this proxy's IPv6 overlay address
	DestAnycast                  // the anycast address of the message's group (GroupOf)
	// DestEdge is an edge's own address: the answers a proxy sends to
	// edges. A proxy never accepts these.
	DestEdge
)

// Rule says who may send a type of message, and to where.
type Rule struct {
	From Sender
	To   Dest
	// Relay: a proxy may pass the message on for another proxy, so its
	// fields need not be the word of the proxy it came from. (A Resolve is
	// relayed once, to a RAP, for a proxy cut off from the RAPs, and its
	// answer back; a helper passes on the ProbeAck it got for a ProbeReq;
	// Fail, Alive and News are passed on once; a MemberRecord is
	// flooded.) The other types come from the proxy they speak of, or for.
	Relay bool
}

// origin is a message that names the proxy it comes from. Of a type that
// is not relayed, that name must be its sender's (Proxy.handle checks).
type origin interface{ origin() string }

func (m *Probe) origin() string     { return m.From }
func (m *Digest) origin() string    { return m.From }
func (m *AdmitsReq) origin() string { return m.From }
func (m *Admits) origin() string    { return m.From }
func (m *Register) origin() string  { return m.JAP }
func (m *EdgeClaim) origin() string { return m.From }

// SpeaksForItself reports whether a message of type t must come from the
// proxy it names as its origin: it may not be relayed.
func SpeaksForItself(t Type) bool { return t.valid() && !rules[t].Relay }

const toSelf = DestSelf | DestSelf6

// rules are the rules, by type.
var rules = [typeEnd]Rule{
	// A target speaks to its group's anycast address: anycast made this
	// proxy the one that hears it, so it becomes its JAP.
	TypeJoin:      {From: SenderTarget, To: DestAnycast},
	TypeKeepalive: {From: SenderTarget, To: DestAnycast},
	// A target that moved away also tells its old JAP, at that proxy's own
	// address of the target's family.
	TypeLeave: {From: SenderTarget, To: DestAnycast | toSelf},
	// A target drains at its JAP as it joined it, through anycast.
	TypeDrain:        {From: SenderTarget, To: DestAnycast},
	TypeJoinAck:      {From: SenderProxy, To: DestEdge},
	TypeDrainAck:     {From: SenderProxy, To: DestEdge},
	TypeKeepaliveAck: {From: SenderProxy, To: DestEdge},
	// Any edge may learn which proxies admit it, at a proxy's address of
	// its own family.
	TypeProxiesReq: {From: SenderTarget | SenderClient, To: toSelf},
	TypeProxies:    {From: SenderProxy, To: DestEdge},

	TypeRegister:     {From: SenderProxy, To: DestSelf},
	TypeResolve:      {From: SenderProxy, To: DestSelf, Relay: true},
	TypeResolveReply: {From: SenderProxy, To: DestSelf, Relay: true},
	TypeMoved:        {From: SenderProxy, To: DestSelf},
	TypeNoTarget:     {From: SenderProxy, To: DestSelf},
	TypePolicy:       {From: SenderProxy, To: DestSelf},

	TypeProbe:     {From: SenderProxy, To: DestSelf},
	TypeProbeAck:  {From: SenderProxy, To: DestSelf, Relay: true},
	TypeProbeReq:  {From: SenderProxy, To: DestSelf},
	TypeFail:      {From: SenderProxy, To: DestSelf, Relay: true},
	TypeAlive:     {From: SenderProxy, To: DestSelf, Relay: true},
	TypeMember:    {From: SenderProxy, To: DestSelf, Relay: true},
	TypeDigest:    {From: SenderProxy, To: DestSelf},
	TypeAdmitsReq: {From: SenderProxy, To: DestSelf},
	TypeAdmits:    {From: SenderProxy, To: DestSelf},
	// A revocation list is signed by the CA: anyone's copy is as good.
	TypeRevocation: {From: SenderProxy, To: DestSelf, Relay: true},
	TypeEdgeClaim:  {From: SenderProxy, To: DestSelf},
	TypeRestarted:  {From: SenderProxy, To: DestSelf},
	TypeNews:       {From: SenderProxy, To: DestSelf, Relay: true},
}

// Permit reports why a message of type t from a sender of class from, sent
// to a destination of kind to, must be refused, or nil. It is the one place
// the rules are checked. from and to are each one class and one kind; a
// sender of no class (not a proxy, not an admitted edge) and an address of
// no kind are refused.
func Permit(t Type, from Sender, to Dest) error {
	if !t.valid() {
		return fmt.Errorf("pias rules: unknown %v", t)
	}
	r := rules[t]
	if from == 0 || from&^r.From != 0 || to == 0 || to&^r.To != 0 {
		return fmt.Errorf("pias rules: %v from %v to %v refused: it goes from %v to %v", t, from, to, r.From, r.To)
	}
	return nil
}

var senderNames = [...]string{"proxy", "target", "client"}

// String names the classes in s, e.g. "target|client".
func (s Sender) String() string {
	return bitNames(uint8(s), "unknown", senderNames[:])
}

var destNames = [...]string{"self", "self6", "anycast", "edge"}

// String names the kinds in d, e.g. "self|self6".
func (d Dest) String() string {
	return bitNames(uint8(d), "another address", destNames[:])
}

func bitNames(v uint8, none string, names []string) string {
	if v == 0 {
		return none
	}
	var parts []string
	for i, n := range names {
		if v&(1<<i) != 0 {
			parts = append(parts, n)
			v &^= 1 << i
		}
	}
	if v != 0 {
		parts = append(parts, fmt.Sprintf("%#x", v))
	}
	return strings.Join(parts, "|")
}
