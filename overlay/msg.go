// Package overlay is the control plane of pias: membership, health
// monitoring, RAP hashing, joins, resolution, and the control messages
// exchanged on the control port.
package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/pias-net/pias/router"
)

// Version is the version of the control message format.
const Version = 1

// Wire format limits.
const (
	// HeaderLen is the size of the header every message starts with: magic
	// "PI", version, type, and seq.
	HeaderLen = 8
	// MaxString is the longest string a message can carry, in bytes.
	MaxString = 255
	// MaxJAPs is the most JAPs a ResolveReply can carry.
	MaxJAPs = 64
	// MaxKeys is the most edge public keys one Admits carries; a proxy that
	// admits more sends several parts.
	MaxKeys = 32
	// MaxPeers is the most proxies a Proxies can carry.
	MaxPeers = 16
	// MaxLen is the size of the longest valid message: a Proxies with
	// MaxPeers peers, each with the longest name and cluster, an IPv6
	// address, and an IPv6 endpoint. (The longest ResolveReply, with an IPv6
	// group, the longest reason, and MaxJAPs IPv6 JAPs, is maxResolveReplyLen,
	// and the longest Admits maxAdmitsLen.)
	MaxLen = HeaderLen + 4 + 1 + MaxPeers*maxPeerLen

	policyLen = 3

	maxGroupLen = 1 + 16 + 2 + 1

	maxResolveReplyLen = HeaderLen + maxGroupLen + 1 + 1 + MaxString + 4 + 1 + MaxJAPs*(1+16+4+4) + policyLen
	maxAdmitsLen       = HeaderLen + 1 + MaxString + 4 + 1 + 1 + 1 + MaxKeys*32

	// maxPeerLen is the longest record of one peer of a Proxies: name,
	// flags, cluster, IPv4 address, IPv6 address, key, IPv6 endpoint.
	maxPeerLen = 1 + MaxString + 1 + 1 + MaxString + 1 + 4 + 1 + 16 + 32 + 1 + 16 + 2
	// minPeerLen is the shortest: a one-byte name, an empty cluster, no
	// IPv6 address, an IPv4 endpoint.
	minPeerLen = 1 + 1 + 1 + 1 + 1 + 4 + 32 + 1 + 4 + 2
)

// MaxLen is at least the length of any other message.
const _ = uint(MaxLen-maxResolveReplyLen) + uint(MaxLen-maxAdmitsLen)

// magic starts every control message.
const magic0, magic1 = 'P', 'I'

// Type is the type of a control message.
type Type uint8

