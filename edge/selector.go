package edge

import (
	"math"
	"net/netip"
	"time"

	"github.com/pias-net/pias/config"
)

// Emulated native anycast at an edge: the edge probes every candidate proxy
// and keeps the anycast prefix (its attachment) on the nearest live one, as
// BGP would for real IP anycast. Selector is the decision; Attacher adds
// the probe schedule and the resets.

// Candidate is a proxy an edge may attach to.
type Candidate struct {
	Name string
	// Addr is the proxy's overlay address of the edge's family: the edge
	// probes it and asks it which proxies it knows.
	Addr netip.Addr
	// Peer is what makes it the edge's WireGuard peer.
	Peer config.ProxyPeer
	// Learned: not in the edge's file; a proxy said it would admit the edge.
	Learned bool
}

// NewCandidate is proxy pp as a candidate of the edge cfg; its Addr is
// invalid if pp has no overlay address of the edge's family.
func NewCandidate(cfg *config.Edge, pp config.ProxyPeer, learned bool) Candidate {
	return Candidate{Name: pp.Name, Addr: probeAddr(cfg, pp), Peer: pp, Learned: learned}
}

// probeAddr is the overlay address of proxy pp that the edge probes and
// asks: IPv4 if the edge has an IPv4 address, else IPv6 (invalid if pp has
// none of that family).
func probeAddr(cfg *config.Edge, pp config.ProxyPeer) netip.Addr {
	if cfg.Addr4().IsValid() {
		return pp.Addr4()
	}
	return pp.Addr6()
}

// AttachConfig tunes probing and the switching rule. Zero fields take the
// defaults of DefaultAttachConfig.
type AttachConfig struct {
	Interval time.Duration // between probes of one candidate; default 200 ms
	// Timeout: a probe unanswered this long is a miss; default Interval.
	// It is the least a probe waits: one of a candidate whose RTT is high
	// or jittery waits its smoothed RTT plus four deviations (TCP's RTO,
	// RFC 6298), up to MaxTimeout.
	Timeout time.Duration
	// MaxTimeout bounds that wait, and with it how long a dead candidate
	// takes to be found dead (Misses × MaxTimeout at most); default 1 s,
	// and never below Timeout.
	MaxTimeout time.Duration
	Misses     int // consecutive misses that make a candidate dead; default 3
	// StartMisses is Misses for a candidate that has never answered: its
	// first WireGuard handshake may take a while on a busy host, and an
	// edge that gives up on its preferred proxy then moves for nothing.
	// Default 10 (2 s at the default Interval).
	StartMisses int
	// A live candidate replaces the current proxy only when its smoothed RTT
	// is lower by at least Margin (fraction of the current RTT) and MinGain,
	// continuously for Hold.
	Margin  float64       // default 0.3
	MinGain time.Duration // default 5 ms
	Hold    time.Duration // default 5 s
	Alpha   float64       // EWMA weight of a new RTT sample; default 0.25
	// OnlyOnFailure moves only away from a dead proxy, never for RTT. A
	// target wants this: flows in progress reach it through its JAP, and
	// WireGuard only accepts them from the peer that carries the overlay
	// prefix, so a move for speed would break them.
	OnlyOnFailure bool
}

// DefaultAttachConfig is the default switching rule: probes every 200 ms,
// dead after 3 misses (under 1 s), switch when ≥ 30 % and ≥ 5 ms better for
// 5 s. The margins are wide because a busy proxy answers probes late: a
// stream through it must not push its client away.
func DefaultAttachConfig() AttachConfig {
	return AttachConfig{
		Interval:    200 * time.Millisecond,
		MaxTimeout:  time.Second,
		Misses:      3,
		StartMisses: 10,
		Margin:      0.3,
		MinGain:     5 * time.Millisecond,
		Hold:        5 * time.Second,
		Alpha:       0.25,
	}
}

// WithDefaults is c with its zero fields set to the defaults.
func (c AttachConfig) WithDefaults() AttachConfig {
	d := DefaultAttachConfig()
	if c.Interval <= 0 {
		c.Interval = d.Interval
	}
	if c.Timeout <= 0 {
		c.Timeout = c.Interval
	}
	if c.MaxTimeout <= 0 {
		c.MaxTimeout = d.MaxTimeout
	}
	c.MaxTimeout = max(c.MaxTimeout, c.Timeout)
	if c.Misses <= 0 {
		c.Misses = d.Misses
	}
	if c.StartMisses <= 0 {
		c.StartMisses = max(d.StartMisses, c.Misses)
	}
	if c.Margin <= 0 {
		c.Margin = d.Margin
	}
	if c.MinGain <= 0 {
		c.MinGain = d.MinGain
	}
	if c.Hold <= 0 {
		c.Hold = d.Hold
	}
	if c.Alpha <= 0 || c.Alpha > 1 {
		c.Alpha = d.Alpha
	}
	return c
}

