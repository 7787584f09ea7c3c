package overlay

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pias-net/pias/admit"
)

// The underlay messages: hello (newcomer → seed) and welcome (the answer),
// sent outside the tunnels on the WireGuard UDP socket, authenticated by
// the mesh key (members.go says what they do).
//
//	"PIAS" version:u8 kind:u8 time:u64 (Unix milliseconds) body mac:32
//	hello body:   nonce:u64 seed:string record:TypeMember (seq 0)
//	welcome body: nonce:u64 ok:u8 (1 admitted, 0 refused) seed:string reason:string
//
// mac is HMAC-SHA256 under the mesh key of everything before it. version
// is underlayVersion (version 1 had no version byte; its hellos read as
// version 1, its welcomes as kind 0, and both are refused). A message more
// than underlaySkew away from the receiver's clock is ignored.
//
// Replays. Anyone on the path can capture a hello and send it again, from
// any source address, while it is fresh. So a hello names the seed it is
// for (no other proxy takes it), a seed takes each hello once (it
// remembers the MACs of those it took while they are fresh: seenHellos),
// and the nonce makes every hello differ, so that each answer can name the
// hello it answers: the newcomer takes only a welcome that echoes the
// nonce of a hello it sent to that seed, lately. A welcome is never longer
// than the hello it answers (its reason is cut to fit), so a hello with a
// forged source gains its sender nothing.
const (
	// UnderlayMagic starts every underlay message (WireGuard's own
	// messages start with a type 1..4 and three zero bytes).
	UnderlayMagic = "PIAS"

	underlayVersion = 2
	kindHello       = 1
	kindWelcome     = 2

	underlayHeader = len(UnderlayMagic) + 1 + 1 + 8
	underlayMAC    = sha256.Size
	// How old, and how far in the future, a message may be dated: as the
	// certificate handshake's (see admit.Seen for why so little ahead).
	underlaySkew  = admit.Skew
	underlayAhead = admit.Ahead

	// maxHelloPrefix is the longest part of a hello body before its record.
	maxHelloPrefix = 8 + 1 + MaxString
	// MaxUnderlayLen is the size of the longest valid underlay message: a
	// hello naming the longest seed name, with the longest TypeMember (a
	// welcome is never longer than its hello).
	MaxUnderlayLen = underlayHeader + maxHelloPrefix + maxMemberLen + underlayMAC
)

// underlayMsg is an opened underlay message.
type underlayMsg struct {
	kind byte
	at   int64 // when it was sent, Unix milliseconds
	body []byte
	mac  [underlayMAC]byte
	size int // of the whole datagram
}

func sealUnderlay(key []byte, kind byte, now time.Time, body []byte) []byte {
	b := make([]byte, 0, underlayHeader+len(body)+underlayMAC)
	b = append(b, UnderlayMagic...)
	b = append(b, underlayVersion, kind)
	b = binary.BigEndian.AppendUint64(b, uint64(now.UnixMilli()))
	b = append(b, body...)
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return mac.Sum(b)
}

func openUnderlay(key []byte, pkt []byte, now time.Time) (underlayMsg, error) {
	if len(pkt) < underlayHeader+underlayMAC || len(pkt) > MaxUnderlayLen {
		return underlayMsg{}, fmt.Errorf("underlay message: %d bytes", len(pkt))
	}
	if !bytes.HasPrefix(pkt, []byte(UnderlayMagic)) {
		return underlayMsg{}, errors.New("underlay message: bad magic")
	}
	signed, sum := pkt[:len(pkt)-underlayMAC], pkt[len(pkt)-underlayMAC:]
	mac := hmac.New(sha256.New, key)
	mac.Write(signed)
	if !hmac.Equal(mac.Sum(nil), sum) {
		return underlayMsg{}, errors.New("underlay message: bad MAC")
	}
	h := pkt[len(UnderlayMagic):]
	u := underlayMsg{kind: h[1], at: int64(binary.BigEndian.Uint64(h[2:])), body: signed[underlayHeader:], size: len(pkt)}
	copy(u.mac[:], sum)
	if h[0] != underlayVersion {
		return underlayMsg{}, fmt.Errorf("underlay message: version %d, want %d", h[0], underlayVersion)
	}
	if d := now.Sub(time.UnixMilli(u.at)); d > underlaySkew || d < -underlayAhead {
		return underlayMsg{}, fmt.Errorf("underlay message: sent %v away from now", d.Round(time.Second))
	}
	if u.kind != kindHello && u.kind != kindWelcome {
		return underlayMsg{}, fmt.Errorf("underlay message: unknown kind %d", u.kind)
	}
	return u, nil
}

