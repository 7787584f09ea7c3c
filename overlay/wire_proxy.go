package overlay

// The messages between proxies about groups: JAPs register with RAPs, IAPs
// resolve at RAPs, and JAPs tell the others what changed.

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/pias-net/pias/router"
)

// Register: JAP → RAP: I have Targets targets of Group.
//
//	group jap:string targets:u32 ttl_ms:u32 policy weight:u32 stated:u8 (0 or 1) version:u64
type Register struct {
	Group   router.Group
	JAP     string // the JAP's name
	Targets uint32 // targets the JAP has for Group; 0 withdraws
	// TTL is how long the RAP keeps it: whole milliseconds on the wire
	// (truncated), at most math.MaxUint32 of them.
	TTL    time.Duration
	Policy router.Policy // the group's policy as the JAP has it
	Weight uint32        // the sum of the weights of the JAP's targets of Group
	// Stated: a target of the JAP with the right to set Group's policy
	// stated Policy. Otherwise the JAP's targets only follow the group's
	// policy, and its arbiter RAP tells it the one in force (see
	// rap.register).
	Stated bool
	// Version orders one JAP's reports of one group: the JAP's wall clock
	// in nanoseconds, and always more than its last. Links reorder, and a
	// RAP that took a count after the withdrawal sent later would keep it
	// until its TTL: a RAP takes no report older than the last it took
	// from the JAP for the group, withdrawals included (rap.stale). 0:
	// unordered, always taken.
	Version uint64
}

func (*Register) Type() Type            { return TypeRegister }
func (m *Register) group() router.Group { return m.Group }

func (m *Register) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	if err != nil {
		return b, err
	}
	if b, err = appendStr(b, "JAP name", m.JAP); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint32(b, m.Targets)
	if b, err = appendMillis(b, "ttl", m.TTL); err != nil {
		return b, err
	}
	if b, err = appendPolicy(b, m.Policy); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint32(b, m.Weight)
	b = append(b, b2u8(m.Stated))
	return binary.BigEndian.AppendUint64(b, m.Version), nil
}

func decodeRegister(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &Register{Group: d.group(), JAP: d.str("JAP name length", "JAP name"), Targets: d.u32("target count"),
		TTL: d.millis("ttl"), Policy: d.policy(), Weight: d.u32("weight")}
	switch st := d.u8("stated"); {
	case d.err != nil:
	case st > 1:
		d.fail(fmt.Errorf("stated %d: want 0 or 1", st))
	default:
		m.Stated = st == 1
	}
	m.Version = d.u64("version")
	return d.end(m)
}

// Resolve: IAP → RAP: which JAPs serve Group? Answered by a ResolveReply.
//
//	group relayed:u8 (0 or 1)
type Resolve struct {
	Group router.Group
	// Relayed: a proxy that is no RAP of Group asks for another, cut off
	// from the RAPs; a relayed Resolve is never relayed again, so views
	// that differ cannot make a loop.
	Relayed bool
}

func (*Resolve) Type() Type            { return TypeResolve }
func (m *Resolve) group() router.Group { return m.Group }

func (m *Resolve) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	return append(b, b2u8(m.Relayed)), err
}

func decodeResolve(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &Resolve{Group: d.group()}
	switch r := d.u8("relayed"); {
	case d.err != nil:
	case r > 1:
		d.fail(fmt.Errorf("relayed %d: want 0 or 1", r))
	default:
		m.Relayed = r == 1
	}
	return d.end(m)
}

func b2u8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// ResolveReply: RAP → IAP: the answer to a Resolve (relayed back by the
// proxy that relayed the Resolve).
//
//	group status:u8 reason:string ttl_ms:u32 n:u8 n×(addr targets:u32 weight:u32) policy
type ResolveReply struct {
	Group  router.Group
	Status Status // StatusUnknown: the RAP knows no JAP for Group
	Reason string // why, with StatusRefused
	// TTL is how long the IAP may cache it: whole milliseconds on the wire
	// (truncated), at most math.MaxUint32 of them.
	TTL time.Duration
	// JAPs serve Group: at most MaxJAPs, Targets and Weight in [0,
	// math.MaxUint32] (nil after ParseMsg when none).
	JAPs   []router.JAP
	Policy router.Policy // the group's policy as the RAP has it
}

func (*ResolveReply) Type() Type            { return TypeResolveReply }
func (m *ResolveReply) group() router.Group { return m.Group }

func (m *ResolveReply) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	if err != nil {
		return b, err
	}
	if b, err = appendOutcome(b, m.Status, m.Reason); err != nil {
		return b, err
	}
	if b, err = appendMillis(b, "ttl", m.TTL); err != nil {
		return b, err
	}
	if len(m.JAPs) > MaxJAPs {
		return b, fmt.Errorf("%d JAPs, at most %d fit", len(m.JAPs), MaxJAPs)
	}
	b = append(b, byte(len(m.JAPs)))
	for i, j := range m.JAPs {
		if err := checkAddr(j.Addr); err != nil {
			return b, fmt.Errorf("JAP %d: %v", i, err)
		}
		if j.Targets < 0 || uint64(j.Targets) > math.MaxUint32 {
			return b, fmt.Errorf("JAP %v: target count %d out of range", j.Addr, j.Targets)
		}
		if j.Weight < 0 || uint64(j.Weight) > math.MaxUint32 {
			return b, fmt.Errorf("JAP %v: weight %d out of range", j.Addr, j.Weight)
		}
		b = appendAddr(b, j.Addr)
		b = binary.BigEndian.AppendUint32(b, uint32(j.Targets))
		b = binary.BigEndian.AppendUint32(b, uint32(j.Weight))
	}
	return appendPolicy(b, m.Policy)
}

