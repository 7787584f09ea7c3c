package sim

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Event is one line of a membership trace: at At, a member joins (or
// leaves) the group at proxy Proxy (an index into the simulated proxies).
type Event struct {
	At    time.Duration
	Proxy int
	Join  bool
}

// TraceParams shape the synthetic fig6 trace. Arrivals follow
// Peak·sin²(πt/Arrive) over [0, Arrive], scaled so that the concurrent
// group size peaks at Members; each session is Pareto(Alpha, MinSession)
// cut at MaxSession, so every member has left by Arrive+MaxSession.
type TraceParams struct {
	Members    int           // peak concurrent members
	Proxies    int           // proxies the members join at
	Duration   time.Duration // the event: Arrive + MaxSession
	MinSession time.Duration // Pareto scale
	MaxSession time.Duration // cut-off of the tail
	Alpha      float64       // Pareto shape (heavy tail for α < 2)
	Zipf       float64       // 0: uniform spread over proxies; else the Zipf exponent s > 1
	Seed       uint64
}

// DefaultTrace is the fig6 event of the paper: 200 minutes.
func DefaultTrace(members, proxies int, seed uint64) TraceParams {
	return TraceParams{Members: members, Proxies: proxies, Duration: 200 * time.Minute,
		MinSession: 2 * time.Minute, MaxSession: 30 * time.Minute, Alpha: 1.5, Seed: seed}
}

func (tp TraceParams) String() string {
	spread := "uniform"
	if tp.Zipf > 0 {
		spread = fmt.Sprintf("zipf s=%g", tp.Zipf)
	}
	return fmt.Sprintf("synthetic trace: peak %d members over %d proxies (%s), %v event, arrivals sin² over the first %v, sessions Pareto(α=%g, min %v) cut at %v, seed %d",
		tp.Members, tp.Proxies, spread, tp.Duration, tp.Duration-tp.MaxSession, tp.Alpha, tp.MinSession, tp.MaxSession, tp.Seed)
}

// survival is P(session > d) of the cut Pareto.
func (tp TraceParams) survival(d time.Duration) float64 {
	switch {
	case d < tp.MinSession:
		return 1
	case d >= tp.MaxSession:
		return 0
	}
	return math.Pow(float64(tp.MinSession)/float64(d), tp.Alpha)
}

// session draws one session length.
func (tp TraceParams) session(r *rand.Rand) time.Duration {
	u := 1 - r.Float64() // (0, 1]
	d := time.Duration(float64(tp.MinSession) / math.Pow(u, 1/tp.Alpha))
	return min(d, tp.MaxSession)
}

// Synthetic makes the trace: events sorted by time (a leave at the same
// instant as a join comes after it).
func Synthetic(tp TraceParams) []Event {
	arrive := tp.Duration - tp.MaxSession
	shape := func(t time.Duration) float64 {
		s := math.Sin(math.Pi * float64(t) / float64(arrive))
		return s * s
	}
	// The concurrent size at t is ∫ λ(u)·P(S > t−u) du: find its peak for
	// a unit rate on a 10 s grid, then scale the rate to Members.
	const step = 10 * time.Second
	peak := 0.0
	for t := time.Duration(0); t <= tp.Duration; t += step {
		c := 0.0
		for u := max(0, t-tp.MaxSession); u <= t && u <= arrive; u += step {
			c += shape(u) * tp.survival(t-u) * step.Seconds()
		}
		peak = max(peak, c)
	}
	rate := float64(tp.Members) / peak // arrivals a second at the top of sin²
	r := rand.New(rand.NewPCG(tp.Seed, 0x666967360a))
	pick := spreader(tp.Proxies, tp.Zipf, r)
	var ev []Event
	// Arrivals: a Poisson process of rate rate·shape(t), by thinning.
	for t := time.Duration(0); ; {
		t += time.Duration(r.ExpFloat64() / rate * 1e9)
		if t >= arrive {
			break
		}
		if r.Float64() >= shape(t) {
			continue
		}
		p := pick()
		ev = append(ev, Event{At: t, Proxy: p, Join: true}, Event{At: t + tp.session(r), Proxy: p})
	}
	SortEvents(ev)
	return ev
}

// SortEvents orders a trace by time, joins before leaves at one instant,
// then by proxy: a stable order whatever the input's. Events equal in all
// three are the same, so an unstable sort (much faster than a stable one
// over millions) gives the same trace.
func SortEvents(ev []Event) {
	slices.SortFunc(ev, func(a, b Event) int {
		switch {
		case a.At != b.At:
			return cmpInt(int64(a.At), int64(b.At))
		case a.Join != b.Join:
			if a.Join {
				return -1
			}
			return 1
		}
		return a.Proxy - b.Proxy
	})
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// spreader picks the proxy of each arrival: uniformly, or by Zipf's law
// over a seeded permutation of the proxies (so the busiest is not always
// proxy 0, which would also be where the RAPs' hash lands by chance).
func spreader(n int, s float64, r *rand.Rand) func() int {
	if s <= 0 || n < 2 {
		return func() int { return r.IntN(n) }
	}
	perm := r.Perm(n)
	z := rand.NewZipf(r, s, 1, uint64(n-1))
	return func() int { return perm[z.Uint64()] }
}

// WriteTrace writes ev as the CSV that ReadTrace reads:
// "seconds,proxy,join|leave".
func WriteTrace(w io.Writer, ev []Event) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "seconds,proxy,event")
	for _, e := range ev {
		kind := "leave"
		if e.Join {
			kind = "join"
		}
		fmt.Fprintf(bw, "%s,%d,%s\n", strconv.FormatFloat(e.At.Seconds(), 'f', 6, 64), e.Proxy, kind)
	}
	return bw.Flush()
}