// Message types.
const (
	// TypeJoin: target → anycast address (delivered to its JAP): join Group.
	TypeJoin Type = 1 + iota
	// TypeJoinAck: JAP → target: the answer to a TypeJoin.
	TypeJoinAck
	// TypeLeave: target → JAP: leave Group.
	TypeLeave
	// TypeKeepalive: target → anycast address: still here.
	TypeKeepalive
	// TypeKeepaliveAck: JAP → target: the answer to a TypeKeepalive;
	// StatusUnknown means the target must join again.
	TypeKeepaliveAck
	// TypeRegister: JAP → RAP: I have Targets targets of Group.
	TypeRegister
	// TypeResolve: IAP → RAP: which JAPs serve Group?
	TypeResolve
	// TypeResolveReply: RAP → IAP: the answer to a TypeResolve.
	TypeResolveReply
	// TypeProbe: proxy → proxy: are you alive? Seq is the nonce; Name and
	// Incarnation are the sender's.
	TypeProbe
	// TypeProbeAck: the answer to a TypeProbe (Seq echoed); Name and
	// Incarnation are the probed proxy's. A helper forwards it to whoever
	// asked it to probe with a TypeProbeReq.
	TypeProbeAck
	// TypeProbeReq: proxy → proxy: probe the proxy Name for me and send me
	// its TypeProbeAck with this Seq (SWIM's ping-req: confirms a suspicion).
	TypeProbeReq
	// TypeFail: proxy → proxies: proxy Name, incarnation Incarnation, is dead.
	TypeFail
	// TypeAlive: proxy → proxies: proxy Name is alive at Incarnation (a
	// start, or a refutation of a TypeFail).
	TypeAlive
	// TypeMoved: JAP → proxies: the target at Target (Name) has joined
	// Group through me; a proxy that still holds it drops it at once (the
	// target left it, perhaps without being able to say so).
	TypeMoved
	// TypeNoTarget: JAP → IAP: I have no target for Group any more; forget
	// me for it and resolve again.
	TypeNoTarget
	// TypeMember: proxy → proxy: the proxy Name (Peer: its addresses,
	// cluster, WireGuard key and endpoint; Incarnation) is a member of the
	// overlay. Flags say whether the sender believes it dead, and whether
	// this is the sync a newcomer gets (see members.go).
	TypeMember
	// TypePolicy: RAP → JAP: Group has Policy (its JAPs that registered
	// first said so); the JAP's targets of Group that stated another were
	// not registered, and the JAP refuses them.
	TypePolicy
	// TypeDigest: proxy → proxy: Incarnation is a hash of every proxy the
	// sender knows (anti-entropy); a proxy that knows others sends it its
	// whole list (TypeMember, MemberSync). Seq 1 marks an answer to one.
	TypeDigest
	// TypeAdmitsReq: proxy → proxy: send me the WireGuard public keys of the
	// edges your file admits (TypeAdmits). Name and Incarnation are the
	// asker's.
	TypeAdmitsReq
	// TypeAdmits: proxy → proxy: part Part of Parts (counted from 0) of the
	// list of WireGuard public keys (Keys) of the edges that the proxy Name,
	// at Incarnation, admits. A proxy that admits no edge sends one part
	// with no keys.
	TypeAdmits
	// TypeProxiesReq: edge → proxy: which live proxies would admit me?
	// Incarnation is the digest of the proxy list the edge got last (0 if
	// none); there is no name.
	TypeProxiesReq
	// TypeProxies: proxy → edge: the answer to a TypeProxiesReq: Peers, the
	// live proxies that would admit the edge, and Incarnation, the digest of
	// that list. No peers means the list has not changed since the digest
	// the edge sent.
	TypeProxies

	typeEnd // one past the last type
)

var typeNames = [...]string{
	TypeJoin:         "join",
	TypeJoinAck:      "join-ack",
	TypeLeave:        "leave",
	TypeKeepalive:    "keepalive",
	TypeKeepaliveAck: "keepalive-ack",
	TypeRegister:     "register",
	TypeResolve:      "resolve",
	TypeResolveReply: "resolve-reply",
	TypeProbe:        "probe",
	TypeProbeAck:     "probe-ack",
	TypeProbeReq:     "probe-req",
	TypeFail:         "fail",
	TypeAlive:        "alive",
	TypeMoved:        "moved",
	TypeNoTarget:     "no-target",
	TypeMember:       "member",
	TypePolicy:       "policy",
	TypeDigest:       "digest",
	TypeAdmitsReq:    "admits-req",
	TypeAdmits:       "admits",
	TypeProxiesReq:   "proxies-req",
	TypeProxies:      "proxies",
}

