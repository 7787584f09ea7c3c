package edge

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/overlay"
)

// An edge asks its current proxy which live proxies would admit it every
// learnInterval; until the first answer, and after a proxy it was told of
// could not be added, learnInterval/4 after each try. It waits learnTimeout
// for an answer.
const (
	learnInterval = 2 * time.Second
	learnTimeout  = time.Second
)

// LearnerConfig is what a Learner needs.
type LearnerConfig struct {
	// Edge is the edge's file: its name, key, addresses, overlay prefix
	// and control port.
	Edge *config.Edge
	// OnEvent, if set, hears "learned" events; Logf, the proxies not used
	// and why.
	OnEvent func(overlay.Event)
	Logf    func(format string, args ...any)
	// FirstSeq numbers the first question: the driver passes a random
	// value, so that an answer cannot be guessed (answers must also come
	// from the proxy asked).
	FirstSeq uint32
}

// Learner keeps asking the current proxy which proxies would admit this
// edge and decides which of them become candidates: WireGuard peers that
// the attacher probes and may move to. Learned proxies stay candidates; one
// that dies is just never chosen. Not safe for concurrent use.
type Learner struct {
	cfg    LearnerConfig
	digest uint32 // of the last list learned in full; 0 asks for the whole list
	seq    uint32 // of the last question
	next   int64  // when to ask, or, while asking, to give up waiting
	asking bool
	from   string         // the proxy asked
	to     netip.AddrPort // where it was asked: its answer comes from there
}

// NewLearner asks a first time learnInterval/4 after now.
func NewLearner(cfg LearnerConfig, now int64) *Learner {
	return &Learner{cfg: cfg, next: now + int64(learnInterval/4), seq: cfg.FirstSeq}
}

// Next is when the learner next wants a Tick.
func (l *Learner) Next() int64 { return l.next }

// Tick asks cur, the proxy the edge is attached to, when a question is due.
func (l *Learner) Tick(now int64, cur Candidate) []Packet {
	switch {
	case now < l.next:
		return nil
	case l.asking:
		// No answer: ask again soon.
		l.asking, l.next = false, now+int64(learnInterval/4)
		return nil
	}
	if l.seq++; l.seq == 0 {
		l.seq++
	}
	b, err := encode(l.seq, &overlay.ProxiesReq{Digest: l.digest})
	if err != nil || !cur.Addr.IsValid() {
		l.asking, l.next = false, now+int64(learnInterval/4)
		return nil
	}
	l.asking, l.next, l.from = true, now+int64(learnTimeout), cur.Name
	l.to = netip.AddrPortFrom(cur.Addr, l.cfg.Edge.ControlPort)
	return []Packet{{To: l.to, Data: b}}
}

// Handle takes a datagram that reached the edge's control socket and
// reports whether it was the answer the learner waited for. The proxies it
// names that can be candidates (none clashes with cands, the candidates so
// far, or with the edge) are given to add, which makes each a WireGuard
// peer and a candidate; an error from add makes the next question come
// soon and ask for the whole list.
func (l *Learner) Handle(now int64, from netip.AddrPort, b []byte, cands []Candidate, add func(Candidate) error) bool {
	seq, msg, err := decode(b)
	m, ok := msg.(*overlay.Proxies)
	if err != nil || !ok || !l.asking || seq != l.seq || from != l.to {
		return false
	}
	l.asking = false
	if l.learnAll(m.Peers, cands, add) {
		l.digest, l.next = m.Digest, now+int64(learnInterval)
	} else {
		// Ask for the whole list again soon: what failed may work then.
		l.digest, l.next = 0, now+int64(learnInterval/4)
	}
	return true
}

// Stop ends the question under way; the learner asks no more.
func (l *Learner) Stop() { l.asking, l.next = false, math.MaxInt64 }