// CandidateStatus is what an edge knows of one candidate proxy.
type CandidateStatus struct {
	Name    string
	Addr    netip.Addr
	Learned bool
	RTT     time.Duration // smoothed; zero before the first answer
	Live    bool          // answered, and fewer than Misses probes lost since
	Misses  int           // consecutive unanswered probes
	Late    int           // answers that came after their probe was counted lost
	LastOK  int64         // the time of the last answer; 0 if none yet
	Current bool
}

// AttachStatus is an edge's attachment: its current proxy and every candidate.
type AttachStatus struct {
	Current    string
	Moves      int
	Candidates []CandidateStatus
}

// cand is a candidate and what the probes told of it.
type cand struct {
	Candidate
	rtt         time.Duration
	rttvar      time.Duration // the mean deviation of the RTT samples
	live        bool
	misses      int
	heard       bool  // answered at least once
	late        int   // answers after their probe was counted lost
	lastOK      int64 // the last answer
	silentSince int64 // the first miss of the current run of misses
}

// Selector decides which candidate carries the anycast prefix. Callers
// feed it probe results and the time. Not safe for concurrent use.
type Selector struct {
	cfg     AttachConfig
	cands   []cand
	current int
	better  int   // candidate that has been clearly better, or -1
	since   int64 // since when it has been
	moves   int
}

// NewSelector starts with the first candidate current (the config's
// preferred proxy) until probes say otherwise.
func NewSelector(cands []Candidate, cfg AttachConfig) *Selector {
	s := &Selector{cfg: cfg.WithDefaults(), better: -1}
	for _, c := range cands {
		s.Add(c)
	}
	return s
}

// Observe records one probe of candidate i at now: answered after rtt, or lost.
func (s *Selector) Observe(i int, ok bool, rtt time.Duration, now int64) {
	c := &s.cands[i]
	if !ok {
		if c.misses == 0 {
			c.silentSince = now
		}
		c.misses++
		if c.misses >= s.cfg.Misses {
			c.live = false
		}
		return
	}
	if rtt <= 0 {
		rtt = time.Microsecond
	}
	if !c.live || c.rtt == 0 {
		// Fresh (or back from the dead): forget the old estimate.
		c.rtt, c.rttvar = rtt, rtt/2
	} else {
		dev := max(c.rtt-rtt, rtt-c.rtt)
		c.rttvar = time.Duration((1-rttvarBeta)*float64(c.rttvar) + rttvarBeta*float64(dev))
		c.rtt = time.Duration((1-s.cfg.Alpha)*float64(c.rtt) + s.cfg.Alpha*float64(rtt))
	}
	c.live, c.misses, c.heard, c.lastOK = true, 0, true, now
}

// ObserveLate records an answer to a probe of candidate i that came rtt
// after it left, at now, when the probe had been counted lost: the
// candidate lives, and rtt is a sample. It counts as answered when the
// probe left: only an answer to a probe sent after the current proxy fell
// silent shows that the fault is that proxy's (Decide).
func (s *Selector) ObserveLate(i int, rtt time.Duration, now int64) {
	c := &s.cands[i]
	last := c.lastOK
	s.Observe(i, true, rtt, now-int64(rtt))
	c.lastOK = max(c.lastOK, last)
	c.late++
}

// rttvarBeta is the weight of a new sample's deviation in rttvar (RFC
// 6298's β).
const rttvarBeta = 0.25

// Timeout is how long a probe of candidate i waits for its answer: the
// configured Timeout, or longer for a candidate whose answers take nearly
// that long or vary a lot (its smoothed RTT plus four mean deviations, as
// TCP's retransmission timeout), up to MaxTimeout. A fixed timeout near
// the RTT would count an answer that is merely slow as a miss, and three
// such in a row would move the edge off a live proxy: on a long path, or
// on a host so busy that its own scheduling delays the answers. A
// candidate that has not answered yet waits as long as the slowest one
// that has: a busy host delays every answer, and a home proxy whose first
// answers all came late would be given up for one that answered in time.
// While none has answered, each miss doubles the wait (as TCP backs off
// its first RTO): on an idle host the first answers come at once.
func (s *Selector) Timeout(i int) time.Duration {
	if s.cands[i].rtt != 0 {
		return s.rto(i)
	}
	d, heard := s.cfg.Timeout, false
	for j := range s.cands {
		if s.cands[j].rtt != 0 {
			d, heard = max(d, s.rto(j)), true
		}
	}
	if !heard {
		d <<= min(s.cands[i].misses, 8)
	}
	return min(d, s.cfg.MaxTimeout)
}