// String names t, e.g. "join-ack".
func (t Type) String() string {
	if t.valid() {
		return typeNames[t]
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

func (t Type) valid() bool { return t >= TypeJoin && t < typeEnd }

// Status is the outcome carried by acks and resolve replies.
type Status uint8

// Statuses.
const (
	// StatusOK: done.
	StatusOK Status = iota
	// StatusUnknown: the proxy does not know this target (re-register), or
	// the RAP knows no JAP for this group.
	StatusUnknown
	// StatusRefused: the proxy will not do it; Reason says why.
	StatusRefused

	statusEnd
)

// String names s, e.g. "refused".
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusUnknown:
		return "unknown"
	case StatusRefused:
		return "refused"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// Message is a control message. Only the fields meaningful for its Type are
// encoded; the others are ignored by AppendBinary and zero after
// UnmarshalBinary.
//
// Wire format (integers big-endian):
//
//	header   "PI" version:u8 type:u8 seq:u32
//	group    addr port:u16 proto:u8
//	addr     family:u8 (4 or 6) then 4 or 16 bytes
//	string   length:u8 then that many bytes of UTF-8
//
//	policy   select:u8 replicate:u8 scope:u8 (router.Policy)
//
//	Join          group port:u16 name:string incarnation:u32 policy weight:u32 keepalive_ms:u32
//	JoinAck       group status:u8 reason:string
//	Leave         group port:u16
//	Keepalive     group port:u16
//	KeepaliveAck  group status:u8 reason:string
//	Register      group name:string targets:u32 ttl_ms:u32 policy weight:u32
//	Resolve       group hops:u16 (in Port: 1 when a proxy asks for another)
//	ResolveReply  group status:u8 reason:string ttl_ms:u32 n:u8 n×(addr targets:u32 weight:u32) policy
//	Policy        group policy
//
// The messages between proxies about proxies, and those between an edge and
// a proxy about proxies, carry no group:
//
//	peer     flags:u8 cluster:string addr4 [addr6 if flags&MemberHas6]
//	         key:32 bytes endpoint:addr port:u16
//
//	Probe, ProbeAck, ProbeReq, Fail, Alive, Digest, AdmitsReq   name:string incarnation:u32
//	Member      name:string incarnation:u32 peer
//	Admits      name:string incarnation:u32 part:u8 parts:u8 n:u8 n×(key:32 bytes)
//	ProxiesReq  incarnation:u32
//	Proxies     incarnation:u32 n:u8 n×(name:string peer)
//
// An Admits has 1 ≤ parts, part < parts, and n ≤ MaxKeys; a Proxies has n ≤
// MaxPeers, names that are not empty, and no peer flag but MemberHas6.
type Message struct {
	Type    Type
	Seq     uint32       // matches replies to requests
	Group   router.Group // all types but those listed above without one (zero there)
	Port    uint16       // Join, Leave, Keepalive: the target's local service port; Resolve: hops
	Name    string       // Join: the target's name (logs); Register: the JAP's name
	Status  Status       // JoinAck, KeepaliveAck, ResolveReply
	Reason  string       // JoinAck, KeepaliveAck, ResolveReply: why (with StatusRefused)
	Targets uint32       // Register: targets the JAP has for Group (0 withdraws)
	// TTL is, in a Register, how long the RAP keeps it; in a ResolveReply,
	// how long the IAP may cache it. It travels in whole milliseconds
	// (truncated), at most math.MaxUint32 of them.
	TTL  time.Duration
	JAPs []router.JAP // ResolveReply: at most MaxJAPs, Targets in [0, MaxUint32]
	// Incarnation: health messages: the incarnation of the proxy Name.
	// TypeJoin and TypeMoved: the target's join epoch, which grows with each
	// join, so that of two proxies holding one target the later join wins.
	// TypeProxiesReq, TypeProxies: the digest of a proxy list.
	Incarnation uint32
	// Target: TypeMoved: the overlay address of the target that moved.
	Target netip.Addr
	// Peer: TypeMember: the member (its Name is the message's Name).
	Peer Member
	// Policy: Join: the group's policy as the target's file states it;
	// Register, ResolveReply: the group's policy as the JAP (RAP) has it.
	Policy router.Policy
	// Weight: Join: the target's weight (1..MaxWeight); Register: the sum
	// of the weights of the JAP's targets of Group.
	Weight uint32
	// Keepalive: Join: how often the target sends keepalives (the JAP drops
	// it after a few missed); whole milliseconds on the wire.
	Keepalive time.Duration
	// Flags: TypeMember: MemberDead, MemberSync (MemberHas6 is set by the
	// codec from Peer.Addr6).
	Flags uint8
	// Part, Parts: TypeAdmits: this is part Part, counted from 0, of Parts
	// (1 ≤ Parts, Part < Parts).
	Part, Parts uint8
	// Keys: TypeAdmits: WireGuard public keys of edges the proxy Name
	// admits, at most MaxKeys (nil after UnmarshalBinary when none).
	Keys [][32]byte
	// Peers: TypeProxies: the proxies that would admit the edge, at most
	// MaxPeers, each with a name (nil after UnmarshalBinary when none). On
	// the wire a peer's flags are MemberHas6 when its Addr6 is set, else 0.
	Peers []Member
}

// TypeMember flags.
const (
	MemberHas6  uint8 = 1 << iota // Peer.Addr6 follows
	MemberDead                    // the sender believes the member dead
	MemberSync                    // sent to a newcomer (or a proxy back from the dead): contact it
	memberFlags = MemberHas6 | MemberDead | MemberSync
)

// fields says which optional fields a type carries.
type fields uint16

const (
	fPort fields = 1 << iota
	fName
	fStatus // and Reason
	fRegister
	fResolveReply
	fNoGroup     // health messages: no group
	fIncarnation // health messages
	fTarget      // a target's overlay address
	fMember      // a proxy's record
	fPolicy      // a group's policy and a weight
	fKeepalive   // a target's keepalive interval
	fKeys        // part of a proxy's list of admitted edge keys
	fPeers       // a list of proxies' records
)

// MaxWeight is the largest weight of one target.
const MaxWeight = router.MaxWeight

const fHealth = fNoGroup | fName | fIncarnation

var typeFields = [...]fields{
	TypeJoin:         fPort | fName | fIncarnation | fPolicy | fKeepalive,
	TypeJoinAck:      fStatus,
	TypeLeave:        fPort,
	TypeKeepalive:    fPort,
	TypeKeepaliveAck: fStatus,
	TypeRegister:     fName | fRegister | fPolicy,
	TypeResolve:      fPort,
	TypeResolveReply: fStatus | fResolveReply | fPolicy,
	TypeProbe:        fHealth,
	TypeProbeAck:     fHealth,
	TypeProbeReq:     fHealth,
	TypeFail:         fHealth,
	TypeAlive:        fHealth,
	TypeMoved:        fName | fTarget | fIncarnation,
	TypeNoTarget:     0,
	TypeMember:       fNoGroup | fName | fIncarnation | fMember,
	TypePolicy:       fPolicy,
	TypeDigest:       fNoGroup | fName | fIncarnation,
	TypeAdmitsReq:    fHealth,
	TypeAdmits:       fHealth | fKeys,
	TypeProxiesReq:   fNoGroup | fIncarnation,
	TypeProxies:      fNoGroup | fIncarnation | fPeers,
}

// MarshalBinary encodes m into a new slice.
func (m *Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, 64))
}

