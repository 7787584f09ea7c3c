package overlay

// The parts of the control messages' wire format that every type shares:
// types, statuses, limits, and the field codecs (see wire.go).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"unicode/utf8"

	"github.com/pias-net/pias/router"
)

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
	// TypeMoved: JAP → proxies: these targets have joined their groups
	// through me; a proxy that still holds one drops it at once (the
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
	// TypeDrain: target → anycast address (its JAP): take me out of
	// Group's selection for new flows and let my flows finish.
	TypeDrain
	// TypeDrainAck: JAP → target: the answer to a TypeDrain, with the
	// target's live flows.
	TypeDrainAck
	// TypeRevocation: proxy → proxy: part Part of Parts of the CA's
	// revocation list of serial Serial (CA mode).
	TypeRevocation
	// TypeEdgeClaim: proxy → proxy: I admitted this edge, which holds
	// these addresses here (or, released, no longer) (CA mode).
	TypeEdgeClaim
	// TypeRestarted: proxy → a few proxies: the proxy Name has just
	// started, at Incarnation, and knows nobody dead: send me whom you hold
	// dead (TypeFail or TypeNews), and my incarnation if you hold a higher
	// one (TypeAlive).
	TypeRestarted
	// TypeNews: proxy → proxies: several deaths and comebacks at once,
	// each as a TypeFail or a passed-on TypeAlive tells one.
	TypeNews

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
	TypeDrain:        "drain",
	TypeDrainAck:     "drain-ack",
	TypeRevocation:   "revocation",
	TypeEdgeClaim:    "edge-claim",
	TypeRestarted:    "restarted",
	TypeNews:         "news",
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

// TypeMember flags.
const (
	MemberHas6  uint8 = 1 << iota // Peer.Addr6 follows
	MemberDead                    // the sender believes the member dead
	MemberSync                    // sent to a newcomer (or a proxy back from the dead): contact it
	MemberCert                    // the member's certificate follows (CA mode)
	memberFlags = MemberHas6 | MemberDead | MemberSync | MemberCert
)

// MaxWeight is the largest weight of one target.
const MaxWeight = router.MaxWeight

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
