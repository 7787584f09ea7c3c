package admit

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pias-net/pias/cert"
)

const (
	// Magic starts every message (as overlay.UnderlayMagic: one socket
	// diverts both).
	Magic = "PIAS"
	// Version is this handshake's version byte (the mesh-key hellos are 2).
	Version = 3

	KindRequest = 1
	KindOffer   = 2
	KindHello   = 3
	KindWelcome = 4

	HeaderLen = len(Magic) + 1 + 1 + 8
	macLen    = sha256.Size

	// RequestLen is the size of a request: the padding pays for the offer
	// (a proxy's certificate is a few hundred bytes).
	RequestLen = 1200
	// MaxExtra bounds a hello's extra bytes (a proxy's member record).
	MaxExtra = 1024
	// MaxOfferCert is the longest certificate an offer carries: an offer
	// must fit in a request.
	MaxOfferCert = RequestLen - HeaderLen - 8 - 2
	// MaxLen is the longest message: a hello with the largest certificate
	// and extra.
	MaxLen = HeaderLen + 8 + 32 + 2 + cert.MaxSize + 2 + MaxExtra + macLen
	// MaxReason is the longest reason a welcome gives.
	MaxReason = 255

	// Skew is how old a message may be; Ahead how far in the future it
	// may be dated (a little clock skew, no more: see Seen).
	Skew  = 2 * time.Minute
	Ahead = 5 * time.Second
)

// Keys is a node's WireGuard key pair, for the handshake's MACs, with the
// MAC keys of the peers it met lately (an X25519 each; edges renew their
// admission every 20 s, and that costs a proxy one HMAC).
type Keys struct {
	priv   *ecdh.PrivateKey
	Public [32]byte
	mu     sync.Mutex
	cache  map[[33]byte][]byte // peer key and role byte → MAC key
}

// maxCachedKeys bounds Keys' cache; when full it is emptied (a flood of
// made-up keys costs the genuine peers one X25519 each, no more).
const maxCachedKeys = 4096

// Cached reports whether the MAC key with peer is at hand: a hello from
// it costs no X25519.
func (k *Keys) Cached(peer [32]byte) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.cache[cacheKey(peer, false)]
	return ok
}

func cacheKey(peer [32]byte, initiator bool) [33]byte {
	var c [33]byte
	copy(c[:], peer[:])
	if initiator {
		c[32] = 1
	}
	return c
}

// NewKeys takes a WireGuard private key.
func NewKeys(private [32]byte) (*Keys, error) {
	k, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		return nil, err
	}
	out := &Keys{priv: k}
	copy(out.Public[:], k.PublicKey().Bytes())
	return out, nil
}

// macKey is the key of the MACs between the initiator and the responder:
// a hash of their X25519 secret and both public keys, in that order.
func (k *Keys) macKey(peer [32]byte, initiator bool) ([]byte, error) {
	key, cached, err := k.lookup(peer, initiator)
	if err == nil && !cached {
		k.remember(peer, initiator, key)
	}
	return key, err
}

// lookup is the MAC key with peer, from the cache or derived (not kept).
func (k *Keys) lookup(peer [32]byte, initiator bool) (key []byte, cached bool, err error) {
	k.mu.Lock()
	key, ok := k.cache[cacheKey(peer, initiator)]
	k.mu.Unlock()
	if ok {
		return key, true, nil
	}
	key, err = k.deriveKey(peer, initiator)
	return key, false, err
}

// Remember keeps the MAC key of the hello h, which CheckHello checked: a
// proxy calls it once the certificate is verified too, so that neither
// made-up keys nor self-signed certificates push out the genuine ones.
func (k *Keys) Remember(h *Hello) {
	if h.key != nil {
		k.remember(h.Cert.PublicKey, false, h.key)
	}
}

// remember keeps a MAC key.
func (k *Keys) remember(peer [32]byte, initiator bool, key []byte) {
	ck := cacheKey(peer, initiator)
	k.mu.Lock()
	if k.cache == nil || len(k.cache) >= maxCachedKeys {
		k.cache = map[[33]byte][]byte{}
	}
	k.cache[ck] = key
	k.mu.Unlock()
}

func (k *Keys) deriveKey(peer [32]byte, initiator bool) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(peer[:])
	if err != nil {
		return nil, err
	}
	secret, err := k.priv.ECDH(pub) // fails on a low-order point
	if err != nil {
		return nil, fmt.Errorf("key %x…: %w", peer[:4], err)
	}
	h := sha256.New()
	h.Write([]byte("pias admit v3\x00"))
	h.Write(secret)
	if initiator {
		h.Write(k.Public[:])
		h.Write(peer[:])
	} else {
		h.Write(peer[:])
		h.Write(k.Public[:])
	}
	return h.Sum(nil), nil
}

