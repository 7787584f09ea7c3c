package main

import (
	"fmt"
	"io"
	"log"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pias-net/pias/overlay"
)

// The event log is the node's account of its control plane, one event a
// line, for a person and for grep. Two things in it come from the network
// and so from whoever sends: the strings (a target's name, a proxy's) and
// the rate of refusals. A string that is not a plain word is quoted, so
// that no name can end a line and forge the next one; and the refusals of
// one source are rate-limited, so that a node refused at will cannot fill
// the disk or bury what else happens.

// A source's refusals: at most refusalBurst lines per refusalWindow, then
// one summary line when the window ends. At most refusalSources sources
// are counted one by one at a time; beyond, the refusals of a kind share
// one count, so a sender that changes names still gets a few lines.
const (
	refusalWindow  = 10 * time.Second
	refusalBurst   = 5
	refusalSources = 1024
)

// eventLogger prints control-plane events one per line, refusals limited
// per source, and writes the summaries that fall due every second.
func eventLogger(w io.Writer) func(overlay.Event) {
	el := newEventLog(w, time.Now)
	el.l.SetFlags(logFlags(el.l.Flags()))
	go func() {
		for range time.Tick(time.Second) {
			el.flush()
		}
	}()
	return el.event
}

// eventLog writes events to a log; now is its clock.
type eventLog struct {
	l        *log.Logger
	limit    *lineLimiter
	resolves *lineLimiter
}

// A proxy's resolves: at most resolveBurst lines of each kind (resolve,
// resolved) per refusalWindow. A client may send to as many unknown groups
// as the router lets it resolve (64 a second), each a resolve and its
// answer; that is no refusal, but would fill the log all the same.
const resolveBurst = 50

func newEventLog(w io.Writer, now func() time.Time) *eventLog {
	return &eventLog{l: log.New(w, "", log.LstdFlags|log.Lmicroseconds),
		limit:    newLineLimiter(now, refusalWindow, refusalBurst, refusalSources),
		resolves: newLineLimiter(now, refusalWindow, resolveBurst, 16)}
}

// event writes e, unless it is a refusal over its source's limit.
func (el *eventLog) event(e overlay.Event) {
	if e.Group.IsEcho() {
		return
	}
	ok, due := true, append(el.limit.due(), el.resolves.due()...)
	var more []string
	switch {
	case isRefusal(e.Kind):
		ok, more = el.limit.allow(refusalKey(e))
	case e.Kind == overlay.EventResolve || e.Kind == overlay.EventResolved:
		ok, more = el.resolves.allow(string(e.Kind), "at "+logStr(e.Proxy))
	}
	due = append(due, more...)
	for _, s := range due {
		el.l.Print(s)
	}
	if ok {
		el.l.Print(formatEvent(e))
	}
}

// flush writes the summaries of the windows that have ended.
func (el *eventLog) flush() {
	for _, s := range append(el.limit.due(), el.resolves.due()...) {
		el.l.Print(s)
	}
}

// formatEvent is e's line: its kind, then what it concerns.
func formatEvent(e overlay.Event) string {
	var b strings.Builder
	b.WriteString(string(e.Kind))
	if e.Group.Addr.IsValid() {
		fmt.Fprintf(&b, " %s", e.Group)
	}
	if e.Name != "" {
		fmt.Fprintf(&b, " %s", logStr(e.Name))
	}
	if e.Target.IsValid() {
		fmt.Fprintf(&b, " %s", e.Target)
	}
	if len(e.RAPs) > 0 {
		raps := make([]string, len(e.RAPs))
		for i, r := range e.RAPs {
			raps[i] = logStr(r)
		}
		fmt.Fprintf(&b, " raps=%s", strings.Join(raps, ","))
	}
	for _, j := range e.JAPs {
		fmt.Fprintf(&b, " jap=%s/%d", j.Addr, j.Targets)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " %s=%q", reasonKey(e.Kind), e.Reason)
	}
	return b.String()
}

