package web

import (
	"sync"
	"time"

	"github.com/pias-net/pias/overlay"
)

// Bounds of the event stream.
const (
	// EventHistory is how many recent events the server keeps for a page
	// that opens (GET /api/events).
	EventHistory = 256
	// MaxStreams is how many event streams (GET /events) may be open at
	// once; one more is refused with 503.
	MaxStreams = 16
	// streamBuffer is how many events wait for a slow stream; past it
	// the stream misses events (and its page fetches /api/view anyway).
	streamBuffer = 64
)

// Event is an overlay.Event as the API shows it.
type Event struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Proxy  string    `json:"proxy,omitempty"`
	Kind   string    `json:"kind"`
	Group  string    `json:"group,omitempty"`
	Target string    `json:"target,omitempty"`
	Name   string    `json:"name,omitempty"`
	Reason string    `json:"reason,omitempty"`
}

// hub keeps the recent events and hands each new one to the open streams.
// Publish never blocks: the control goroutine calls it.
type hub struct {
	mu      sync.Mutex
	seq     uint64
	ring    [EventHistory]Event
	streams map[chan Event]struct{}
	counts  map[string]uint64 // events by kind
	missed  uint64            // events a full stream did not get
}

func newHub() *hub {
	return &hub{streams: map[chan Event]struct{}{}, counts: map[string]uint64{}}
}

func (h *hub) publish(e overlay.Event, now time.Time) {
	ev := Event{Time: now, Proxy: e.Proxy, Kind: string(e.Kind), Name: e.Name, Reason: e.Reason}
	if e.Group.Addr.IsValid() {
		ev.Group = e.Group.String()
	}
	if e.Target.IsValid() {
		ev.Target = e.Target.String()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	ev.Seq = h.seq
	h.ring[h.seq%EventHistory] = ev
	if len(h.counts) < 64 { // kinds are the code's own; the bound is for safety
		h.counts[ev.Kind]++
	} else if _, ok := h.counts[ev.Kind]; ok {
		h.counts[ev.Kind]++
	}
	for c := range h.streams {
		select {
		case c <- ev:
		default:
			h.missed++
		}
	}
}

// recent lists the kept events, oldest first.
func (h *hub) recent() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := []Event{}
	first := uint64(1)
	if h.seq > EventHistory {
		first = h.seq - EventHistory + 1
	}
	for s := first; s <= h.seq; s++ {
		out = append(out, h.ring[s%EventHistory])
	}
	return out
}

// subscribe opens a stream, or returns nil when MaxStreams are open.
func (h *hub) subscribe() chan Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.streams) >= MaxStreams {
		return nil
	}
	c := make(chan Event, streamBuffer)
	h.streams[c] = struct{}{}
	return c
}

func (h *hub) unsubscribe(c chan Event) {
	h.mu.Lock()
	delete(h.streams, c)
	h.mu.Unlock()
}

// stats returns the counts by kind, the missed events and open streams.
func (h *hub) stats() (map[string]uint64, uint64, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	counts := make(map[string]uint64, len(h.counts))
	for k, v := range h.counts {
		counts[k] = v
	}
	return counts, h.missed, len(h.streams)
}
