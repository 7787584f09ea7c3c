package overlay

// The messages between an edge and a proxy: a target's membership of its
// groups (at the group's anycast address, so that its JAP is whichever
// proxy anycast reaches), and the proxies an edge may attach to.

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/pias-net/pias/router"
)

// Join: target → the group's anycast address (so to its JAP): join Group.
// Answered by a JoinAck.
//
//	group port:u16 name:string epoch:u32 policy weight:u32 keepalive_ms:u32
type Join struct {
	Group router.Group
	Port  uint16 // the target's local service port
	Name  string // the target's name (logs)
	// Epoch grows with each join of the target, so that of two proxies
	// holding it the later join wins (see Moved).
	Epoch  uint32
	Policy router.Policy // the group's policy as the target's file states it
	Weight uint32        // the target's share of load, 1..MaxWeight
	// Keepalive is how often the target sends keepalives (the JAP drops it
	// after a few missed); whole milliseconds on the wire.
	Keepalive time.Duration
}

func (*Join) Type() Type            { return TypeJoin }
func (m *Join) group() router.Group { return m.Group }

func (m *Join) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	if err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint16(b, m.Port)
	if b, err = appendStr(b, "name", m.Name); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint32(b, m.Epoch)
	if b, err = appendPolicy(b, m.Policy); err != nil {
		return b, err
	}
	if m.Weight < 1 || m.Weight > MaxWeight {
		return b, fmt.Errorf("weight %d: want 1..%d", m.Weight, MaxWeight)
	}
	b = binary.BigEndian.AppendUint32(b, m.Weight)
	return appendMillis(b, "keepalive", m.Keepalive)
}

func decodeJoin(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &Join{Group: d.group(), Port: d.u16("port"), Name: d.str("name length", "name"), Epoch: d.u32("epoch"), Policy: d.policy()}
	m.Weight = d.u32("weight")
	if d.err == nil && (m.Weight < 1 || m.Weight > MaxWeight) {
		d.fail(fmt.Errorf("weight %d: want 1..%d", m.Weight, MaxWeight))
	}
	m.Keepalive = d.millis("keepalive")
	return d.end(m)
}

// JoinAck: JAP → target: the answer to a Join, and to a Leave sent to the
// group's anycast address.
//
//	group status:u8 reason:string
type JoinAck struct {
	Group  router.Group
	Status Status // StatusOK or StatusRefused
	Reason string // why, with StatusRefused
}

func (*JoinAck) Type() Type            { return TypeJoinAck }
func (m *JoinAck) group() router.Group { return m.Group }

func (m *JoinAck) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	if err != nil {
		return b, err
	}
	return appendOutcome(b, m.Status, m.Reason)
}

func decodeJoinAck(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &JoinAck{Group: d.group()}
	m.Status, m.Reason = d.outcome()
	return d.end(m)
}

// Leave: target → JAP: leave Group. At the group's anycast address (a
// target that stops) it is answered by a JoinAck; at the JAP's own address
// (a target that moved away tells its old JAP) it is not.
//
//	group port:u16
type Leave struct {
	Group router.Group
	Port  uint16 // the target's local service port
}

func (*Leave) Type() Type            { return TypeLeave }
func (m *Leave) group() router.Group { return m.Group }

func (m *Leave) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	return binary.BigEndian.AppendUint16(b, m.Port), err
}

func decodeLeave(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&Leave{Group: d.group(), Port: d.u16("port")})
}

// Keepalive: target → the group's anycast address: still here. Answered by
// a KeepaliveAck.
//
//	group port:u16
type Keepalive struct {
	Group router.Group
	Port  uint16 // the target's local service port
}

func (*Keepalive) Type() Type            { return TypeKeepalive }
func (m *Keepalive) group() router.Group { return m.Group }

func (m *Keepalive) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	return binary.BigEndian.AppendUint16(b, m.Port), err
}

func decodeKeepalive(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&Keepalive{Group: d.group(), Port: d.u16("port")})
}

// KeepaliveAck: JAP → target: the answer to a Keepalive. StatusUnknown
// means the proxy that heard it does not know the target, which must join
// it.
//
//	group status:u8 reason:string
type KeepaliveAck struct {
	Group  router.Group
	Status Status
	Reason string // why, with StatusRefused
}

func (*KeepaliveAck) Type() Type            { return TypeKeepaliveAck }
func (m *KeepaliveAck) group() router.Group { return m.Group }

func (m *KeepaliveAck) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	if err != nil {
		return b, err
	}
	return appendOutcome(b, m.Status, m.Reason)
}

func decodeKeepaliveAck(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &KeepaliveAck{Group: d.group()}
	m.Status, m.Reason = d.outcome()
	return d.end(m)
}

