package overlay

// The messages between proxies about proxies: health (SWIM's probes and
// rumors), membership records and their anti-entropy, and the edges each
// proxy admits. None carries a group.

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// appendNamed appends the name and incarnation most of these start with.
func appendNamed(b []byte, field, name string, inc uint32) ([]byte, error) {
	b, err := appendStr(b, field, name)
	return binary.BigEndian.AppendUint32(b, inc), err
}

// Probe (TypeProbe): proxy → proxy: are you alive? The header's seq is
// the nonce, which the ProbeAck echoes.
//
//	from:string incarnation:u32
//
// (It is not called Probe while attach.go has a type of that name.)
type Probe struct {
	From        string // the sender's name
	Incarnation uint32 // the sender's incarnation
}

func (*Probe) Type() Type { return TypeProbe }

func (m *Probe) appendBody(b []byte) ([]byte, error) {
	return appendNamed(b, "from", m.From, m.Incarnation)
}

func decodeProbe(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&Probe{From: d.str("from length", "from"), Incarnation: d.u32("incarnation")})
}

// ProbeAck: the answer to a Probe, seq echoed. A helper that probed for
// another proxy (ProbeReq) passes it on with the asker's seq.
//
//	from:string incarnation:u32
type ProbeAck struct {
	From        string // the probed proxy's name
	Incarnation uint32 // the probed proxy's incarnation
}

func (*ProbeAck) Type() Type { return TypeProbeAck }

func (m *ProbeAck) appendBody(b []byte) ([]byte, error) {
	return appendNamed(b, "from", m.From, m.Incarnation)
}

func decodeProbeAck(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&ProbeAck{From: d.str("from length", "from"), Incarnation: d.u32("incarnation")})
}

// ProbeReq: proxy → proxy: probe Suspect for me and send me its ProbeAck
// with this seq (SWIM's ping-req: confirms a suspicion).
//
//	suspect:string incarnation:u32
type ProbeReq struct {
	Suspect     string // the name of the proxy to probe
	Incarnation uint32 // the suspect's, as the asker knows it
}

func (*ProbeReq) Type() Type { return TypeProbeReq }

func (m *ProbeReq) appendBody(b []byte) ([]byte, error) {
	return appendNamed(b, "suspect", m.Suspect, m.Incarnation)
}

func decodeProbeReq(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&ProbeReq{Suspect: d.str("suspect length", "suspect"), Incarnation: d.u32("incarnation")})
}

// Fail: proxy → proxies: the proxy Name, at Incarnation, is dead. A proxy
// that learns it passes it on once.
//
//	name:string incarnation:u32
type Fail struct {
	Name        string
	Incarnation uint32
}

func (*Fail) Type() Type { return TypeFail }

func (m *Fail) appendBody(b []byte) ([]byte, error) {
	return appendNamed(b, "name", m.Name, m.Incarnation)
}

func decodeFail(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&Fail{Name: d.str("name length", "name"), Incarnation: d.u32("incarnation")})
}

// Alive: proxy → proxies: the proxy Name is alive at Incarnation (its
// start, or its refutation of a Fail). A proxy that learns it passes it on
// once.
//
//	name:string incarnation:u32
type Alive struct {
	Name        string
	Incarnation uint32
}

func (*Alive) Type() Type { return TypeAlive }

func (m *Alive) appendBody(b []byte) ([]byte, error) {
	return appendNamed(b, "name", m.Name, m.Incarnation)
}

func decodeAlive(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&Alive{Name: d.str("name length", "name"), Incarnation: d.u32("incarnation")})
}

// Restarted: proxy → a few proxies: the proxy Name has just started, at
// Incarnation, and lost whom it knew dead; the receiver sends it whom it
// holds dead, and an Alive about it if it holds it at a higher
// incarnation (its clock went back). Only a start asks: a proxy that
// refutes a Fail kept its view, and one side's list would carry that
// side's opinion into the other after a partition heals.
//
//	name:string incarnation:u32
type Restarted struct {
	Name        string
	Incarnation uint32
}

func (*Restarted) Type() Type { return TypeRestarted }

func (m *Restarted) appendBody(b []byte) ([]byte, error) {
	return appendNamed(b, "name", m.Name, m.Incarnation)
}

func decodeRestarted(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&Restarted{Name: d.str("name length", "name"), Incarnation: d.u32("incarnation")})
}

