package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pias-net/pias/router"
)

// Membership is one group a target joins, with the local port its service
// listens on.
type Membership struct {
	Group  router.Group
	Port   uint16
	Policy router.Policy // the group's, as this target states it
	Weight int           // this target's share under load; 0 means 1
}

// TargetConfig is what a target's control plane needs.
type TargetConfig struct {
	Name        string
	Groups      []Membership
	ControlPort uint16
	Keepalive   time.Duration // default 1s
	// Dial opens a UDP socket to raddr on the target's host interface.
	Dial func(raddr netip.AddrPort) (net.Conn, error)
	// OnEvent, if set, hears "joined", "refused" and "rejoin" events.
	OnEvent func(Event)
}

// Target keeps a target's groups joined: JOIN to each group's anycast
// address (which reaches the attached proxy, its JAP), then keepalives; a
// keepalive answered "unknown" makes it join again.
type Target struct {
	cfg    TargetConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	joined map[router.Group]bool
	errs   map[router.Group]string
	change chan struct{}
	kicks  []chan struct{} // one per membership: join again now
	conns  []net.Conn      // the memberships' sockets, to cut a wait short
	// epoch numbers joins: proxies keep the target where it joined last.
	// It starts at the clock's seconds so that a restarted target's joins
	// still come after its old ones.
	epoch atomic.Uint32
}

// StartTarget starts joining every group of cfg in the background.
func StartTarget(cfg TargetConfig) (*Target, error) {
	if cfg.Dial == nil {
		return nil, errors.New("overlay: target needs a dialer")
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Target{cfg: cfg, cancel: cancel, joined: map[router.Group]bool{}, errs: map[router.Group]string{}, change: make(chan struct{})}
	t.epoch.Store(uint32(time.Now().Unix()))
	for _, m := range cfg.Groups {
		c, err := cfg.Dial(netip.AddrPortFrom(m.Group.Addr, cfg.ControlPort))
		if err != nil {
			cancel()
			t.wg.Wait()
			return nil, fmt.Errorf("join %s: %w", m.Group, err)
		}
		kick := make(chan struct{}, 1)
		t.kicks = append(t.kicks, kick)
		t.conns = append(t.conns, c)
		t.wg.Add(1)
		go t.run(ctx, c, m, kick)
	}
	return t, nil
}

// Rejoin makes every membership join again at once, through whatever proxy
// the anycast prefix reaches now: the edge moved, so that proxy becomes the
// target's JAP. A join under way finishes first, then the next one starts.
func (t *Target) Rejoin() {
	t.rejoin()
}

// Moved is Rejoin after the edge moved away from the proxy at old, which may
// still be alive (the edge may have lost only its own path to it): that
// proxy is told, at its overlay address, to drop the target at once, so it
// stops sending the groups' flows where the target no longer accepts them.
func (t *Target) Moved(old netip.Addr) {
	for _, m := range t.cfg.Groups {
		leave := Message{Type: TypeLeave, Group: m.Group, Port: m.Port, Name: t.cfg.Name}
		b, err := leave.AppendBinary(nil)
		if err != nil {
			continue
		}
		if c, err := t.cfg.Dial(netip.AddrPortFrom(old, t.cfg.ControlPort)); err == nil {
			c.Write(b) // best effort: the old proxy may be dead
			c.Close()
		}
	}
	t.rejoin()
}

func (t *Target) rejoin() {
	for i, k := range t.kicks {
		select {
		case k <- struct{}{}:
		default: // already asked
		}
		// End a wait for an answer that the old proxy may never send; run
		// sees the kick before it waits again.
		t.conns[i].SetReadDeadline(time.Now())
	}
}

// Joined reports whether every group is joined right now.
func (t *Target) Joined() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.joined) == len(t.cfg.Groups)
}

// WaitJoined waits until every group is joined, or a join is refused, or ctx ends.
func (t *Target) WaitJoined(ctx context.Context) error {
	for {
		t.mu.Lock()
		n, ch := len(t.joined), t.change
		for g, why := range t.errs {
			t.mu.Unlock()
			return fmt.Errorf("join %s refused: %s", g, why)
		}
		t.mu.Unlock()
		if n == len(t.cfg.Groups) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("groups not joined: %w", ctx.Err())
		}
	}
}

// Close leaves every group (best effort) and stops.
func (t *Target) Close() {
	t.cancel()
	t.wg.Wait()
}

func (t *Target) setJoined(g router.Group, ok bool, refused string) {
	t.mu.Lock()
	if ok {
		t.joined[g] = true
	} else {
		delete(t.joined, g)
	}
	if refused != "" {
		t.errs[g] = refused
	}
	close(t.change)
	t.change = make(chan struct{})
	t.mu.Unlock()
}

