package overlay

// The control messages on the wire: a small framing header, then a body
// whose layout is its type's. Each type of message is its own Go type (see
// wire_edge.go, wire_proxy.go, wire_health.go), with its own fields and its
// own codec; who may send each to where is in rules.go.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/pias-net/pias/router"
)

// Version is the version of the message format in the header. Version
// 2 gave each type its own body (a Resolve's hop count became a flag, a
// Digest's answer a flag instead of seq 1).
const Version = 2

// Msg is one control message: one Go type per message type.
//
// Wire format (integers big-endian):
//
//	header   "PI" version:u8 type:u8 seq:u32
//	group    addr port:u16 proto:u8
//	addr     family:u8 (4 or 6) then 4 or 16 bytes
//	string   length:u8 then that many bytes of UTF-8
//	policy   select:u8 replicate:u8 scope:u8 (router.Policy)
//	peer     flags:u8 cluster:string addr4 [addr6 if flags&MemberHas6]
//	         key:32 bytes endpoint:addr port:u16
//
// Seq matches an answer to its question (an answer echoes it) and is a
// probe's nonce. Each type documents its body.
type Msg interface {
	// Type is the message's type in the header.
	Type() Type
	// appendBody appends the body (after the header); it may leave b
	// half-written when it fails (AppendMsg restores it).
	appendBody(b []byte) ([]byte, error)
}

// grouped is a message about one group.
type grouped interface {
	group() router.Group
}

// GroupOf returns the group m is about, if it carries one: its anycast
// address is where edges send it (DestAnycast).
func GroupOf(m Msg) (router.Group, bool) {
	if g, ok := m.(grouped); ok {
		return g.group(), true
	}
	return router.Group{}, false
}

// decoders decode each type's body, by type. (Each has its own decoder:
// one passed through this table would escape, and cost an allocation.)
var decoders = [typeEnd]func(body []byte) (Msg, error){
	TypeJoin:         decodeJoin,
	TypeJoinAck:      decodeJoinAck,
	TypeLeave:        decodeLeave,
	TypeKeepalive:    decodeKeepalive,
	TypeKeepaliveAck: decodeKeepaliveAck,
	TypeRegister:     decodeRegister,
	TypeResolve:      decodeResolve,
	TypeResolveReply: decodeResolveReply,
	TypeProbe:        decodeProbe,
	TypeProbeAck:     decodeProbeAck,
	TypeProbeReq:     decodeProbeReq,
	TypeFail:         decodeFail,
	TypeAlive:        decodeAlive,
	TypeMoved:        decodeMoved,
	TypeNoTarget:     decodeNoTarget,
	TypeMember:       decodeMemberRecord,
	TypePolicy:       decodeGroupPolicy,
	TypeDigest:       decodeDigest,
	TypeAdmitsReq:    decodeAdmitsReq,
	TypeAdmits:       decodeAdmits,
	TypeProxiesReq:   decodeProxiesReq,
	TypeProxies:      decodeProxies,
	TypeDrain:        decodeDrain,
	TypeDrainAck:     decodeDrainAck,
	TypeRevocation:   decodeRevocation,
	TypeEdgeClaim:    decodeEdgeClaim,
	TypeRestarted:    decodeRestarted,
	TypeNews:         decodeNews,
}

// Every message fits in MaxLen: the longest is a Proxies.
const (
	maxJoinLen     = HeaderLen + maxGroupLen + 2 + 1 + MaxString + 4 + policyLen + 4 + 4
	maxRegisterLen = HeaderLen + maxGroupLen + 1 + MaxString + 4 + 4 + policyLen + 4 + 1 + 8
	maxMovedLen    = HeaderLen + 1 + MaxMoved*(maxGroupLen+1+MaxString+4+1+16)
	maxAckLen      = HeaderLen + maxGroupLen + 1 + 1 + MaxString
	maxDrainAckLen = maxAckLen + 4
	maxMemberLen   = HeaderLen + 4 + maxPeerLen + 2 + maxMemberCert
	maxDigestLen   = HeaderLen + 1 + MaxString + 4 + 1
	maxProxiesLen  = HeaderLen + 4 + 1 + MaxPeers*maxPeerLen
	maxClaimLen    = HeaderLen + 1 + MaxString + 1 + 32 + 1 + MaxString + 8 + 1 + 2*17
	maxNewsLen     = HeaderLen + 1 + MaxNews*(1+1+MaxString+4)

	_ = uint(MaxLen-maxProxiesLen) + uint(maxProxiesLen-MaxLen) // MaxLen is the longest Proxies
	_ = uint(MaxLen-maxJoinLen) + uint(MaxLen-maxRegisterLen) + uint(MaxLen-maxMovedLen) +
		uint(MaxLen-maxAckLen) + uint(MaxLen-maxDrainAckLen) + uint(MaxLen-maxMemberLen) + uint(MaxLen-maxDigestLen) + uint(MaxLen-maxClaimLen) +
		uint(MaxLen-maxResolveReplyLen) + uint(MaxLen-maxAdmitsLen) + uint(MaxLen-maxNewsLen)
)

// maxPackedPayload keeps a message of many items (a Moved, a News)
// inside one tunnel packet: the 1,420-byte MTU less IP and UDP headers,
// with room to spare.
const maxPackedPayload = 1200