// News: proxy → proxies: several deaths and comebacks at once, each
// taken as a Fail (Dead) or a passed-on Alive about its Name would be. A
// proxy with more than one to pass on to the same member within a probe
// interval sends them together (see health.go): a partition's N/2 deaths,
// each told to every proxy in a datagram of its own, were 1.8 N² of them.
//
//	count:u8 then count × (flags:u8 name:string incarnation:u32)
//
// Flag newsDead marks a death; no other flag is defined.
type News struct {
	Items []NewsItem
}

// NewsItem is one piece of News.
type NewsItem struct {
	Name        string
	Incarnation uint32
	Dead        bool // a Fail; else an Alive
}

// MaxNews is the most items one News carries: 32 of the longest names
// fit in MaxLen. Proxies pack them to fit a tunnel packet too.
const MaxNews = 32

const newsDead = 1

func (*News) Type() Type { return TypeNews }

func (m *News) appendBody(b []byte) ([]byte, error) {
	if len(m.Items) == 0 || len(m.Items) > MaxNews {
		return b, fmt.Errorf("%d items: want 1..%d", len(m.Items), MaxNews)
	}
	b = append(b, byte(len(m.Items)))
	for i, it := range m.Items {
		var flags byte
		if it.Dead {
			flags = newsDead
		}
		var err error
		if b, err = appendNamed(append(b, flags), "name", it.Name, it.Incarnation); err != nil {
			return b, fmt.Errorf("item %d: %v", i, err)
		}
	}
	return b, nil
}

func decodeNews(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &News{}
	count := int(d.u8("item count"))
	if d.err == nil && (count == 0 || count > MaxNews) {
		d.fail(fmt.Errorf("%d items: want 1..%d", count, MaxNews))
	}
	if d.err == nil {
		m.Items = make([]NewsItem, 0, min(count, len(d.b)/minNewsItemLen))
	}
	for i := 0; i < count && d.err == nil; i++ {
		flags := d.u8("flags")
		if d.err == nil && flags&^newsDead != 0 {
			d.fail(fmt.Errorf("flags %#x: unknown", flags))
		}
		it := NewsItem{Dead: flags&newsDead != 0, Name: d.str("name length", "name"), Incarnation: d.u32("incarnation")}
		if d.err != nil {
			d.err = fmt.Errorf("item %d: %w", i, d.err)
		}
		m.Items = append(m.Items, it)
	}
	return d.end(m)
}

// minNewsItemLen is the shortest item: flags, an empty name, incarnation.
const minNewsItemLen = 1 + 1 + 4

// newsItemLen is the bytes it takes on the wire.
func newsItemLen(it NewsItem) int { return 1 + 1 + len(it.Name) + 4 }

// packNews packs items into as few News as hold them: at most MaxNews
// items and maxPackedPayload bytes each.
func packNews(items []NewsItem) []*News {
	var out []*News
	for _, run := range packRuns(items, MaxNews, newsItemLen) {
		out = append(out, &News{Items: run})
	}
	return out
}

// MemberRecord (TypeMember): proxy → proxy: Member, at Incarnation, is a
// proxy of the overlay (see members.go). It is also the body of the hello
// a newcomer sends its seeds on the underlay.
//
//	name:string incarnation:u32 peer [cert:u16-length bytes if MemberCert]
//
// The peer's flags are MemberHas6 (from Member.Addr6), MemberDead,
// MemberSync and MemberCert (from Cert).
type MemberRecord struct {
	Member      Member // Name included
	Incarnation uint32
	Dead        bool // the sender believes it dead
	// Sync: sent to a newcomer (or a proxy back from the dead), which
	// contacts it.
	Sync bool
	// Cert is the member's certificate in CA mode (at most
	// maxMemberCert bytes), which every receiver checks.
	Cert []byte
}

func (*MemberRecord) Type() Type { return TypeMember }

func (m *MemberRecord) appendBody(b []byte) ([]byte, error) {
	b, err := appendNamed(b, "name", m.Member.Name, m.Incarnation)
	if err != nil {
		return b, err
	}
	var flags uint8
	if m.Dead {
		flags |= MemberDead
	}
	if m.Sync {
		flags |= MemberSync
	}
	if len(m.Cert) > maxMemberCert {
		return b, fmt.Errorf("certificate of %d bytes", len(m.Cert))
	}
	if len(m.Cert) > 0 {
		flags |= MemberCert
	}
	b, err = appendPeer(b, flags, &m.Member)
	if err != nil || len(m.Cert) == 0 {
		return b, err
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Cert)))
	return append(b, m.Cert...), nil
}