// learnAll gives add the proxies l.from named that can be candidates,
// logging those it cannot use; it reports whether all went well (or cannot
// go better).
func (l *Learner) learnAll(peers []overlay.Member, cands []Candidate, add func(Candidate) error) bool {
	cands = slices.Clone(cands)
	ok := true
	for i, m := range peers {
		err := Check(l.cfg.Edge, cands, m)
		if err == nil {
			c := NewCandidate(l.cfg.Edge, config.ProxyPeer{Name: m.Name, PublicKey: m.PublicKey, Endpoint: m.Endpoint, Address: m.Addrs(), Cluster: m.Cluster}, true)
			if aerr := add(c); aerr != nil {
				err = fmt.Errorf("%w: %v", errAddPeer, aerr)
			} else {
				cands = append(cands, c)
			}
		}
		switch {
		case errors.Is(err, ErrKnown):
		case errors.Is(err, ErrFull):
			l.logf("%s: %d of the proxies %q told of not used: an edge attaches to at most %d", l.cfg.Edge.Name, len(peers)-i, l.from, config.MaxCandidates)
			return ok
		case errors.Is(err, errAddPeer):
			l.logf("%s: proxy %q, told by %q: %v", l.cfg.Edge.Name, m.Name, l.from, err)
			ok = false
		case err != nil:
			l.logf("%s: proxy %q, told by %q: %v", l.cfg.Edge.Name, m.Name, l.from, err)
		case l.cfg.OnEvent != nil:
			l.cfg.OnEvent(overlay.Event{Proxy: m.Name, Kind: overlay.EventLearned, Name: l.cfg.Edge.Name, Reason: m.Name + ", told by " + l.from})
		}
	}
	return ok
}

func (l *Learner) logf(format string, args ...any) {
	if l.cfg.Logf != nil {
		l.cfg.Logf(format, args...)
	}
}

var (
	// ErrKnown: the proxy is a candidate already.
	ErrKnown = errors.New("known")
	// ErrFull: the edge has config.MaxCandidates candidates.
	ErrFull    = errors.New("edge has enough candidates")
	errAddPeer = errors.New("cannot add a WireGuard peer")
)

// Check says why proxy m cannot be a new candidate of the edge cfg whose
// candidates are cands: ErrKnown if it is one, ErrFull if there are enough,
// an error if it clashes with a candidate's key or addresses, or with the
// edge's, lies outside the overlay, has no endpoint to send to, or no
// address of the edge's family.
func Check(cfg *config.Edge, cands []Candidate, m overlay.Member) error {
	for _, c := range cands {
		p := c.Peer
		switch {
		case p.Name == m.Name && p.PublicKey == m.PublicKey:
			return ErrKnown
		case p.Name == m.Name:
			return fmt.Errorf("has another key than the %q this edge has", p.Name)
		case p.PublicKey == m.PublicKey:
			return fmt.Errorf("has the key of %q", p.Name)
		case slices.Contains(p.Address, m.Addr) || (m.Addr6.IsValid() && slices.Contains(p.Address, m.Addr6)):
			return fmt.Errorf("has an address of %q", p.Name)
		}
	}
	switch {
	case len(cands) >= config.MaxCandidates:
		return ErrFull
	case m.PublicKey == cfg.PublicKey || slices.Contains(cfg.Address, m.Addr) || slices.Contains(cfg.Address, m.Addr6):
		return errors.New("has this edge's own key or address")
	case !cfg.InOverlay(m.Addr) || (m.Addr6.IsValid() && !cfg.InOverlay(m.Addr6)):
		return fmt.Errorf("address %v is outside this edge's overlay_prefix", m.Addrs())
	case !m.Endpoint.IsValid() || m.Endpoint.Addr().IsUnspecified():
		return fmt.Errorf("endpoint %v is no address to send to (is its listen address unspecified?)", m.Endpoint)
	case !probeAddr(cfg, config.ProxyPeer{Address: m.Addrs()}).IsValid():
		return errors.New("has no overlay address of this edge's family")
	}
	return nil
}