// reasonKey names what Event.Reason holds for kind k: for most kinds why,
// but a resolve's policy and a learned member's state are no reasons.
func reasonKey(k overlay.EventKind) string {
	switch k {
	case overlay.EventResolved:
		return "policy"
	case overlay.EventMember:
		return "state"
	}
	return "reason"
}

// logStr is s as it goes in a log line: as it is when it is a plain word
// (names as config files allow them), quoted otherwise, the way slog's
// text handler quotes values. A quoted string has no newline, space or
// comma of its own, so it cannot end a line, or pass for another field.
func logStr(s string) string {
	if s == "" {
		return `""`
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == ':' || c == '/':
		default:
			return strconv.Quote(s)
		}
	}
	return s
}

func isRefusal(k overlay.EventKind) bool {
	switch k {
	case overlay.EventRefuse, overlay.EventJoinRefused, overlay.EventNotAdmitted, overlay.EventUnadmitted:
		return true
	}
	return false
}

// refusalKey says whose refusal e is: its kind, and the source and the
// proxy it concerns. A refused target is its overlay address (WireGuard
// vouches for it), not the name it sent, which it can change at will.
func refusalKey(e overlay.Event) (kind, src string) {
	switch {
	case e.Target.IsValid():
		src = e.Target.Addr().String()
	case e.Name != "":
		src = logStr(e.Name)
	case e.Group.Addr.IsValid():
		src = e.Group.String()
	}
	if e.Proxy != "" {
		src += " at " + logStr(e.Proxy)
	}
	return string(e.Kind), src
}

// lineLimiter lets through at most burst lines of each key per window,
// and counts the rest for a summary when the window ends. It keeps at
// most max keys of their own at a time; the lines of further keys share
// one window per kind.
type lineLimiter struct {
	now    func() time.Time
	window time.Duration
	burst  int
	max    int

	mu    sync.Mutex // guards what follows
	wins  map[lineKey]*lineWindow
	swept time.Time // when due last looked at every window
}

type lineKey struct{ kind, src string }

// lineWindow counts the lines of a key in the window from start.
type lineWindow struct {
	start time.Time
	n     int
}

func newLineLimiter(now func() time.Time, window time.Duration, burst, max int) *lineLimiter {
	return &lineLimiter{now: now, window: window, burst: burst, max: max, wins: map[lineKey]*lineWindow{}}
}

// allow counts a line of (kind, src) and says whether to write it; due
// are the summaries of its window if that has just ended, to write first.
func (l *lineLimiter) allow(kind, src string) (ok bool, due []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := lineKey{kind, src}
	w := l.wins[k]
	if w == nil && len(l.wins) >= l.max {
		k = lineKey{kind, "*"}
		w = l.wins[k]
	}
	if w != nil && now.Sub(w.start) >= l.window {
		due = l.endLocked(k, w, due)
		w = nil
	}
	if w == nil {
		w = &lineWindow{start: now}
		l.wins[k] = w
	}
	w.n++
	return w.n <= l.burst, due
}

// due ends the windows that are over, at most every tenth of a window,
// and returns their summaries.
func (l *lineLimiter) due() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.swept) < l.window/10 {
		return nil
	}
	l.swept = now
	var due []string
	for k, w := range l.wins {
		if now.Sub(w.start) >= l.window {
			due = l.endLocked(k, w, due)
		}
	}
	slices.Sort(due)
	return due
}

// endLocked forgets k's window w, adding its summary to due if it held
// lines back.
func (l *lineLimiter) endLocked(k lineKey, w *lineWindow, due []string) []string {
	delete(l.wins, k)
	if w.n <= l.burst {
		return due
	}
	src := k.src
	if src == "*" {
		src = "(sources beyond the first " + strconv.Itoa(l.max) + ")"
	}
	return append(due, fmt.Sprintf("%s %s … %d more in the last %g s", k.kind, src, w.n-l.burst, l.window.Seconds()))
}