func header(kind byte, now time.Time, size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, Magic...)
	b = append(b, Version, kind)
	return binary.BigEndian.AppendUint64(b, uint64(now.UnixMilli()))
}

func seal(key []byte, b []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return m.Sum(b)
}

// Msg is an opened message: its header and body (MAC not yet checked).
type Msg struct {
	Kind byte
	At   time.Time // when its sender says it sent it
	Body []byte    // after the header; a hello's and welcome's end in their MAC
	Size int       // of the whole datagram
}

// Open checks a datagram's header and freshness: magic, version, kind,
// size and time.
func Open(pkt []byte, now time.Time) (Msg, error) {
	if len(pkt) < HeaderLen || len(pkt) > MaxLen {
		return Msg{}, fmt.Errorf("admit: %d bytes", len(pkt))
	}
	if !bytes.HasPrefix(pkt, []byte(Magic)) {
		return Msg{}, errors.New("admit: bad magic")
	}
	h := pkt[len(Magic):]
	if h[0] != Version {
		return Msg{}, fmt.Errorf("admit: version %d, want %d", h[0], Version)
	}
	m := Msg{Kind: h[1], At: time.UnixMilli(int64(binary.BigEndian.Uint64(h[2:]))), Body: pkt[HeaderLen:], Size: len(pkt)}
	if m.Kind < KindRequest || m.Kind > KindWelcome {
		return Msg{}, fmt.Errorf("admit: unknown kind %d", m.Kind)
	}
	if d := now.Sub(m.At); d > Skew || d < -Ahead {
		return Msg{}, fmt.Errorf("admit: sent %v away from now", d.Round(time.Second))
	}
	return m, nil
}

// AppendRequest is a request, numbered nonce.
func AppendRequest(now time.Time, nonce uint64) []byte {
	b := header(KindRequest, now, RequestLen)
	b = binary.BigEndian.AppendUint64(b, nonce)
	return b[:RequestLen]
}

// ParseRequest reads a request's nonce; it must be at least RequestLen
// long.
func ParseRequest(m Msg) (uint64, error) {
	if m.Kind != KindRequest || m.Size < RequestLen {
		return 0, fmt.Errorf("admit: request of %d bytes, want %d", m.Size, RequestLen)
	}
	return binary.BigEndian.Uint64(m.Body), nil
}

// AppendOffer is the answer to the request numbered nonce: the proxy's
// certificate (its canonical encoding). It is nil if it would be longer
// than a request of reqLen bytes.
func AppendOffer(now time.Time, nonce uint64, certBytes []byte, reqLen int) []byte {
	n := HeaderLen + 8 + 2 + len(certBytes)
	if n > reqLen || len(certBytes) > MaxOfferCert {
		return nil
	}
	b := header(KindOffer, now, n)
	b = binary.BigEndian.AppendUint64(b, nonce)
	return appendBytes16(b, certBytes)
}

// Offer is a parsed offer.
type Offer struct {
	Nonce uint64
	Cert  *cert.Certificate // parsed only: the caller verifies it
}

// ParseOffer reads an offer.
func ParseOffer(m Msg) (Offer, error) {
	d := reader{b: m.Body}
	o := Offer{Nonce: d.u64()}
	raw := d.bytes16()
	if d.err != nil || m.Kind != KindOffer || len(d.b) != 0 {
		return Offer{}, errors.New("admit: malformed offer")
	}
	c, err := cert.Parse(raw)
	if err != nil {
		return Offer{}, fmt.Errorf("admit: offer: %w", err)
	}
	o.Cert = c
	return o, nil
}

// Hello is a parsed hello.
type Hello struct {
	Nonce uint64
	To    [32]byte // the key of the proxy it is for
	Cert  *cert.Certificate
	Raw   []byte // Cert's bytes
	Extra []byte
	MAC   [macLen]byte
	At    time.Time // when the node sent it
	key   []byte    // the MAC key, once checked
	size  int       // of the datagram: the welcome is no longer
}

// AppendHello is a hello from the node with keys k, to the proxy whose key
// is to: the node's certificate (canonical bytes) and extra, MACed.
func AppendHello(k *Keys, now time.Time, nonce uint64, to [32]byte, certBytes, extra []byte) ([]byte, error) {
	if len(certBytes) > cert.MaxSize || len(extra) > MaxExtra {
		return nil, fmt.Errorf("admit: hello of a %d-byte certificate and %d extra bytes", len(certBytes), len(extra))
	}
	key, err := k.macKey(to, true)
	if err != nil {
		return nil, err
	}
	b := header(KindHello, now, HeaderLen+8+32+4+len(certBytes)+len(extra)+macLen)
	b = binary.BigEndian.AppendUint64(b, nonce)
	b = append(b, to[:]...)
	b = appendBytes16(b, certBytes)
	b = appendBytes16(b, extra)
	return seal(key, b), nil
}

