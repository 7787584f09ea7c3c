package edge

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/pias-net/pias/overlay"
)

// ResetEvery is how many further misses of a dead candidate pass between
// two resets of its WireGuard session.
const ResetEvery = 5

// Probe is a probe the driver is to send now: one echo to candidate Index
// at Addr, counted lost after Timeout (Selector.Timeout); its outcome goes
// to Attacher.Observe. The driver goes on listening for Late after that:
// an answer that comes then goes to Attacher.Late. Late is as long as the
// losses that follow take to make the candidate dead (at most
// MaxTimeout): past that, the edge has moved.
type Probe struct {
	Index int
	Candidate
	Timeout time.Duration
	Late    time.Duration
}

// Move is a change of attachment: the prefix moves from candidate From to
// candidate To.
type Move struct {
	From, To Candidate
	FromIdx  int
	ToIdx    int
	Reason   string // "dead" or "closer"
}

// Event is the "move" event of edge name.
func (m Move) Event(name string) overlay.Event {
	return overlay.Event{Proxy: m.To.Name, Kind: overlay.EventMove, Name: name,
		Reason: fmt.Sprintf("%s → %s (%s)", m.From.Name, m.To.Name, m.Reason)}
}

// Action is what the driver does after a probe's outcome.
type Action struct {
	// Reset: drop the WireGuard session with the probed candidate. A proxy
	// that restarted has forgotten the session, and WireGuard alone would
	// keep sending on it for ~15 s before it handshakes again; a fresh
	// session makes the next probe handshake. It happens when the candidate
	// is found dead and every ResetEvery misses after.
	Reset bool
	// Current says whether the probed candidate carries the prefix now
	// (its reset peer keeps the moved prefixes).
	Current bool
	// Move, if set, is a move to apply; the driver reports success with
	// Applied. Until then the prefix stays where it was, and the next
	// outcome asks again.
	Move *Move
}

// Attacher schedules a probe of every candidate each Interval, feeds the
// outcomes to a Selector, and says when to move the prefix and when to
// reset a session. One list holds the candidates: the edge's file's,
// preferred first, then the learned ones.
//
// It is safe for concurrent use: Status and Current serve other goroutines
// while the driver calls the rest.
type Attacher struct {
	mu      sync.Mutex
	cfg     AttachConfig
	sel     *Selector
	applied int // the candidate the prefix actually sits on
	probes  []probeState
}

type probeState struct {
	next int64 // when the next probe is due
	busy bool  // a probe is out
}

// NewAttacher starts with the prefix on candidate 0; every candidate is
// due a probe at now.
func NewAttacher(cands []Candidate, cfg AttachConfig, now int64) (*Attacher, error) {
	if len(cands) == 0 {
		return nil, errors.New("edge: attacher needs a candidate")
	}
	for _, c := range cands {
		if !c.Addr.IsValid() {
			return nil, fmt.Errorf("edge: candidate %q has no address to probe", c.Name)
		}
	}
	a := &Attacher{cfg: cfg.WithDefaults()}
	a.sel = NewSelector(nil, a.cfg)
	for _, c := range cands {
		a.addLocked(c, now)
	}
	return a, nil
}

// Config is the rule in force, defaults filled in.
func (a *Attacher) Config() AttachConfig { return a.cfg }

// Add makes c a candidate (a proxy the edge learned of), due a probe at
// now, and returns its index.
func (a *Attacher) Add(c Candidate, now int64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addLocked(c, now)
}

func (a *Attacher) addLocked(c Candidate, now int64) int {
	a.probes = append(a.probes, probeState{next: now})
	return a.sel.Add(c)
}

// Next is when the next probe is due; math.MaxInt64 while every candidate
// has a probe out.
func (a *Attacher) Next() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	next := int64(math.MaxInt64)
	for _, p := range a.probes {
		if !p.busy {
			next = min(next, p.next)
		}
	}
	return next
}

// Due returns the probes to send at now, in candidate order. A candidate
// has one probe out at a time; the next is due Interval after this one
// left, or at once when it came back later than that.
func (a *Attacher) Due(now int64) []Probe {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Probe
	for i := range a.probes {
		p := &a.probes[i]
		if p.busy || p.next > now {
			continue
		}
		p.busy, p.next = true, now+int64(a.cfg.Interval)
		timeout := a.sel.Timeout(i)
		late := min(a.cfg.MaxTimeout, time.Duration(a.sel.deadAfter(i)-1)*timeout)
		out = append(out, Probe{Index: i, Candidate: a.sel.Candidate(i), Timeout: timeout, Late: late})
	}
	return out
}

// Observe takes the outcome of candidate i's probe at now: answered after
// rtt, or lost.
func (a *Attacher) Observe(i int, ok bool, rtt time.Duration, now int64) Action {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.probes[i].busy = false
	a.sel.Observe(i, ok, rtt, now)
	return a.decideLocked(i, now)
}

// Late takes an answer to a probe of candidate i that came rtt after it
// left, at now, when Observe had already counted it lost. The candidate
// lives: on a host whose CPU is starved (a laptop compiling, the lab under
// the race detector) every answer comes late, and counting them only as
// losses would move the edge off a live proxy, and back, again and again;
// taken as RTT samples they widen the probe timeout instead (Timeout).
// See Selector.ObserveLate.
func (a *Attacher) Late(i int, rtt time.Duration, now int64) Action {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sel.ObserveLate(i, rtt, now)
	return a.decideLocked(i, now)
}

// decideLocked applies the rule after an outcome of candidate i.
func (a *Attacher) decideLocked(i int, now int64) Action {
	var act Action
	if m, n := a.sel.cands[i].misses, a.sel.deadAfter(i); m >= n && (m-n)%ResetEvery == 0 {
		act.Reset, act.Current = true, i == a.applied
	}
	wasDead := a.sel.dead(a.applied)
	cur, _ := a.sel.Decide(now)
	if cur != a.applied {
		reason := "closer"
		if wasDead {
			reason = "dead"
		}
		act.Move = &Move{From: a.sel.Candidate(a.applied), To: a.sel.Candidate(cur), FromIdx: a.applied, ToIdx: cur, Reason: reason}
	}
	return act
}

// Applied records that the driver moved the prefix as m says.
func (a *Attacher) Applied(m Move) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applied = m.ToIdx
}

// Candidates returns every candidate, by index.
func (a *Attacher) Candidates() []Candidate {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Candidate, a.sel.Len())
	for i := range out {
		out[i] = a.sel.Candidate(i)
	}
	return out
}

// Attached is the candidate that carries the prefix now, and its index.
func (a *Attacher) Attached() (Candidate, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sel.Candidate(a.applied), a.applied
}

// Current names the proxy that carries the prefix now.
func (a *Attacher) Current() string {
	c, _ := a.Attached()
	return c.Name
}

// Status reports the current proxy and every candidate's RTT and liveness.
func (a *Attacher) Status() AttachStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.sel.Status()
	st.Current = a.sel.Candidate(a.applied).Name
	for i := range st.Candidates {
		st.Candidates[i].Current = i == a.applied
	}
	return st
}