// AppendBinary appends the encoding of m to b. It fails, returning b as it
// was, when m cannot be encoded: unknown type or status, an invalid group, a
// string too long or not UTF-8, a TTL out of range, too many or invalid
// JAPs, keys, or peers, or parts out of range.
func (m *Message) AppendBinary(b []byte) ([]byte, error) {
	if !m.Type.valid() {
		return b, fmt.Errorf("pias message: cannot encode unknown %v", m.Type)
	}
	f := typeFields[m.Type]
	if f&fNoGroup != 0 {
		if m.Group != (router.Group{}) {
			return b, fmt.Errorf("pias message: cannot encode %v: it carries no group", m.Type)
		}
	} else if err := checkGroup(m.Group); err != nil {
		return b, fmt.Errorf("pias message: cannot encode %v: %v", m.Type, err)
	}
	orig := b
	fail := func(format string, args ...any) ([]byte, error) {
		return orig, fmt.Errorf("pias message: cannot encode %v for %v: %s", m.Type, m.Group, fmt.Sprintf(format, args...))
	}
	b = append(b, magic0, magic1, Version, byte(m.Type))
	b = binary.BigEndian.AppendUint32(b, m.Seq)
	if f&fNoGroup == 0 {
		b = appendAddr(b, m.Group.Addr)
		b = binary.BigEndian.AppendUint16(b, m.Group.Port)
		b = append(b, m.Group.Proto)
	}
	if f&fPort != 0 {
		b = binary.BigEndian.AppendUint16(b, m.Port)
	}
	if f&fName != 0 {
		if err := checkString(m.Name); err != nil {
			return fail("name: %v", err)
		}
		b = appendString(b, m.Name)
	}
	if f&fStatus != 0 {
		if m.Status >= statusEnd {
			return fail("unknown %v", m.Status)
		}
		if err := checkString(m.Reason); err != nil {
			return fail("reason: %v", err)
		}
		b = append(b, byte(m.Status))
		b = appendString(b, m.Reason)
	}
	if f&(fRegister|fResolveReply) != 0 {
		ms, err := ttlMillis(m.TTL)
		if err != nil {
			return fail("%v", err)
		}
		if f&fRegister != 0 {
			b = binary.BigEndian.AppendUint32(b, m.Targets)
		}
		b = binary.BigEndian.AppendUint32(b, ms)
	}
	if f&fResolveReply != 0 {
		if len(m.JAPs) > MaxJAPs {
			return fail("%d JAPs, at most %d fit", len(m.JAPs), MaxJAPs)
		}
		b = append(b, byte(len(m.JAPs)))
		for i, j := range m.JAPs {
			if err := checkAddr(j.Addr); err != nil {
				return fail("JAP %d: %v", i, err)
			}
			if j.Targets < 0 || uint64(j.Targets) > math.MaxUint32 {
				return fail("JAP %v: target count %d out of range", j.Addr, j.Targets)
			}
			if j.Weight < 0 || uint64(j.Weight) > math.MaxUint32 {
				return fail("JAP %v: weight %d out of range", j.Addr, j.Weight)
			}
			b = appendAddr(b, j.Addr)
			b = binary.BigEndian.AppendUint32(b, uint32(j.Targets))
			b = binary.BigEndian.AppendUint32(b, uint32(j.Weight))
		}
	}
	if f&fIncarnation != 0 {
		b = binary.BigEndian.AppendUint32(b, m.Incarnation)
	}
	if f&fTarget != 0 {
		if err := checkAddr(m.Target); err != nil {
			return fail("target: %v", err)
		}
		b = appendAddr(b, m.Target)
	}
	if f&fMember != 0 {
		var err error
		if b, err = appendMember(b, m); err != nil {
			return fail("%v", err)
		}
	}
	if f&fKeys != 0 {
		if err := checkParts(m.Part, m.Parts); err != nil {
			return fail("%v", err)
		}
		if len(m.Keys) > MaxKeys {
			return fail("%d keys, at most %d fit", len(m.Keys), MaxKeys)
		}
		b = append(b, m.Part, m.Parts, byte(len(m.Keys)))
		for _, k := range m.Keys {
			b = append(b, k[:]...)
		}
	}
	if f&fPeers != 0 {
		if len(m.Peers) > MaxPeers {
			return fail("%d peers, at most %d fit", len(m.Peers), MaxPeers)
		}
		b = append(b, byte(len(m.Peers)))
		for i := range m.Peers {
			pr := &m.Peers[i]
			if err := checkPeerName(pr.Name); err != nil {
				return fail("peer %d: %v", i, err)
			}
			b = appendString(b, pr.Name)
			var err error
			if b, err = appendPeer(b, 0, pr); err != nil {
				return fail("peer %d (%s): %v", i, pr.Name, err)
			}
		}
	}
	if f&fPolicy != 0 {
		if err := checkPolicy(m.Policy); err != nil {
			return fail("%v", err)
		}
		b = append(b, byte(m.Policy.Select), byte(m.Policy.Replicate), byte(m.Policy.Scope))
		if m.Type == TypeJoin && (m.Weight < 1 || m.Weight > MaxWeight) {
			return fail("weight %d: want 1..%d", m.Weight, MaxWeight)
		}
		if m.Type == TypeJoin || m.Type == TypeRegister {
			b = binary.BigEndian.AppendUint32(b, m.Weight)
		}
	}
	if f&fKeepalive != 0 {
		ms, err := ttlMillis(m.Keepalive)
		if err != nil {
			return fail("keepalive: %v", err)
		}
		b = binary.BigEndian.AppendUint32(b, ms)
	}
	return b, nil
}