// OpenHello reads a hello to the proxy with keys k and checks its MAC
// against the key its certificate names. pkt is the whole datagram, m its
// Open. It does not verify the certificate: the caller does, with its
// pool, after the MAC (so that the node, having proved its key, is told
// why it is refused). The cheap checks come before the X25519.
func OpenHello(k *Keys, pkt []byte, m Msg) (*Hello, error) {
	h, err := ParseHello(k, m)
	if err != nil {
		return nil, err
	}
	return h, CheckHello(k, pkt, m, h)
}

// ParseHello reads a hello to the proxy with keys k, and its certificate's
// structure: the cheap checks.
func ParseHello(k *Keys, m Msg) (*Hello, error) {
	if m.Kind != KindHello || len(m.Body) < macLen {
		return nil, errors.New("admit: malformed hello")
	}
	d := reader{b: m.Body[:len(m.Body)-macLen]}
	h := &Hello{Nonce: d.u64()}
	copy(h.To[:], d.take(32))
	h.Raw = d.bytes16()
	h.Extra = d.bytes16()
	if d.err != nil || len(d.b) != 0 || len(h.Extra) > MaxExtra {
		return nil, errors.New("admit: malformed hello")
	}
	if h.To != k.Public {
		return nil, errors.New("admit: hello for another proxy")
	}
	c, err := cert.Parse(h.Raw)
	if err != nil {
		return nil, fmt.Errorf("admit: hello: %w", err)
	}
	h.Cert = c
	copy(h.MAC[:], m.Body[len(m.Body)-macLen:])
	return h, nil
}

// CheckHello checks the MAC of h, read by ParseHello from pkt: it proves
// that the sender holds the private key of h's certificate.
func CheckHello(k *Keys, pkt []byte, m Msg, h *Hello) error {
	key, _, err := k.lookup(h.Cert.PublicKey, false)
	if err != nil {
		return fmt.Errorf("admit: hello: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(pkt[:len(pkt)-macLen])
	if !hmac.Equal(mac.Sum(nil), h.MAC[:]) {
		return errors.New("admit: hello: bad MAC")
	}

	h.key, h.size, h.At = key, m.Size, m.At
	return nil
}

// Welcome is the answer to a hello.
type Welcome struct {
	Nonce  uint64
	OK     bool
	Reason string // why not; empty if OK
}

// AppendWelcome answers the hello h, which the proxy opened, with w, in no
// more bytes than the hello (the reason is cut to fit).
func AppendWelcome(h *Hello, now time.Time, w Welcome) []byte {
	if w.OK {
		w.Reason = ""
	} else if w.Reason == "" {
		w.Reason = "refused"
	}
	// A hello carries a certificate, so even a cut reason fits.
	w.Reason = Shorten(w.Reason, min(MaxReason, h.size-(HeaderLen+8+1+1+macLen)))
	b := header(KindWelcome, now, HeaderLen+8+1+1+len(w.Reason)+macLen)
	b = binary.BigEndian.AppendUint64(b, w.Nonce)
	b = append(b, b2u(w.OK), byte(len(w.Reason)))
	b = append(b, w.Reason...)
	return seal(h.key, b)
}

// OpenWelcome reads a welcome from the proxy with key from, to the node
// with keys k, and checks its MAC.
func OpenWelcome(k *Keys, from [32]byte, pkt []byte, m Msg) (Welcome, error) {
	if m.Kind != KindWelcome || len(m.Body) < macLen {
		return Welcome{}, errors.New("admit: malformed welcome")
	}
	d := reader{b: m.Body[:len(m.Body)-macLen]}
	w := Welcome{Nonce: d.u64()}
	ok := d.u8()
	w.Reason = string(d.take(int(d.u8())))
	switch {
	case d.err != nil || len(d.b) != 0 || ok > 1:
		return Welcome{}, errors.New("admit: malformed welcome")
	case (ok == 1) != (w.Reason == "") || !utf8.ValidString(w.Reason):
		return Welcome{}, errors.New("admit: welcome: a refusal needs a reason, an admission has none")
	}
	w.OK = ok == 1
	key, err := k.macKey(from, true)
	if err != nil {
		return Welcome{}, err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(pkt[:len(pkt)-macLen])
	if !hmac.Equal(mac.Sum(nil), m.Body[len(m.Body)-macLen:]) {
		return Welcome{}, errors.New("admit: welcome: bad MAC")
	}
	return w, nil
}

func b2u(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func appendBytes16(b, p []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	return append(b, p...)
}

// Shorten cuts s to at most n bytes (none if n ≤ 0), at a rune boundary:
// what a wire's reasons and names are cut to.
func Shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// reader reads fields; after the first short read it reads nothing.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = errors.New("short")
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (r *reader) bytes16() []byte {
	p := r.take(2)
	if p == nil {
		return nil
	}
	return r.take(int(binary.BigEndian.Uint16(p)))
}