func (t *Target) event(e Event) {
	if t.cfg.OnEvent != nil {
		e.Name = t.cfg.Name
		t.cfg.OnEvent(e)
	}
}

// run keeps one membership alive over its own socket.
func (t *Target) run(ctx context.Context, c net.Conn, m Membership, kick <-chan struct{}) {
	defer t.wg.Done()
	defer c.Close()
	var seq uint32
	buf := make([]byte, 2048)
	joined := false
	kicked := false
	misses := 0
	lost := false // the last keepalive went unanswered: its wait was the interval
	exchange := func(typ Type, wait time.Duration) (*Message, error) {
		seq++
		req := Message{Type: typ, Seq: seq, Group: m.Group, Port: m.Port, Name: t.cfg.Name}
		if typ == TypeJoin {
			req.Incarnation = t.epoch.Add(1)
			req.Policy, req.Weight, req.Keepalive = m.Policy, uint32(max(m.Weight, 1)), t.cfg.Keepalive
		}
		b, err := req.AppendBinary(nil)
		if err != nil {
			return nil, &encodeError{err}
		}
		if _, err := c.Write(b); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(wait)
		for {
			c.SetReadDeadline(deadline)
			if len(kick) > 0 {
				return nil, errMoved
			}
			n, err := c.Read(buf)
			if err != nil {
				return nil, err
			}
			var ack Message
			if ack.UnmarshalBinary(buf[:n]) == nil && ack.Seq == seq {
				return &ack, nil
			}
		}
	}
	for {
		if ctx.Err() != nil {
			// Tell the JAP, so that it stops sending new flows here at
			// once rather than after the keepalives stop; on a busy host
			// the first try may not get out before the device closes.
			for try := 0; joined && try < leaveTries; try++ {
				if ack, err := exchange(TypeLeave, leaveWait); err == nil && ack.Type == TypeJoinAck {
					break
				}
			}
			return
		}
		moved := kicked
		kicked = false
		if !moved {
			select {
			case <-kick:
				moved = true
			default:
			}
		}
		if moved {
			// Moved to another proxy: join there now rather than wait for a
			// keepalive to be answered "unknown".
			if joined {
				t.event(Event{Kind: "rejoin", Group: m.Group, Reason: "moved"})
			}
			joined = false
			t.setJoined(m.Group, false, "")
		}
		if !joined {
			ack, err := exchange(TypeJoin, 500*time.Millisecond)
			var enc *encodeError
			switch {
			case errors.As(err, &enc):
				// This target's own settings cannot be sent: say so, and do
				// not spin.
				t.event(Event{Kind: "refused", Group: m.Group, Reason: enc.Error()})
				t.setJoined(m.Group, false, enc.Error())
				sleep(ctx, time.Second)
				continue
			case err != nil:
				// No answer yet (tunnel still coming up): try again at once.
				continue
			case ack.Status == StatusRefused:
				t.event(Event{Kind: "refused", Group: m.Group, Reason: ack.Reason})
				t.setJoined(m.Group, false, ack.Reason)
				sleep(ctx, t.cfg.Keepalive)
				continue
			}
			joined, misses = true, 0
			t.event(Event{Kind: "joined", Group: m.Group, Target: netip.AddrPortFrom(netip.Addr{}, m.Port)})
			t.setJoined(m.Group, true, "")
		}
		if !lost {
			if passed, k := sleepKick(ctx, kick, t.cfg.Keepalive); !passed {
				kicked = k
				continue
			}
		}
		ack, err := exchange(TypeKeepalive, t.cfg.Keepalive)
		lost = err != nil && !errors.Is(err, errMoved)
		switch {
		case errors.Is(err, errMoved) || len(kick) > 0:
			// Moved while waiting: the loop joins the new proxy.
		case err != nil:
			if misses++; misses >= 3 {
				joined = false
				t.setJoined(m.Group, false, "")
			}
		case ack.Status != StatusOK:
			// The proxy that heard us does not know us: join it.
			t.event(Event{Kind: "rejoin", Group: m.Group})
			joined = false
			t.setJoined(m.Group, false, "")
		default:
			misses = 0
		}
	}
}

var errMoved = errors.New("moved to another proxy")

// A target that stops sends its leave up to leaveTries times, waiting
// leaveWait for the JAP's answer each time.
const (
	leaveTries = 3
	leaveWait  = 300 * time.Millisecond
)

// encodeError is a message the target cannot even encode (its own
// settings are out of range): trying again will not help.
type encodeError struct{ err error }

func (e *encodeError) Error() string { return e.err.Error() }

// sleepKick waits d or until ctx ends or a kick comes; it reports whether d
// passed, and whether a kick ended the wait.
func sleepKick(ctx context.Context, kick <-chan struct{}, d time.Duration) (passed, kicked bool) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true, false
	case <-ctx.Done():
		return false, false
	case <-kick:
		return false, true
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}