func decodeResolveReply(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &ResolveReply{Group: d.group()}
	m.Status, m.Reason = d.outcome()
	m.TTL = d.millis("ttl")
	count := int(d.u8("JAP count"))
	if d.err == nil && count > MaxJAPs {
		d.fail(fmt.Errorf("%d JAPs, at most %d allowed", count, MaxJAPs))
	}
	if d.err == nil && count > 0 {
		m.JAPs = make([]router.JAP, 0, min(count, len(d.b)/(1+4+4+4)))
		for i := 0; i < count && d.err == nil; i++ {
			a := d.addr("JAP address family", "JAP address")
			t := d.u32("JAP target count")
			w := d.u32("JAP weight")
			if uint64(t) > math.MaxInt || uint64(w) > math.MaxInt {
				d.fail(fmt.Errorf("JAP %v: target count %d or weight %d does not fit an int", a, t, w))
			}
			m.JAPs = append(m.JAPs, router.JAP{Addr: a, Targets: int(t), Weight: int(w)})
		}
	}
	m.Policy = d.policy()
	return d.end(m)
}

// Moved: JAP → proxies: each of Targets has joined its group through me;
// a proxy that holds one from an earlier join drops it at once (the target
// left it, perhaps without being able to say so). A JAP tells the targets
// that joined during one tick in one Moved (see Proxy.tellMoved).
//
//	n:u8 n×(group name:string epoch:u32 target:addr)    n in 1..MaxMoved
type Moved struct {
	Targets []MovedTarget
}

// MovedTarget is one target of a Moved.
type MovedTarget struct {
	Group  router.Group
	Name   string     // the target's name (logs)
	Target netip.Addr // the target's overlay address
	Epoch  uint32     // of the target's join at the sender (see Join)
}

// MaxMoved is the most targets one Moved carries.
const MaxMoved = 16

func (*Moved) Type() Type { return TypeMoved }

func (m *Moved) appendBody(b []byte) ([]byte, error) {
	if len(m.Targets) == 0 || len(m.Targets) > MaxMoved {
		return b, fmt.Errorf("%d targets: want 1..%d", len(m.Targets), MaxMoved)
	}
	b = append(b, byte(len(m.Targets)))
	for i, t := range m.Targets {
		var err error
		if b, err = appendMovedTarget(b, t); err != nil {
			return b, fmt.Errorf("target %d: %v", i, err)
		}
	}
	return b, nil
}

func appendMovedTarget(b []byte, t MovedTarget) ([]byte, error) {
	b, err := appendGroup(b, t.Group)
	if err != nil {
		return b, err
	}
	if b, err = appendStr(b, "name", t.Name); err != nil {
		return b, err
	}
	if err := checkAddr(t.Target); err != nil {
		return b, fmt.Errorf("target: %v", err)
	}
	b = binary.BigEndian.AppendUint32(b, t.Epoch)
	return appendAddr(b, t.Target), nil
}

// movedTargetLen is the length of t in a Moved.
func movedTargetLen(t MovedTarget) int {
	n := 1 + 4 + 2 + 1 + 1 + len(t.Name) + 4 + 1 + 4
	if t.Group.Addr.Is6() {
		n += 12
	}
	if t.Target.Is6() {
		n += 12
	}
	return n
}

func decodeMoved(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &Moved{}
	count := int(d.u8("target count"))
	if d.err == nil && (count == 0 || count > MaxMoved) {
		d.fail(fmt.Errorf("%d targets: want 1..%d", count, MaxMoved))
	}
	if d.err == nil {
		m.Targets = make([]MovedTarget, 0, min(count, len(d.b)/minMovedTargetLen))
	}
	for i := 0; i < count && d.err == nil; i++ {
		t := MovedTarget{Group: d.group(), Name: d.str("name length", "name"), Epoch: d.u32("epoch"),
			Target: d.addr("target address family", "target address")}
		if d.err != nil {
			d.err = fmt.Errorf("target %d: %w", i, d.err)
		}
		m.Targets = append(m.Targets, t)
	}
	return d.end(m)
}

// minMovedTargetLen is the shortest target of a Moved: IPv4 group and
// target, empty name.
const minMovedTargetLen = 1 + 4 + 2 + 1 + 1 + 4 + 1 + 4

// NoTarget: JAP → IAP: I have no target for Group any more; forget me for
// it and resolve again.
//
//	group
type NoTarget struct {
	Group router.Group
}

func (*NoTarget) Type() Type            { return TypeNoTarget }
func (m *NoTarget) group() router.Group { return m.Group }

func (m *NoTarget) appendBody(b []byte) ([]byte, error) {
	return appendGroup(b, m.Group)
}

func decodeNoTarget(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&NoTarget{Group: d.group()})
}

// GroupPolicy (TypePolicy): RAP → JAP: Group has Policy (its JAPs that
// registered first said so); the JAP's targets of Group that stated
// another were not registered, and the JAP refuses them.
//
//	group policy
type GroupPolicy struct {
	Group  router.Group
	Policy router.Policy
}

func (*GroupPolicy) Type() Type            { return TypePolicy }
func (m *GroupPolicy) group() router.Group { return m.Group }

func (m *GroupPolicy) appendBody(b []byte) ([]byte, error) {
	b, err := appendGroup(b, m.Group)
	if err != nil {
		return b, err
	}
	return appendPolicy(b, m.Policy)
}

func decodeGroupPolicy(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&GroupPolicy{Group: d.group(), Policy: d.policy()})
}