// ReadTrace reads a CSV trace: a line per event, "time,proxy,join|leave",
// time in seconds from the start of the event, proxy an index below
// proxies. A first line that does not parse as an event is a header. A
// leave at a proxy that has no member there is an error: the trace is
// inconsistent. The events are returned sorted (SortEvents).
func ReadTrace(r io.Reader, proxies int) ([]Event, error) {
	sc := bufio.NewScanner(r)
	var ev []Event
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		e, err := parseEvent(s, proxies)
		if err != nil {
			if line == 1 {
				continue // a header
			}
			return nil, fmt.Errorf("trace line %d: %v", line, err)
		}
		ev = append(ev, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	SortEvents(ev)
	count := make([]int, proxies)
	for _, e := range ev {
		if e.Join {
			count[e.Proxy]++
		} else if count[e.Proxy]--; count[e.Proxy] < 0 {
			return nil, fmt.Errorf("trace: a leave at proxy %d at %v, which has no member then", e.Proxy, e.At)
		}
	}
	return ev, nil
}

func parseEvent(s string, proxies int) (Event, error) {
	f := strings.Split(s, ",")
	if len(f) != 3 {
		return Event{}, fmt.Errorf("want time,proxy,join|leave; got %q", s)
	}
	sec, err := strconv.ParseFloat(strings.TrimSpace(f[0]), 64)
	if err != nil || sec < 0 || sec > 1e7 || math.IsNaN(sec) {
		return Event{}, fmt.Errorf("bad time %q", f[0])
	}
	p, err := strconv.Atoi(strings.TrimSpace(f[1]))
	if err != nil || p < 0 || p >= proxies {
		return Event{}, fmt.Errorf("bad proxy %q (want 0..%d)", f[1], proxies-1)
	}
	var join bool
	switch strings.ToLower(strings.TrimSpace(f[2])) {
	case "join":
		join = true
	case "leave":
	default:
		return Event{}, fmt.Errorf("bad event %q (want join or leave)", f[2])
	}
	return Event{At: time.Duration(math.Round(sec * 1e9)), Proxy: p, Join: join}, nil
}