func decodeMemberRecord(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &MemberRecord{}
	name := d.str("name length", "name")
	m.Incarnation = d.u32("incarnation")
	flags, pr := d.peer(memberFlags)
	pr.Name = name
	m.Member, m.Dead, m.Sync = pr, flags&MemberDead != 0, flags&MemberSync != 0
	if flags&MemberCert != 0 {
		n := int(d.u16("certificate length"))
		if d.err == nil && (n == 0 || n > maxMemberCert) {
			d.fail(fmt.Errorf("certificate of %d bytes", n))
		}
		m.Cert = bytes.Clone(d.take(n, "certificate"))
	}
	return d.end(m)
}

// Digest flags.
const (
	digestAnswer uint8 = 1 << iota
	digestFlags        = digestAnswer
)

// Digest: proxy → proxy: Hash is a hash of every proxy the sender knows
// (anti-entropy). A proxy whose list differs sends the sender its whole
// list (MemberRecord with Sync) and, unless this is an Answer, answers
// with its own Digest, so that the sender sends its list back.
//
//	from:string hash:u32 flags:u8 (1: answer)
type Digest struct {
	From   string // the sender's name
	Hash   uint32
	Answer bool
}

func (*Digest) Type() Type { return TypeDigest }

func (m *Digest) appendBody(b []byte) ([]byte, error) {
	b, err := appendNamed(b, "from", m.From, m.Hash)
	var flags uint8
	if m.Answer {
		flags |= digestAnswer
	}
	return append(b, flags), err
}

func decodeDigest(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &Digest{From: d.str("from length", "from"), Hash: d.u32("hash")}
	flags := d.u8("flags")
	if d.err == nil && flags&^digestFlags != 0 {
		d.fail(fmt.Errorf("unknown digest flags %#x", flags&^digestFlags))
	}
	m.Answer = flags&digestAnswer != 0
	return d.end(m)
}

// AdmitsReq: proxy → proxy: send me the WireGuard public keys of the edges
// your file admits (Admits).
//
//	from:string incarnation:u32
type AdmitsReq struct {
	From        string // the asker's name
	Incarnation uint32 // the asker's incarnation
}

func (*AdmitsReq) Type() Type { return TypeAdmitsReq }

func (m *AdmitsReq) appendBody(b []byte) ([]byte, error) {
	return appendNamed(b, "from", m.From, m.Incarnation)
}

func decodeAdmitsReq(b []byte) (Msg, error) {
	d := decoder{b: b}
	return d.end(&AdmitsReq{From: d.str("from length", "from"), Incarnation: d.u32("incarnation")})
}

// Admits: proxy → proxy: part Part of Parts of the WireGuard public keys
// of the edges that the proxy From, at Incarnation, admits. A proxy that
// admits no edge sends one part with no keys.
//
//	from:string incarnation:u32 part:u8 parts:u8 n:u8 n×(key:32 bytes)
type Admits struct {
	From        string // the sender's name
	Incarnation uint32 // the sender's incarnation
	// Part counts from 0: 1 ≤ Parts, Part < Parts.
	Part, Parts uint8
	Keys        [][32]byte // at most MaxKeys (nil after ParseMsg when none)
}

func (*Admits) Type() Type { return TypeAdmits }

func (m *Admits) appendBody(b []byte) ([]byte, error) {
	b, err := appendNamed(b, "from", m.From, m.Incarnation)
	if err != nil {
		return b, err
	}
	if err := checkParts(m.Part, m.Parts); err != nil {
		return b, err
	}
	if len(m.Keys) > MaxKeys {
		return b, fmt.Errorf("%d keys, at most %d fit", len(m.Keys), MaxKeys)
	}
	b = append(b, m.Part, m.Parts, byte(len(m.Keys)))
	for _, k := range m.Keys {
		b = append(b, k[:]...)
	}
	return b, nil
}

func decodeAdmits(b []byte) (Msg, error) {
	d := decoder{b: b}
	m := &Admits{From: d.str("from length", "from"), Incarnation: d.u32("incarnation"), Part: d.u8("part"), Parts: d.u8("parts")}
	if d.err == nil {
		if err := checkParts(m.Part, m.Parts); err != nil {
			d.fail(err)
		}
	}
	count := int(d.u8("key count"))
	if d.err == nil && count > MaxKeys {
		d.fail(fmt.Errorf("%d keys, at most %d allowed", count, MaxKeys))
	}
	if p := d.take(count*32, "keys"); d.err == nil && count > 0 {
		m.Keys = make([][32]byte, count)
		for i := range m.Keys {
			m.Keys[i] = [32]byte(p[i*32:])
		}
	}
	return d.end(m)
}
