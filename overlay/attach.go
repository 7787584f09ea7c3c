package overlay

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Emulated native anycast at an edge: the edge probes every candidate proxy
// and keeps the anycast prefix (its attachment) on the nearest live one, as
// BGP would for real IP anycast. Selector is the pure decision logic;
// Attacher runs the probes and applies Selector's moves.

// AttachConfig tunes probing and the switching rule. Zero fields take the
// defaults of DefaultAttachConfig.
type AttachConfig struct {
	Interval time.Duration // between probes of one candidate; default 200 ms
	Timeout  time.Duration // a probe unanswered this long is a miss; default Interval
	Misses   int           // consecutive misses that make a candidate dead; default 3
	// StartMisses is Misses for a candidate that has never answered: its
	// first WireGuard handshake may take a while on a busy host, and an
	// edge that gives up on its preferred proxy then moves for nothing.
	// Default 10 (2 s at the default Interval).
	StartMisses int
	// A live candidate replaces the current proxy only when its smoothed RTT
	// is lower by at least Margin (fraction of the current RTT) and MinGain,
	// continuously for Hold.
	Margin  float64       // default 0.2
	MinGain time.Duration // default 1 ms
	Hold    time.Duration // default 2 s
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
var DefaultAttachConfig = AttachConfig{
	Interval:    200 * time.Millisecond,
	Misses:      3,
	StartMisses: 10,
	Margin:      0.3,
	MinGain:     5 * time.Millisecond,
	Hold:        5 * time.Second,
	Alpha:       0.25,
}

func (c AttachConfig) withDefaults() AttachConfig {
	d := DefaultAttachConfig
	if c.Interval <= 0 {
		c.Interval = d.Interval
	}
	if c.Timeout <= 0 {
		c.Timeout = c.Interval
	}
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
	RTT     time.Duration // smoothed; zero before the first answer
	Live    bool          // answered, and fewer than Misses probes lost since
	Misses  int           // consecutive unanswered probes
	LastOK  time.Time     // last answer; zero if none yet
	Current bool

	silentSince time.Time // the first miss of the current run of misses
}

// AttachStatus is an edge's attachment: its current proxy and every candidate.
type AttachStatus struct {
	Current    string
	Moves      int
	Candidates []CandidateStatus
}

// Selector decides which candidate carries the anycast prefix. It is pure:
// callers feed it probe results and the time. Not safe for concurrent use.
type Selector struct {
	cfg     AttachConfig
	cands   []CandidateStatus
	current int
	better  int       // candidate that has been clearly better, or -1
	since   time.Time // since when it has been
	moves   int
}

// NewSelector starts with the first candidate current (the config's
// preferred proxy) until probes say otherwise.
func NewSelector(names []string, addrs []netip.Addr, cfg AttachConfig) *Selector {
	s := &Selector{cfg: cfg.withDefaults(), better: -1}
	for i, n := range names {
		c := CandidateStatus{Name: n}
		if i < len(addrs) {
			c.Addr = addrs[i]
		}
		s.cands = append(s.cands, c)
	}
	return s
}

// Observe records one probe of candidate i: answered after rtt, or lost.
func (s *Selector) Observe(i int, ok bool, rtt time.Duration, now time.Time) {
	c := &s.cands[i]
	if !ok {
		if c.Misses == 0 {
			c.silentSince = now
		}
		c.Misses++
		if c.Misses >= s.cfg.Misses {
			c.Live = false
		}
		return
	}
	if rtt <= 0 {
		rtt = time.Microsecond
	}
	if !c.Live || c.RTT == 0 {
		c.RTT = rtt // fresh (or back from the dead): forget the old estimate
	} else {
		c.RTT = time.Duration((1-s.cfg.Alpha)*float64(c.RTT) + s.cfg.Alpha*float64(rtt))
	}
	c.Live, c.Misses, c.LastOK = true, 0, now
}

// dead reports whether candidate i has missed enough probes to be given up.
func (s *Selector) dead(i int) bool { return s.cands[i].Misses >= s.deadAfter(i) }

// deadAfter is how many misses in a row make candidate i dead.
func (s *Selector) deadAfter(i int) int {
	if s.cands[i].LastOK.IsZero() {
		return s.cfg.StartMisses
	}
	return s.cfg.Misses
}

// Decide returns the current candidate after applying the rule at now, and
// whether it just changed: at once away from a dead current proxy (to the
// live candidate with the lowest RTT, ties in config order, among those
// heard since the current one fell silent); otherwise only to a candidate
// clearly better for Hold.
func (s *Selector) Decide(now time.Time) (current int, moved bool) {
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
	best := s.best(time.Time{})
	cur := s.cands[s.current]
	clearly := best >= 0 && cur.Live && !s.cfg.OnlyOnFailure &&
		float64(s.cands[best].RTT) <= (1-s.cfg.Margin)*float64(cur.RTT) &&
		cur.RTT-s.cands[best].RTT >= s.cfg.MinGain
	if !clearly {
		s.better = -1
		return s.current, false
	}
	if s.better != best {
		s.better, s.since = best, now
	}
	if now.Sub(s.since) < s.cfg.Hold {
		return s.current, false
	}
	s.moveTo(best)
	return s.current, true
}

// best is the live candidate other than the current one with the lowest
// RTT (ties in config order) among those that answered at or after since;
// -1 if none.
func (s *Selector) best(since time.Time) int {
	best := -1
	for i, c := range s.cands {
		if i == s.current || !c.Live || c.LastOK.Before(since) {
			continue
		}
		if best < 0 || c.RTT < s.cands[best].RTT {
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

// Add makes a candidate learned at run time; it starts unheard, so it gets
// StartMisses probes before it counts as dead. It returns its index.
func (s *Selector) Add(name string, addr netip.Addr) int {
	s.cands = append(s.cands, CandidateStatus{Name: name, Addr: addr})
	return len(s.cands) - 1
}

// Status reports every candidate.
func (s *Selector) Status() AttachStatus {
	st := AttachStatus{Current: s.cands[s.current].Name, Moves: s.moves}
	for i, c := range s.cands {
		c.Current = i == s.current
		st.Candidates = append(st.Candidates, c)
	}
	return st
}

// Probe sends one echo to addr and reports the round-trip time; it gives up
// when ctx ends.
type Probe func(ctx context.Context, addr netip.Addr) (time.Duration, error)

// AttachMove is one change of attachment.
type AttachMove struct {
	From, To int
	Status   AttachStatus // just after the move
	Reason   string       // "dead" or "closer"
}

// AttacherConfig is what an Attacher needs.
type AttacherConfig struct {
	Names []string     // candidate proxies, preferred first
	Addrs []netip.Addr // their overlay addresses, probed
	AttachConfig
	Probe Probe
	// Apply moves the prefix from candidate from to candidate to. An error
	// leaves the selector's choice in place; the next decision retries.
	Apply func(from, to int) error
	// OnMove, if set, hears each move after Apply succeeded.
	OnMove func(AttachMove)
	// Reset, if set, is called for a dead candidate when it is found dead
	// and every ResetEvery misses after: it should drop the WireGuard
	// session with it. A proxy that restarted has forgotten the session,
	// and WireGuard alone would keep sending on it for ~15 s before it
	// handshakes again; a fresh session makes the next probe handshake.
	// current says whether the candidate carries the prefix now. It runs
	// with the attacher's lock held: it must not call back into it.
	Reset func(i int, current bool)
	Logf  func(format string, args ...any)
}

// Attacher probes every candidate and keeps the prefix on the one Selector
// picks.
type Attacher struct {
	cfg    AttacherConfig
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	sel     *Selector
	applied int // the candidate the prefix actually sits on
	change  chan struct{}
	moves   chan AttachMove
}

// StartAttacher starts probing; the prefix is assumed to sit on candidate 0.
func StartAttacher(cfg AttacherConfig) (*Attacher, error) {
	if len(cfg.Names) == 0 || len(cfg.Names) != len(cfg.Addrs) {
		return nil, fmt.Errorf("overlay: attacher needs one address per candidate (%d names, %d addresses)", len(cfg.Names), len(cfg.Addrs))
	}
	if cfg.Probe == nil || cfg.Apply == nil {
		return nil, fmt.Errorf("overlay: attacher needs Probe and Apply")
	}
	cfg.AttachConfig = cfg.AttachConfig.withDefaults()
	// Add grows these; the caller's arrays stay untouched.
	cfg.Names, cfg.Addrs = slices.Clone(cfg.Names), slices.Clone(cfg.Addrs)
	ctx, cancel := context.WithCancel(context.Background())
	a := &Attacher{cfg: cfg, ctx: ctx, cancel: cancel, sel: NewSelector(cfg.Names, cfg.Addrs, cfg.AttachConfig), change: make(chan struct{}), moves: make(chan AttachMove, 64)}
	if cfg.OnMove != nil {
		a.wg.Add(1)
		go a.tell(ctx)
	}
	for i, addr := range cfg.Addrs {
		a.wg.Add(1)
		go a.probeLoop(ctx, i, addr)
	}
	return a, nil
}

// Add makes the proxy name at addr a candidate while the attacher runs (a
// proxy the edge learned of), probes it from now on, and returns its
// index, the one Apply and Reset get; -1 after Close.
func (a *Attacher) Add(name string, addr netip.Addr) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return -1
	}
	a.cfg.Names = append(a.cfg.Names, name)
	a.cfg.Addrs = append(a.cfg.Addrs, addr)
	i := a.sel.Add(name, addr)
	a.wg.Add(1)
	go a.probeLoop(a.ctx, i, addr)
	return i
}

// Close stops probing; the prefix stays where it is.
func (a *Attacher) Close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
}

// Status reports the current proxy and every candidate's RTT and liveness.
func (a *Attacher) Status() AttachStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.sel.Status()
	st.Current = a.cfg.Names[a.applied]
	for i := range st.Candidates {
		st.Candidates[i].Current = i == a.applied
	}
	return st
}