// checkPolicy reports whether p can be encoded.
func checkPolicy(p router.Policy) error {
	switch {
	case p.Select > router.SelectAffinity:
		return fmt.Errorf("unknown %v", p.Select)
	case p.Scope > router.ScopeSameCluster:
		return fmt.Errorf("unknown %v", p.Scope)
	case p.Replicate < 0 || p.Replicate > router.MaxReplicate:
		return fmt.Errorf("replicate %d: want 0..%d", p.Replicate, router.MaxReplicate)
	}
	return nil
}

// UnmarshalBinary decodes b, which must be exactly one message, into m. It
// is strict: every byte sequence it accepts is the one AppendBinary makes of
// the result. On error m is left unchanged.
func (m *Message) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	if len(b) < HeaderLen {
		if len(b) >= 2 && (b[0] != magic0 || b[1] != magic1) {
			return errors.New("pias message: bad magic")
		}
		return fmt.Errorf("pias message: truncated header (%d bytes)", len(b))
	}
	if b[0] != magic0 || b[1] != magic1 {
		return errors.New("pias message: bad magic")
	}
	if b[2] != Version {
		return fmt.Errorf("pias message: unknown version %d (want %d)", b[2], Version)
	}
	var n Message
	n.Type = Type(b[3])
	if !n.Type.valid() {
		return fmt.Errorf("pias message: unknown %v", n.Type)
	}
	n.Seq = binary.BigEndian.Uint32(b[4:])
	d.b = b[HeaderLen:]
	d.what = n.Type.String()

	f := typeFields[n.Type]
	if f&fNoGroup == 0 {
		n.Group.Addr = d.addr("group address family", "group address")
		n.Group.Port = d.u16("group port")
		n.Group.Proto = d.u8("group protocol")
		if d.err == nil {
			if err := checkGroup(n.Group); err != nil {
				d.fail(err)
			}
		}
	}
	if f&fPort != 0 {
		n.Port = d.u16("port")
	}
	if f&fName != 0 {
		n.Name = d.str("name length", "name")
	}
	if f&fStatus != 0 {
		n.Status = Status(d.u8("status"))
		if d.err == nil && n.Status >= statusEnd {
			d.fail(fmt.Errorf("unknown %v", n.Status))
		}
		n.Reason = d.str("reason length", "reason")
	}
	if f&fRegister != 0 {
		n.Targets = d.u32("target count")
	}
	if f&(fRegister|fResolveReply) != 0 {
		n.TTL = time.Duration(d.u32("ttl")) * time.Millisecond
	}
	if f&fResolveReply != 0 {
		count := int(d.u8("JAP count"))
		if d.err == nil && count > MaxJAPs {
			d.fail(fmt.Errorf("%d JAPs, at most %d allowed", count, MaxJAPs))
		}
		if d.err == nil && count > 0 {
			n.JAPs = make([]router.JAP, 0, min(count, len(d.b)/(1+4+4)))
			for i := 0; i < count && d.err == nil; i++ {
				a := d.addr("JAP address family", "JAP address")
				t := d.u32("JAP target count")
				w := d.u32("JAP weight")
				if uint64(t) > math.MaxInt || uint64(w) > math.MaxInt {
					d.fail(fmt.Errorf("JAP %v: target count %d or weight %d does not fit an int", a, t, w))
				}
				n.JAPs = append(n.JAPs, router.JAP{Addr: a, Targets: int(t), Weight: int(w)})
			}
		}
	}
	if f&fIncarnation != 0 {
		n.Incarnation = d.u32("incarnation")
	}
	if f&fTarget != 0 {
		n.Target = d.addr("target address family", "target address")
	}
	if f&fMember != 0 {
		n.Flags, n.Peer = d.peer(memberFlags)
		n.Peer.Name = n.Name
	}
	if f&fKeys != 0 {
		n.Part = d.u8("part")
		n.Parts = d.u8("parts")
		if d.err == nil {
			if err := checkParts(n.Part, n.Parts); err != nil {
				d.fail(err)
			}
		}
		count := int(d.u8("key count"))
		if d.err == nil && count > MaxKeys {
			d.fail(fmt.Errorf("%d keys, at most %d allowed", count, MaxKeys))
		}
		if p := d.take(count*32, "keys"); d.err == nil && count > 0 {
			n.Keys = make([][32]byte, count)
			for i := range n.Keys {
				n.Keys[i] = [32]byte(p[i*32:])
			}
		}
	}
	if f&fPeers != 0 {
		count := int(d.u8("peer count"))
		if d.err == nil && count > MaxPeers {
			d.fail(fmt.Errorf("%d peers, at most %d allowed", count, MaxPeers))
		}
		if d.err == nil && count > 0 {
			n.Peers = make([]Member, 0, min(count, len(d.b)/minPeerLen))
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
				n.Peers = append(n.Peers, pr)
			}
		}
	}
	if f&fPolicy != 0 {
		n.Policy = router.Policy{Select: router.Select(d.u8("select")), Replicate: int(d.u8("replicate")), Scope: router.Scope(d.u8("scope"))}
		if d.err == nil {
			if err := checkPolicy(n.Policy); err != nil {
				d.fail(err)
			}
		}
		if n.Type == TypeJoin || n.Type == TypeRegister {
			n.Weight = d.u32("weight")
			if d.err == nil && n.Type == TypeJoin && (n.Weight < 1 || n.Weight > MaxWeight) {
				d.fail(fmt.Errorf("weight %d: want 1..%d", n.Weight, MaxWeight))
			}
		}
	}
	if f&fKeepalive != 0 {
		n.Keepalive = time.Duration(d.u32("keepalive")) * time.Millisecond
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return fmt.Errorf("pias message: %s: %v", d.what, d.err)
	}
	*m = n
	return nil
}