// Drain: target → the group's anycast address (so to its JAP): take me out
// of Group's selection for new flows, and let my live flows finish; drop
// them after Timeout. The JAP keeps the target (and its keepalives) until
// its flows reach zero or the timeout passes, then drops it; a Join ends
// the drain. A target repeats it in place of its keepalives, and each
// DrainAck says how many flows are left. Answered by a DrainAck.
//
//	group port:u16 timeout_ms:u32
type Drain struct {
	Group router.Group
	Port  uint16 // the target's local service port
	// Timeout: how long the live flows may take to finish; 0 is the
	// JAP's default (DefaultDrainTimeout). The JAP holds it to at most
	// MaxDrainTimeout, and to the first Drain's: a repeat does not extend it.
	Timeout time.Duration
}

func (*Drain) Type() Type            { return TypeDrain }
func (m *Drain) group() router.Group { return m.Group }

func (m *Drain) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	if err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint16(b, m.Port)
	return appendMillis(b, "timeout", m.Timeout)
}

func decodeDrain(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&Drain{Group: d.group(), Port: d.u16("port"), Timeout: d.millis("timeout")})
}

// DrainAck: JAP → target: the answer to a Drain. StatusOK: the target is
// draining here with Flows live flows; Flows 0 means it is drained (the
// JAP dropped it). StatusUnknown: the JAP does not hold the target (it was
// drained, or never joined here): drained too. StatusRefused: Reason says
// why (too fast).
//
//	group status:u8 reason:string flows:u32
type DrainAck struct {
	Group  router.Group
	Status Status
	Reason string
	Flows  uint32
}

func (*DrainAck) Type() Type            { return TypeDrainAck }
func (m *DrainAck) group() router.Group { return m.Group }

func (m *DrainAck) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	if err != nil {
		return b, err
	}
	if b, err = appendOutcome(b, m.Status, m.Reason); err != nil {
		return b, err
	}
	return binary.BigEndian.AppendUint32(b, m.Flows), nil
}

func decodeDrainAck(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &DrainAck{Group: d.group()}
	m.Status, m.Reason = d.outcome()
	m.Flows = d.u32("flows")
	return d.end(m)
}

// ProxiesReq: edge → proxy, at its address of the edge's family: which
// live proxies would admit me? Answered by a Proxies.
//
//	digest:u32
type ProxiesReq struct {
	Digest uint32 // of the proxy list the edge got last; 0 if none
}

func (*ProxiesReq) Type() Type { return TypeProxiesReq }

func (m *ProxiesReq) appendBody(b []byte) ([]byte, error) {
	return binary.BigEndian.AppendUint32(b, m.Digest), nil
}

func decodeProxiesReq(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&ProxiesReq{Digest: d.u32("digest")})
}

// Proxies: proxy → edge: the answer to a ProxiesReq.
//
//	digest:u32 n:u8 n×(name:string peer)
//
// n ≤ MaxPeers, names are not empty, and a peer's only flag is MemberHas6.
type Proxies struct {
	Digest uint32 // of this list
	// Peers are the live proxies that would admit the edge, each with a
	// name; none (nil after ParseMsg) means the list is still the one
	// whose digest the edge sent.
	Peers []Member
}

func (*Proxies) Type() Type { return TypeProxies }

func (m *Proxies) appendBody(b []byte) ([]byte, error) {
	if len(m.Peers) > MaxPeers {
		return b, fmt.Errorf("%d peers, at most %d fit", len(m.Peers), MaxPeers)
	}
	b = binary.BigEndian.AppendUint32(b, m.Digest)
	b = append(b, byte(len(m.Peers)))
	for i := range m.Peers {
		pr := &m.Peers[i]
		if err := checkPeerName(pr.Name); err != nil {
			return b, fmt.Errorf("peer %d: %v", i, err)
		}
		b = appendString(b, pr.Name)
		var err error
		if b, err = appendPeer(b, 0, pr); err != nil {
			return b, fmt.Errorf("peer %d (%q): %v", i, pr.Name, err)
		}
	}
	return b, nil
}

func decodeProxies(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &Proxies{Digest: d.u32("digest")}
	count := int(d.u8("peer count"))
	if d.err == nil && count > MaxPeers {
		d.fail(fmt.Errorf("%d peers, at most %d allowed", count, MaxPeers))
	}
	if d.err != nil || count == 0 {
		return d.end(m)
	}
	m.Peers = make([]Member, 0, min(count, len(d.b)/minPeerLen))
	for i := 0; i < count && d.err == nil; i++ {
		name := d.str("peer name length", "peer name")
		if d.err == nil {
			if err := checkPeerName(name); err != nil {
				d.fail(err)
			}
		}
		_, pr := d.peer(MemberHas6)
		pr.Name = name
		if d.err != nil {
			d.err = fmt.Errorf("peer %d: %w", i, d.err)
		}
		m.Peers = append(m.Peers, pr)
	}
	return d.end(m)
}