// packRuns splits items into as few runs as each fit one message: at most
// most items, and maxPackedPayload bytes of header, count byte and items
// (itemLen each).
func packRuns[T any](items []T, most int, itemLen func(T) int) [][]T {
	var out [][]T
	size := 0
	for _, it := range items {
		n := itemLen(it)
		if len(out) == 0 || len(out[len(out)-1]) == most || size+n > maxPackedPayload {
			out = append(out, nil)
			size = HeaderLen + 1
		}
		out[len(out)-1] = append(out[len(out)-1], it)
		size += n
	}
	return out
}

// AppendMsg appends the header, with seq, and the body of m to b. It fails,
// returning b unchanged, if m cannot be encoded: an invalid group, a string
// too long or not UTF-8, a duration or count out of range, too many or
// invalid JAPs, keys or peers.
func AppendMsg(b []byte, seq uint32, m Msg) ([]byte, error) {
	if m == nil {
		return b, errors.New("pias message: cannot encode a nil message")
	}
	t := m.Type()
	out := append(b, magic0, magic1, Version, byte(t))
	out = binary.BigEndian.AppendUint32(out, seq)
	out, err := m.appendBody(out)
	if err != nil {
		if g, ok := GroupOf(m); ok && checkGroup(g) == nil {
			return b, fmt.Errorf("pias message: cannot encode %v for %v: %v", t, g, err)
		}
		return b, fmt.Errorf("pias message: cannot encode %v: %v", t, err)
	}
	return out, nil
}

// ParseMsg decodes b, which must be exactly one message. It is strict:
// every input it accepts is what AppendMsg makes of the result. The message
// is a pointer to its type (*Join, *Probe, …).
func ParseMsg(b []byte) (seq uint32, m Msg, err error) {
	if len(b) < HeaderLen {
		if len(b) >= 2 && (b[0] != magic0 || b[1] != magic1) {
			return 0, nil, errors.New("pias message: bad magic")
		}
		return 0, nil, fmt.Errorf("pias message: truncated header (%d bytes)", len(b))
	}
	if b[0] != magic0 || b[1] != magic1 {
		return 0, nil, errors.New("pias message: bad magic")
	}
	if b[2] != Version {
		return 0, nil, fmt.Errorf("pias message: unknown version %d (want %d)", b[2], Version)
	}
	t := Type(b[3])
	if !t.valid() {
		return 0, nil, fmt.Errorf("pias message: unknown %v", t)
	}
	m, err = decoders[t](b[HeaderLen:])
	if err != nil {
		return 0, nil, fmt.Errorf("pias message: %v: %v", t, err)
	}
	return binary.BigEndian.Uint32(b[4:]), m, nil
}

// end ends the decoding of m: the body must have been read to its end.
func (d *decoder) end(m Msg) (Msg, error) {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// The pieces several bodies share.

func appendGroup(b []byte, g router.Group) ([]byte, error) {
	if err := checkGroup(g); err != nil {
		return b, err
	}
	b = appendAddr(b, g.Addr)
	b = binary.BigEndian.AppendUint16(b, g.Port)
	return append(b, g.Proto), nil
}

func (d *decoder) group() router.Group {
	var g router.Group
	g.Addr = d.addr("group address family", "group address")
	g.Port = d.u16("group port")
	g.Proto = d.u8("group protocol")
	if d.err == nil {
		if err := checkGroup(g); err != nil {
			d.fail(err)
		}
	}
	return g
}

// appendStr appends s, a field called field.
func appendStr(b []byte, field, s string) ([]byte, error) {
	if err := checkString(s); err != nil {
		return b, fmt.Errorf("%s: %v", field, err)
	}
	return appendString(b, s), nil
}

func appendPolicy(b []byte, p router.Policy) ([]byte, error) {
	if err := checkPolicy(p); err != nil {
		return b, err
	}
	return append(b, byte(p.Select), byte(p.Replicate), byte(p.Scope)), nil
}

func (d *decoder) policy() router.Policy {
	p := router.Policy{Select: router.Select(d.u8("select")), Replicate: int(d.u8("replicate")), Scope: router.Scope(d.u8("scope"))}
	if d.err == nil {
		if err := checkPolicy(p); err != nil {
			d.fail(err)
		}
	}
	return p
}

// appendOutcome appends an answer's status and reason.
func appendOutcome(b []byte, s Status, reason string) ([]byte, error) {
	if s >= statusEnd {
		return b, fmt.Errorf("unknown %v", s)
	}
	return appendStr(append(b, byte(s)), "reason", reason)
}

func (d *decoder) outcome() (Status, string) {
	s := Status(d.u8("status"))
	if d.err == nil && s >= statusEnd {
		d.fail(fmt.Errorf("unknown %v", s))
	}
	return s, d.str("reason length", "reason")
}

// appendMillis appends d, a field called field, in whole milliseconds.
func appendMillis(b []byte, field string, d time.Duration) ([]byte, error) {
	ms := d.Milliseconds()
	if d < 0 || ms > math.MaxUint32 {
		return b, fmt.Errorf("%s %v out of range [0, %v]", field, d, math.MaxUint32*time.Millisecond)
	}
	return binary.BigEndian.AppendUint32(b, uint32(ms)), nil
}

func (d *decoder) millis(field string) time.Duration {
	return time.Duration(d.u32(field)) * time.Millisecond
}