// decoder reads fields off b until the first error, after which every read
// returns zero.
type decoder struct {
	b    []byte
	what string
	err  error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) take(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("truncated %s", field)
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8(field string) uint8 {
	if p := d.take(1, field); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16(field string) uint16 {
	if p := d.take(2, field); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32(field string) uint32 {
	if p := d.take(4, field); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) addr(famField, field string) netip.Addr {
	switch fam := d.u8(famField); {
	case d.err != nil:
	case fam == 4:
		if p := d.take(4, field); p != nil {
			return netip.AddrFrom4([4]byte(p))
		}
	case fam == 6:
		if p := d.take(16, field); p != nil {
			a := netip.AddrFrom16([16]byte(p))
			if a.Is4In6() {
				d.fail(fmt.Errorf("%s %v: IPv4-mapped IPv6 (send it as family 4)", field, a))
				return netip.Addr{}
			}
			return a
		}
	default:
		d.fail(fmt.Errorf("%s: invalid address family %d", field, fam))
	}
	return netip.Addr{}
}

func (d *decoder) str(lenField, field string) string {
	n := int(d.u8(lenField))
	p := d.take(n, field)
	if d.err != nil {
		return ""
	}
	if !utf8.Valid(p) {
		d.fail(fmt.Errorf("%s is not UTF-8", field))
		return ""
	}
	return string(p)
}

// checkAddr reports whether a can be encoded: a valid IPv4 or IPv6 address
// without zone that is not IPv4-mapped.
func checkAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("invalid address")
	case a.Zone() != "":
		return fmt.Errorf("address %v has a zone", a)
	case a.Is4In6():
		return fmt.Errorf("address %v is IPv4-mapped IPv6", a)
	}
	return nil
}

// checkGroup reports whether g is a group a message may carry: a TCP or UDP
// service port, or the echo pseudo-group of its address.
func checkGroup(g router.Group) error {
	if err := checkAddr(g.Addr); err != nil {
		return fmt.Errorf("group: %v", err)
	}
	switch g.Proto {
	case router.ProtoTCP, router.ProtoUDP:
		if g.Port == 0 {
			return fmt.Errorf("group %v: port 0 is not a service port", g)
		}
	case router.ProtoICMP, router.ProtoICMPv6:
		if g != router.EchoGroup(g.Addr) {
			return fmt.Errorf("group %v: an echo group needs port 0 and icmp with IPv4, icmpv6 with IPv6", g)
		}
	default:
		return fmt.Errorf("group %v: protocol %d is not tcp, udp, or echo", g, g.Proto)
	}
	return nil
}

func checkString(s string) error {
	if len(s) > MaxString {
		return fmt.Errorf("%d bytes long, at most %d fit", len(s), MaxString)
	}
	if !utf8.ValidString(s) {
		return errors.New("not UTF-8")
	}
	return nil
}

func ttlMillis(d time.Duration) (uint32, error) {
	ms := d.Milliseconds()
	if d < 0 || ms > math.MaxUint32 {
		return 0, fmt.Errorf("ttl %v out of range [0, %v]", d, time.Duration(math.MaxUint32)*time.Millisecond)
	}
	return uint32(ms), nil
}

// appendAddr appends a, which checkAddr accepted.
func appendAddr(b []byte, a netip.Addr) []byte {
	if a.Is4() {
		a4 := a.As4()
		return append(append(b, 4), a4[:]...)
	}
	a16 := a.As16()
	return append(append(b, 6), a16[:]...)
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// checkParts reports whether part of parts is a part of an Admits.
func checkParts(part, parts uint8) error {
	switch {
	case parts == 0:
		return errors.New("0 parts, want at least 1")
	case part >= parts:
		return fmt.Errorf("part %d of %d parts (parts count from 0)", part, parts)
	}
	return nil
}

// checkPeerName reports whether s can be the name of a peer of a Proxies.
func checkPeerName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	if err := checkString(s); err != nil {
		return fmt.Errorf("name: %v", err)
	}
	return nil
}

// appendMember appends the fMember part of a TypeMember.
func appendMember(b []byte, m *Message) ([]byte, error) {
	if m.Flags&^memberFlags != 0 {
		return b, fmt.Errorf("unknown flags %#x", m.Flags&^memberFlags)
	}
	return appendPeer(b, m.Flags, &m.Peer)
}

// appendPeer appends the record of pr (not its name) with flags, in which
// it sets MemberHas6 from pr.Addr6.
func appendPeer(b []byte, flags uint8, pr *Member) ([]byte, error) {
	if err := checkString(pr.Cluster); err != nil {
		return b, fmt.Errorf("cluster: %v", err)
	}
	if !pr.Addr.Is4() {
		return b, fmt.Errorf("member address %v is not IPv4", pr.Addr)
	}
	if pr.Addr6.IsValid() && (!pr.Addr6.Is6() || pr.Addr6.Is4In6() || pr.Addr6.Zone() != "") {
		return b, fmt.Errorf("member IPv6 address %v is not plain IPv6", pr.Addr6)
	}
	if err := checkAddr(pr.Endpoint.Addr()); err != nil || pr.Endpoint.Port() == 0 {
		return b, fmt.Errorf("endpoint %v is not IP:PORT", pr.Endpoint)
	}
	flags &^= MemberHas6
	if pr.Addr6.IsValid() {
		flags |= MemberHas6
	}
	b = append(b, flags)
	b = appendString(b, pr.Cluster)
	b = appendAddr(b, pr.Addr)
	if pr.Addr6.IsValid() {
		b = appendAddr(b, pr.Addr6)
	}
	b = append(b, pr.PublicKey[:]...)
	b = appendAddr(b, pr.Endpoint.Addr())
	return binary.BigEndian.AppendUint16(b, pr.Endpoint.Port()), nil
}

// peer reads a record appendPeer wrote, whose flags may only be those in
// allowed, and returns its flags and the member (without a name).
func (d *decoder) peer(allowed uint8) (flags uint8, pr Member) {
	flags = d.u8("member flags")
	if d.err == nil && flags&^allowed != 0 {
		d.fail(fmt.Errorf("unknown member flags %#x", flags&^allowed))
	}
	pr.Cluster = d.str("cluster length", "cluster")
	pr.Addr = d.addr("member address family", "member address")
	if d.err == nil && !pr.Addr.Is4() {
		d.fail(fmt.Errorf("member address %v is not IPv4", pr.Addr))
	}
	if flags&MemberHas6 != 0 {
		pr.Addr6 = d.addr("member IPv6 address family", "member IPv6 address")
		if d.err == nil && !pr.Addr6.Is6() {
			d.fail(fmt.Errorf("member IPv6 address %v is not IPv6", pr.Addr6))
		}
	}
	copy(pr.PublicKey[:], d.take(32, "public key"))
	ep := d.addr("endpoint family", "endpoint")
	port := d.u16("endpoint port")
	if d.err == nil && port == 0 {
		d.fail(errors.New("endpoint port 0"))
	}
	pr.Endpoint = netip.AddrPortFrom(ep, port)
	return flags, pr
}
