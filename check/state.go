package check

import "fmt"

// Status is what a State makes of its results.
type Status uint8

const (
	// Unknown: no verdict yet. A node treats it as not serving: a target
	// does not join a group whose check is unknown.
	Unknown Status = iota
	Healthy
	Failing
)

func (s Status) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Healthy:
		return "healthy"
	case Failing:
		return "failing"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Defaults of rise and fall, as HAProxy's.
const (
	DefaultRise = 2
	DefaultFall = 3
)

// Transition is a change of a State's status.
type Transition struct {
	From, To Status
	Reason   string // the detail of the result that completed the run
	At       int64  // its time, ns
	Run      int    // results in a row that made the change
}

func (t Transition) String() string {
	return fmt.Sprintf("%s → %s after %d in a row: %s", t.From, t.To, t.Run, t.Reason)
}

// State is the status of one check: a pure state machine fed with results,
// with no clock and no goroutine of its own. Not safe for concurrent use.
//
// It starts Unknown. From Unknown, the first success makes it Healthy at
// once (a service that answers at start has no flapping to damp, and a
// target should not wait rise intervals to join), while fall failures in a
// row make it Failing; a dead service therefore never looks healthy. From
// then on it takes fall failures in a row to go from Healthy to Failing
// and rise successes in a row to come back: a service that alternates
// between answering and not stays where it was.
type State struct {
	rise, fall int
	status     Status
	since      int64 // time of the last transition; 0: none yet
	run        int   // results in a row against the current status
	last       Result
	lastAt     int64
	fed        bool
}

// NewState returns an Unknown state. rise and fall below 1 count as 1.
func NewState(rise, fall int) *State {
	return &State{rise: max(rise, 1), fall: max(fall, 1)}
}

// Feed adds a result taken at time at (ns) and reports the transition it
// completes, if any.
func (s *State) Feed(ok bool, detail string, at int64) (Transition, bool) {
	s.last, s.lastAt, s.fed = Result{OK: ok, Detail: detail}, at, true
	var to Status
	switch {
	case s.status == Unknown && ok:
		to = Healthy
	case s.status == Healthy && ok, s.status == Failing && !ok:
		s.run = 0
		return Transition{}, false
	case ok:
		s.run++
		if s.run < s.rise {
			return Transition{}, false
		}
		to = Healthy
	default:
		s.run++
		if s.run < s.fall {
			return Transition{}, false
		}
		to = Failing
	}
	t := Transition{From: s.status, To: to, Reason: detail, At: at, Run: max(s.run, 1)}
	s.status, s.since, s.run = to, at, 0
	return t, true
}

// Status is the current status.
func (s *State) Status() Status { return s.status }

// Since is when the current status began (ns); 0 while Unknown.
func (s *State) Since() int64 { return s.since }

// Last is the latest result and its time; ok is false before the first.
func (s *State) Last() (r Result, at int64, ok bool) { return s.last, s.lastAt, s.fed }