// rto is the probe timeout of candidate i, which has an RTT.
func (s *Selector) rto(i int) time.Duration {
	c := &s.cands[i]
	return min(max(c.rtt+4*c.rttvar, s.cfg.Timeout), s.cfg.MaxTimeout)
}

// dead reports whether candidate i has missed enough probes to be given up.
func (s *Selector) dead(i int) bool { return s.cands[i].misses >= s.deadAfter(i) }

// deadAfter is how many misses in a row make candidate i dead.
func (s *Selector) deadAfter(i int) int {
	if !s.cands[i].heard {
		return s.cfg.StartMisses
	}
	return s.cfg.Misses
}

// Decide returns the current candidate after applying the rule at now, and
// whether it just changed: at once away from a dead current proxy (to the
// live candidate with the lowest RTT, ties in config order, among those
// heard since the current one fell silent); otherwise only to a candidate
// clearly better for Hold.
func (s *Selector) Decide(now int64) (current int, moved bool) {
	if s.dead(s.current) {
		s.better = -1
		// Only a candidate that answered while the current one was silent
		// shows that the fault is the current proxy's: when none did, this
		// host may be the one at fault (a starved CPU, a lost uplink), and
		// moving would not help.
		best := s.best(s.cands[s.current].silentSince)
		if best < 0 {
			return s.current, false // nowhere to go: stay and hope
		}
		s.moveTo(best)
		return s.current, true
	}
	best := s.best(math.MinInt64)
	cur := s.cands[s.current]
	clearly := best >= 0 && cur.live && !s.cfg.OnlyOnFailure &&
		float64(s.cands[best].rtt) <= (1-s.cfg.Margin)*float64(cur.rtt) &&
		cur.rtt-s.cands[best].rtt >= s.cfg.MinGain
	if !clearly {
		s.better = -1
		return s.current, false
	}
	if s.better != best {
		s.better, s.since = best, now
	}
	if now-s.since < int64(s.cfg.Hold) {
		return s.current, false
	}
	s.moveTo(best)
	return s.current, true
}

// best is the live candidate other than the current one with the lowest
// RTT (ties in config order) among those that answered at or after since;
// -1 if none. Leaving a dead proxy (since set), one whose last probe was
// answered goes before one missing its latest probes: on a busy host the
// nearest may be slow too, and moving to it would move the edge twice.
func (s *Selector) best(since int64) int {
	best := -1
	for i, c := range s.cands {
		if i == s.current || !c.live || c.lastOK < since {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		b := &s.cands[best]
		if since != math.MinInt64 && (c.misses == 0) != (b.misses == 0) {
			if c.misses == 0 {
				best = i
			}
			continue
		}
		if c.rtt < b.rtt {
			best = i
		}
	}
	return best
}

func (s *Selector) moveTo(i int) {
	s.current, s.better = i, -1
	s.moves++
}

// Current is the candidate that carries the prefix now.
func (s *Selector) Current() int { return s.current }

// Len is the number of candidates.
func (s *Selector) Len() int { return len(s.cands) }

// Candidate is candidate i.
func (s *Selector) Candidate(i int) Candidate { return s.cands[i].Candidate }

// Add makes a candidate learned at run time; it starts unheard, so it gets
// StartMisses probes before it counts as dead. It returns its index.
func (s *Selector) Add(c Candidate) int {
	s.cands = append(s.cands, cand{Candidate: c})
	return len(s.cands) - 1
}

// Status reports every candidate.
func (s *Selector) Status() AttachStatus {
	st := AttachStatus{Current: s.cands[s.current].Name, Moves: s.moves}
	for i, c := range s.cands {
		st.Candidates = append(st.Candidates, CandidateStatus{Name: c.Name, Addr: c.Addr, Learned: c.Learned,
			RTT: c.rtt, Live: c.live, Misses: c.misses, Late: c.late, LastOK: c.lastOK, Current: i == s.current})
	}
	return st
}