// helloMsg is the body of a hello: the newcomer's record, for the seed
// called seed.
type helloMsg struct {
	nonce uint64
	seed  string
	rec   MemberRecord
}

func appendHello(b []byte, h helloMsg) ([]byte, error) {
	if h.seed == "" || len(h.seed) > MaxString {
		return nil, fmt.Errorf("hello: seed name of %d bytes", len(h.seed))
	}
	b = binary.BigEndian.AppendUint64(b, h.nonce)
	b = appendString(b, h.seed)
	return AppendMsg(b, 0, &h.rec)
}

func parseHello(b []byte) (helloMsg, error) {
	d := decoder{b: b, what: "hello"}
	var h helloMsg
	h.nonce = d.u64("nonce")
	h.seed = d.str("seed length", "seed")
	if d.err != nil {
		return helloMsg{}, fmt.Errorf("hello: %w", d.err)
	}
	if h.seed == "" {
		return helloMsg{}, errors.New("hello: no seed name")
	}
	seq, m, err := ParseMsg(d.b)
	if err != nil {
		return helloMsg{}, fmt.Errorf("hello: %w", err)
	}
	rec, ok := m.(*MemberRecord)
	switch {
	case !ok:
		return helloMsg{}, fmt.Errorf("hello: carries a %v", m.Type())
	case seq != 0:
		return helloMsg{}, fmt.Errorf("hello: seq %d", seq)
	}
	h.rec = *rec
	return h, nil
}

func (d *decoder) u64(field string) uint64 {
	if p := d.take(8, field); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

// welcomeMsg is the body of a welcome: the nonce of the hello it answers,
// the seed's name and, if it refused, why.
type welcomeMsg struct {
	nonce        uint64
	ok           bool
	name, reason string
}

func appendWelcome(b []byte, w welcomeMsg) []byte {
	ok := byte(0)
	if w.ok {
		ok = 1
	}
	b = binary.BigEndian.AppendUint64(b, w.nonce)
	b = append(b, ok)
	b = appendString(b, admit.Shorten(w.name, MaxString))
	return appendString(b, admit.Shorten(w.reason, MaxString))
}

func parseWelcome(b []byte) (welcomeMsg, error) {
	d := decoder{b: b, what: "welcome"}
	var w welcomeMsg
	w.nonce = d.u64("nonce")
	ok := d.u8("status")
	w.ok = ok == 1
	w.name = d.str("name length", "name")
	w.reason = d.str("reason length", "reason")
	switch {
	case d.err != nil:
		return welcomeMsg{}, fmt.Errorf("welcome: %w", d.err)
	case ok > 1:
		return welcomeMsg{}, fmt.Errorf("welcome: status %d", ok)
	case len(d.b) != 0:
		return welcomeMsg{}, fmt.Errorf("welcome: %d trailing bytes", len(d.b))
	case w.ok != (w.reason == ""):
		return welcomeMsg{}, errors.New("welcome: a refusal needs a reason, an admission has none")
	}
	return w, nil
}

// sealWelcome seals w as an answer to a hello of helloLen bytes: the
// reason of a refusal is cut so that the welcome is no longer than the
// hello. It returns nil if even that is too long (a hello always carries
// the seed's name and more, so a valid one leaves room).
func sealWelcome(key []byte, now time.Time, w welcomeMsg, helloLen int) []byte {
	w.reason = admit.Shorten(w.reason, MaxString)
	body := appendWelcome(nil, w)
	if over := underlayHeader + len(body) + underlayMAC - helloLen; over > 0 {
		w.reason = admit.Shorten(w.reason, len(w.reason)-over)
		if w.reason == "" {
			return nil
		}
		body = appendWelcome(nil, w)
	}
	if underlayHeader+len(body)+underlayMAC > helloLen {
		return nil
	}
	return sealUnderlay(key, kindWelcome, now, body)
}
