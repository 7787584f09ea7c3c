package admit

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/pias-net/pias/cert"
)

// Client is the node side of the handshake, as a state machine with no
// clock or socket of its own: it asks each proxy it is given for its
// certificate, checks it, says hello, and renews the admission every
// Renew. Times are the caller's monotonic nanoseconds (now) and wall clock.
type Client struct {
	cfg     ClientConfig
	rng     *rand.Rand
	servers map[netip.AddrPort]*server
	order   []netip.AddrPort // as added
}

// ClientConfig is what a Client needs.
type ClientConfig struct {
	Keys *Keys
	Pool *cert.Pool
	Cert []byte // this node's certificate, canonical bytes
	// Extra, if set, gives the extra bytes of each hello (a proxy's
	// member record).
	Extra func() []byte
	// Revoked is the revocation list held (nil: none); Client checks
	// proxies' certificates against it.
	Revoked func() cert.Revoked
	// Retry is how long an unanswered request or hello waits before the
	// next; default 1 s, doubling up to 8× for a proxy that never answered.
	Retry time.Duration
	// Renew is how often an admission is renewed; 0: never.
	Renew time.Duration
	Seed  uint64 // of the nonces
}

// server is what the client knows of one proxy.
type server struct {
	ep       netip.AddrPort
	cert     *cert.Certificate // from its offer, verified
	next     int64             // when to send again
	tries    int               // unanswered in a row
	nonce    uint64            // of the last request or hello sent
	sentAt   time.Time         // its wall time
	lastAt   time.Time         // the date of the last hello to it
	admitted bool
}

// Datagram is something to send from the WireGuard socket.
type Datagram struct {
	To netip.AddrPort
	B  []byte
}

// Result is what one answer decided.
type Result struct {
	Endpoint netip.AddrPort
	Cert     *cert.Certificate // the proxy's
	// Offered: the proxy's certificate is good; a hello went out (in the
	// Handle's out).
	Offered bool
	// Admitted: the proxy admitted this node (for the first time, or
	// again after a refusal); Renewed: it renewed an admission.
	Admitted, Renewed bool
	// Refused: why the proxy refused, or why this node refuses the proxy
	// (its certificate); empty if neither.
	Refused string
}

// NewClient returns a client with no proxies yet.
func NewClient(cfg ClientConfig) *Client {
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	if cfg.Revoked == nil {
		cfg.Revoked = func() cert.Revoked { return nil }
	}
	return &Client{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x61646d6974)), servers: map[netip.AddrPort]*server{}}
}

// Add makes the proxy at ep one to be admitted by, due at now. It reports
// false if it is known already.
func (c *Client) Add(ep netip.AddrPort, now int64) bool {
	if c.servers[ep] != nil {
		return false
	}
	c.servers[ep] = &server{ep: ep, next: now}
	c.order = append(c.order, ep)
	return true
}

// Remove forgets the proxy at ep.
func (c *Client) Remove(ep netip.AddrPort) {
	delete(c.servers, ep)
	c.order = slices.DeleteFunc(c.order, func(e netip.AddrPort) bool { return e == ep })
}

// Admitted lists the proxies that admitted this node, as added.
func (c *Client) Admitted() []*cert.Certificate {
	var out []*cert.Certificate
	for _, ep := range c.order {
		if s := c.servers[ep]; s.admitted {
			out = append(out, s.cert)
		}
	}
	return out
}

// Next is when Tick next has something to send.
func (c *Client) Next() int64 {
	next := int64(1<<63 - 1)
	for _, s := range c.servers {
		next = min(next, s.next)
	}
	return next
}