// Current names the proxy that carries the prefix now.
func (a *Attacher) Current() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg.Names[a.applied]
}

// Changed returns a channel closed at the next move.
func (a *Attacher) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.change
}

func (a *Attacher) probeLoop(ctx context.Context, i int, addr netip.Addr) {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
		rtt, err := a.cfg.Probe(pctx, addr)
		cancel()
		if ctx.Err() != nil {
			return
		}
		a.observe(i, err == nil, rtt)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ResetEvery is how many further misses of a dead candidate pass between
// two Resets.
const ResetEvery = 5

func (a *Attacher) observe(i int, ok bool, rtt time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	a.sel.Observe(i, ok, rtt, now)
	if m, n := a.sel.cands[i].Misses, a.sel.deadAfter(i); a.cfg.Reset != nil && m >= n && (m-n)%ResetEvery == 0 {
		a.cfg.Reset(i, i == a.applied)
	}
	wasDead := a.sel.dead(a.applied)
	cur, _ := a.sel.Decide(now)
	if cur == a.applied {
		return
	}
	// Apply under the lock so that moves happen one at a time, in order.
	from := a.applied
	if err := a.cfg.Apply(from, cur); err != nil {
		if a.cfg.Logf != nil {
			a.cfg.Logf("attach: move %s → %s: %v", a.cfg.Names[from], a.cfg.Names[cur], err)
		}
		return
	}
	a.applied = cur
	close(a.change)
	a.change = make(chan struct{})
	reason := "closer"
	if wasDead {
		reason = "dead"
	}
	if a.cfg.OnMove != nil {
		st := a.sel.Status()
		select {
		case a.moves <- AttachMove{From: from, To: cur, Status: st, Reason: reason}:
		default:
			// OnMove is far behind; it misses this one (Status stays right).
		}
	}
}

// tell runs OnMove for each move, in order, outside the lock.
func (a *Attacher) tell(ctx context.Context) {
	defer a.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-a.moves:
			a.cfg.OnMove(m)
		}
	}
}