// Tick returns what is due at now: a request to each proxy whose
// certificate is not known, a hello to each that is (a renewal, or a retry).
func (c *Client) Tick(now int64, wall time.Time) []Datagram {
	var out []Datagram
	for _, ep := range c.order {
		s := c.servers[ep]
		if now < s.next {
			continue
		}
		backoff := min(1<<min(s.tries, 3), 8)
		s.next = now + int64(backoff)*int64(c.cfg.Retry)
		s.tries++
		s.nonce, s.sentAt = c.rng.Uint64(), wall
		if s.cert == nil || s.tries > 4 {
			// Not known, or silent for a while: perhaps another proxy
			// now, with another key. Ask again.
			s.cert = nil
			out = append(out, Datagram{ep, AppendRequest(wall, s.nonce)})
			continue
		}
		if b, err := c.hello(s, wall); err == nil {
			out = append(out, Datagram{ep, b})
		}
	}
	return out
}

func (c *Client) hello(s *server, wall time.Time) ([]byte, error) {
	// A proxy takes this node's hellos only dated each after the last it
	// took (Latest), whatever the wall clock does.
	// (Dates are whole milliseconds on the wire.)
	wall = wall.Truncate(time.Millisecond)
	if !wall.After(s.lastAt) {
		wall = s.lastAt.Add(time.Millisecond)
	}
	s.lastAt = wall
	var extra []byte
	if c.cfg.Extra != nil {
		extra = c.cfg.Extra()
	}
	return AppendHello(c.cfg.Keys, wall, s.nonce, s.cert.PublicKey, c.cfg.Cert, extra)
}

// Handle takes a datagram from the WireGuard socket that starts with
// Magic. It returns what it decided, or false if the datagram was no
// answer to this client (stale, forged, replayed, or for another).
// Anything it must send at once (a hello after an offer) is in out.
func (c *Client) Handle(now int64, wall time.Time, from netip.AddrPort, pkt []byte) (r Result, out []Datagram, ok bool) {
	s := c.servers[from]
	if s == nil {
		return Result{}, nil, false
	}
	m, err := Open(pkt, wall)
	if err != nil {
		return Result{}, nil, false
	}
	r.Endpoint = from
	switch m.Kind {
	case KindOffer:
		o, err := ParseOffer(m)
		if err != nil || o.Nonce != s.nonce || s.cert != nil {
			return Result{}, nil, false
		}
		pc := o.Cert
		r.Cert = pc
		if _, err := c.cfg.Pool.Verify(pc, wall, c.cfg.Revoked()); err != nil {
			r.Refused = fmt.Sprintf("proxy at %v: %v", from, err)
		} else if pc.Role != cert.RoleProxy {
			r.Refused = fmt.Sprintf("%q at %v has a %v certificate, not a proxy's", pc.Name, from, pc.Role)
		}
		if r.Refused != "" {
			s.next = now + 8*int64(c.cfg.Retry)
			return r, nil, true
		}
		s.cert, s.tries = pc, 0
		s.nonce, s.sentAt = c.rng.Uint64(), wall
		b, err := c.hello(s, wall)
		if err != nil {
			r.Refused = err.Error()
			return r, nil, true
		}
		s.next = now + int64(c.cfg.Retry)
		r.Offered = true
		return r, []Datagram{{from, b}}, true
	case KindWelcome:
		if s.cert == nil {
			return Result{}, nil, false
		}
		w, err := OpenWelcome(c.cfg.Keys, s.cert.PublicKey, pkt, m)
		if err != nil || w.Nonce != s.nonce {
			return Result{}, nil, false
		}
		s.nonce, s.tries = 0, 0 // answered: a replay of it is no answer
		r.Cert = s.cert
		if !w.OK {
			r.Refused = w.Reason
			s.admitted = false
			s.next = now + 8*int64(c.cfg.Retry)
			return r, nil, true
		}
		r.Admitted, r.Renewed = !s.admitted, s.admitted
		s.admitted = true
		s.next = int64(1<<63 - 1)
		if c.cfg.Renew > 0 {
			s.next = now + int64(c.cfg.Renew)
		}
		return r, nil, true
	}
	return Result{}, nil, false
}
