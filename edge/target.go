package edge

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pias-net/pias/overlay"
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
	// Epoch numbers the first join (plus one): proxies keep a target where
	// it joined last, so a restarted target must start above its old joins.
	// The caller passes the wall clock's seconds.
	Epoch uint32
	// FirstSeq numbers the first request: the driver passes a random
	// value, so that an answer cannot be guessed (answers must also come
	// from where the request went).
	FirstSeq uint32
	// OnEvent, if set, hears joined, join-refused and rejoin events. It is
	// called from the methods that drive the Target.
	OnEvent func(overlay.Event)
	// JAP, if set, names the proxy the edge is attached to now: the one a
	// join reaches, for GroupStatus. It is called from the methods that
	// drive the Target.
	JAP func() string
}

// JoinState is where one of a target's groups stands.
type JoinState uint8

const (
	JoinPending JoinState = iota // not joined yet, or joining again
	JoinJoined                   // its JAP accepted the join
	JoinRefused                  // its JAP refused it (tried again every keepalive interval)
	// JoinDraining: asked to drain (Target.Drain): its JAP sends it no new
	// flow and lets the live ones finish; GroupStatus.Flows says how many.
	JoinDraining
	// JoinDrained: out of the group until Target.Undrain; it sends nothing
	// for it. Not kept across a restart: a target that starts joins.
	JoinDrained
)

func (s JoinState) String() string {
	switch s {
	case JoinPending:
		return "pending"
	case JoinJoined:
		return "joined"
	case JoinRefused:
		return "refused"
	case JoinDraining:
		return "draining"
	case JoinDrained:
		return "drained"
	}
	return "joinstate(?)"
}

// GroupStatus is one of a target's groups, as Target.Groups reports it.
type GroupStatus struct {
	Group router.Group
	State JoinState
	// JAP: joined or refused, the proxy that answered (the one the edge
	// was attached to then); "" when unknown.
	JAP string
	// Reason: refused, the reason the proxy gave (from the network);
	// pending after a join, why it joins again ("moved", …).
	Reason string
	// Since is when the group entered State, on the target's clock (Tick's
	// now); Tried is false until the first join went out, and then Since
	// is that time.
	Since int64
	Tried bool
	// Flows: draining, the live flows to this target its JAP reported
	// last, -1 before its first answer; drained, the last count (0 when
	// they ended).
	Flows int
}

// The target's timing, beside its keepalive interval.
const (
	// joinWait is how long a JOIN waits for its answer before the next.
	joinWait = 500 * time.Millisecond
	// unsendableWait is the pause after a JOIN that cannot even be encoded
	// (the target's own settings are out of range): no busy loop.
	unsendableWait = time.Second
	// keepaliveMisses unanswered keepalives in a row make the target join again.
	keepaliveMisses = 3
	// A target that stops sends its leave up to leaveTries times, waiting
	// leaveWait for the JAP's answer each time.
	leaveTries = 3
	leaveWait  = 300 * time.Millisecond
)

// Target keeps a target's groups joined: a JOIN to each group's anycast
// address (which reaches the proxy the edge is attached to, its JAP), then
// keepalives; a keepalive answered "unknown" makes it join again.
//
// One goroutine drives it (Tick, Handle, Moved, Stop); Joined and
// WaitJoined may be called from any.
type Target struct {
	cfg    TargetConfig
	groups []membership
	seq    uint32 // of the last request, across groups: one socket carries them all
	epoch  uint32 // of the last join

	status struct {
		sync.Mutex
		joined map[router.Group]bool
		errs   map[router.Group]string // refusals, for WaitJoined
		groups []GroupStatus           // as t.groups
		gone   []bool                  // as t.groups: left at a reload (SetGroups), not shown
		change chan struct{}           // closed at every change
	}
}

// phase is what one membership does now.
type phase uint8

const (
	idle     phase = iota // until at: then a JOIN if not joined, else a keepalive
	joining               // a JOIN (seq) waits for its answer until at
	keeping               // a keepalive (seq) waits for its answer until at
	leaving               // a LEAVE (seq) waits for its answer until at
	draining              // a DRAIN (seq) waits for its answer until at
	done                  // stopped
)

// drainState is where a membership stands in a drain (Target.Drain).
type drainState uint8

const (
	notDraining drainState = iota
	drainAsked             // DRAINs go instead of keepalives
	drainOver              // drained: nothing goes until Undrain
)

type membership struct {
	Membership
	i      int // its index in Target.groups and status.groups
	phase  phase
	at     int64
	seq    uint32
	joined bool
	misses int  // keepalives unanswered in a row
	lost   bool // the last keepalive went unanswered: the next goes at once
	tries  int  // leaves sent
	drain  drainState
	// drainTimeout: the drain's Drain.Timeout (0: the JAP's default).
	drainTimeout time.Duration
}

// NewTarget makes a target that starts joining every group at the first Tick.
func NewTarget(cfg TargetConfig) *Target {
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = time.Second
	}
	t := &Target{cfg: cfg, epoch: cfg.Epoch, seq: cfg.FirstSeq}
	for i, m := range cfg.Groups {
		t.groups = append(t.groups, membership{Membership: m, i: i, at: math.MinInt64})
	}
	t.status.joined = map[router.Group]bool{}
	t.status.errs = map[router.Group]string{}
	for _, m := range cfg.Groups {
		t.status.groups = append(t.status.groups, GroupStatus{Group: m.Group})
		t.status.gone = append(t.status.gone, false)
	}
	t.status.change = make(chan struct{})
	return t
}

// Next is when the target next wants a Tick; math.MaxInt64 once it is done.
func (t *Target) Next() int64 {
	next := int64(math.MaxInt64)
	for i := range t.groups {
		if g := &t.groups[i]; g.phase != done {
			next = min(next, g.at)
		}
	}
	return next
}

// Tick sends what is due at now: joins, keepalives, and the retries of
// requests whose answer did not come in time.
func (t *Target) Tick(now int64) []Packet {
	var out []Packet
	for i := range t.groups {
		g := &t.groups[i]
		if g.phase == done || g.at > now {
			continue
		}
		switch g.phase {
		case idle:
			switch {
			case g.drain == drainOver:
				g.at = math.MaxInt64
			case g.drain == drainAsked:
				out = t.sendDrain(g, now, out)
			case g.joined:
				out = t.keepalive(g, now, out)
			default:
				out = t.join(g, now, out)
			}
		case draining:
			if g.misses++; g.misses >= keepaliveMisses {
				// Its JAP is gone, and with it the flows there.
				t.drained(g, now, "its JAP stopped answering")
			} else {
				out = t.sendDrain(g, now, out)
			}
		case joining:
			// No answer (the tunnel may still be coming up): again at once.
			out = t.join(g, now, out)
		case keeping:
			g.lost = true
			if g.misses++; g.misses >= keepaliveMisses {
				g.joined = false
				t.setState(g, now, JoinPending, "keepalives unanswered")
				out = t.join(g, now, out)
			} else {
				out = t.keepalive(g, now, out)
			}
		case leaving:
			if g.tries >= leaveTries {
				g.phase = done
			} else {
				out = t.leave(g, now, out)
			}
		}
	}
	return out
}

// Handle takes a datagram that reached the edge's control socket. It
// reports whether it was an answer the target waited for, and returns what
// to send now.
func (t *Target) Handle(now int64, from netip.AddrPort, b []byte) (bool, []Packet) {
	seq, m, err := decode(b)
	if err != nil || seq == 0 {
		return false, nil
	}
	var g *membership
	for i := range t.groups {
		if t.groups[i].seq == seq && t.groups[i].phase != idle && t.groups[i].phase != done {
			g = &t.groups[i]
		}
	}
	if g == nil || from != netip.AddrPortFrom(g.Group.Addr, t.cfg.ControlPort) {
		return false, nil // an answer comes from the group's address, as its JAP answers there
	}
	ack, isJoinAck := m.(*overlay.JoinAck)
	kack, isKeepaliveAck := m.(*overlay.KeepaliveAck)
	dack, isDrainAck := m.(*overlay.DrainAck)
	switch {
	case g.phase == draining && isDrainAck && dack.Group == g.Group:
		g.misses = 0
		switch {
		case dack.Status == overlay.StatusRefused:
			t.setState(g, now, JoinDraining, dack.Reason)
			g.phase, g.at = idle, now+int64(t.cfg.Keepalive)
		case dack.Status != overlay.StatusOK:
			// Unknown: its JAP holds it no more (its flows ended or the
			// timeout passed between two DRAINs), or never did.
			t.drained(g, now, "its JAP holds it no more: its flows ended, or the drain timed out")
		case dack.Flows == 0:
			t.setFlows(g, 0)
			t.drained(g, now, "its flows ended")
		default:
			t.setState(g, now, JoinDraining, "")
			t.setFlows(g, int(min(dack.Flows, math.MaxInt32)))
			g.phase, g.at = idle, now+int64(t.cfg.Keepalive)
		}
	case g.phase == joining && isJoinAck && ack.Group == g.Group:
		if ack.Status == overlay.StatusRefused {
			t.event(overlay.Event{Kind: overlay.EventJoinRefused, Group: g.Group, Reason: ack.Reason})
			t.setState(g, now, JoinRefused, ack.Reason)
			g.phase, g.at = idle, now+int64(t.cfg.Keepalive)
			break
		}
		g.joined, g.misses = true, 0
		t.event(overlay.Event{Kind: overlay.EventJoined, Group: g.Group, Target: netip.AddrPortFrom(netip.Addr{}, g.Port)})
		t.setState(g, now, JoinJoined, "")
		g.phase, g.at = idle, now+int64(t.cfg.Keepalive)
		if g.lost {
			g.at = now
		}
	case g.phase == keeping && isKeepaliveAck && kack.Group == g.Group:
		g.lost = false
		if kack.Status != overlay.StatusOK {
			// The proxy that heard us does not know us: join it.
			t.event(overlay.Event{Kind: overlay.EventRejoin, Group: g.Group})
			g.joined = false
			t.setState(g, now, JoinPending, "its JAP no longer knows it")
			g.phase, g.at = idle, now
			break
		}
		g.misses = 0
		g.phase, g.at = idle, now+int64(t.cfg.Keepalive)
	case g.phase == leaving && isJoinAck && ack.Group == g.Group:
		g.phase = done
	default:
		return false, nil
	}
	return true, t.Tick(now)
}

// Moved tells the target that the edge moved away from the proxy at old,
// which may still be alive (the edge may have lost only its own path to
// it): that proxy is told, at its overlay address, to drop the target at
// once, so it stops sending the groups' flows where the target no longer
// accepts them; and every group joins again at once, through whatever
// proxy the anycast prefix reaches now, rather than wait for a keepalive to
// be answered "unknown". A group waiting after a refusal waits on.
func (t *Target) Moved(now int64, old netip.Addr) []Packet {
	var out []Packet
	for i := range t.groups {
		g := &t.groups[i]
		// Best effort, unnumbered: the old proxy may be dead.
		if b, err := encode(0, &overlay.Leave{Group: g.Group, Port: g.Port}); err == nil {
			out = append(out, Packet{To: netip.AddrPortFrom(old, t.cfg.ControlPort), Data: b})
		}
	}
	for i := range t.groups {
		g := &t.groups[i]
		if g.drain == drainAsked {
			// The leave just sent drops it, flows and all, at the old
			// JAP; the new one must not take it.
			t.drained(g, now, "moved while draining")
			continue
		}
		switch g.phase {
		case idle:
			if !g.joined {
				continue
			}
		case keeping:
			g.lost = false
		case joining:
		default:
			continue
		}
		if g.joined {
			t.event(overlay.Event{Kind: overlay.EventRejoin, Group: g.Group, Reason: "moved"})
			g.joined = false
			t.setState(g, now, JoinPending, "moved")
		}
		g.phase, g.at = idle, now
	}
	return append(out, t.Tick(now)...)
}

// Stop leaves every joined group: it tells the JAP, so that it stops
// sending new flows here at once rather than after the keepalives stop; the
// leave is sent again, leaveWait apart, until the JAP answers, up to
// leaveTries times (on a busy host the first may not get out before the
// device closes). A request under way is forgotten. Done reports when all
// is over.
func (t *Target) Stop(now int64) []Packet {
	for i := range t.groups {
		g := &t.groups[i]
		if g.phase == leaving || g.phase == done {
			continue
		}
		if !g.joined {
			g.phase = done
			continue
		}
		g.phase, g.at, g.tries = leaving, now, 0
	}
	return t.Tick(now)
}

// Drain takes the target out of group g's selection for new flows at its
// JAP, which lets the live flows finish and drops the target when they
// reach zero or timeout passes (0: the JAP's default,
// overlay.DefaultDrainTimeout). Groups reports g draining, with the
// flows its JAP reports left, then drained; it stays drained, sending
// nothing for g, until Undrain, but not across a restart. A group not
// joined yet is drained at once; one draining or drained stays as it is.
// The zero Group drains every group.
func (t *Target) Drain(now int64, g router.Group, timeout time.Duration) ([]Packet, error) {
	ms, err := t.members(g)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.drain != notDraining || m.phase == leaving || m.phase == done {
			continue
		}
		m.drainTimeout, m.misses, m.lost = timeout, 0, false
		if !m.joined {
			t.drained(m, now, "drained before it joined")
			continue
		}
		m.drain, m.phase, m.at = drainAsked, idle, now
		t.setState(m, now, JoinDraining, "")
		t.setFlows(m, -1)
	}
	return t.Tick(now), nil
}

// Undrain ends g's drain (the zero Group: every group's): it joins again,
// which its JAP takes as the end of the drain if it still holds it.
func (t *Target) Undrain(now int64, g router.Group) ([]Packet, error) {
	ms, err := t.members(g)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.drain == notDraining || m.phase == leaving || m.phase == done {
			continue
		}
		m.drain, m.joined, m.misses, m.lost = notDraining, false, 0, false
		m.phase, m.at, m.seq = idle, now, 0
		t.setState(m, now, JoinPending, "undrained")
	}
	return t.Tick(now), nil
}

// members is the membership of g, or all of them for the zero Group.
func (t *Target) members(g router.Group) ([]*membership, error) {
	var out []*membership
	for i := range t.groups {
		if g == (router.Group{}) || t.groups[i].Group == g {
			out = append(out, &t.groups[i])
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s is not a group of this target", g)
	}
	return out, nil
}

// drained puts g in the drained state, for reason: it sends nothing more.
func (t *Target) drained(g *membership, now int64, reason string) {
	g.drain, g.joined, g.phase, g.at, g.seq = drainOver, false, idle, math.MaxInt64, 0
	t.setState(g, now, JoinDrained, reason)
}

// setFlows records the live flows g's JAP reported (-1: none yet).
func (t *Target) setFlows(g *membership, flows int) {
	s := &t.status
	s.Lock()
	s.groups[g.i].Flows = flows
	s.Unlock()
}

// sendDrain sends g's next DRAIN.
func (t *Target) sendDrain(g *membership, now int64, out []Packet) []Packet {
	g.phase, g.at, g.seq = draining, now+int64(t.cfg.Keepalive), t.nextSeq()
	if b, err := encode(g.seq, &overlay.Drain{Group: g.Group, Port: g.Port, Timeout: g.drainTimeout}); err == nil {
		out = append(out, Packet{To: netip.AddrPortFrom(g.Group.Addr, t.cfg.ControlPort), Data: b})
	}
	return out
}

// Done reports whether the target has stopped and every leave is over.
func (t *Target) Done() bool { return t.Next() == math.MaxInt64 }

// join sends g's next JOIN.
func (t *Target) join(g *membership, now int64, out []Packet) []Packet {
	t.epoch++
	seq := t.nextSeq()
	b, err := encode(seq, &overlay.Join{Group: g.Group, Port: g.Port, Name: t.cfg.Name,
		Epoch: t.epoch, Policy: g.Policy, Weight: uint32(max(g.Weight, 1)), Keepalive: t.cfg.Keepalive})
	if err != nil {
		// This target's own settings cannot be sent: say so, and do not spin.
		t.event(overlay.Event{Kind: overlay.EventJoinRefused, Group: g.Group, Reason: err.Error()})
		t.setState(g, now, JoinRefused, err.Error())
		g.phase, g.at, g.seq = idle, now+int64(unsendableWait), 0
		return out
	}
	t.tried(g, now)
	g.phase, g.at, g.seq = joining, now+int64(joinWait), seq
	return append(out, Packet{To: netip.AddrPortFrom(g.Group.Addr, t.cfg.ControlPort), Data: b})
}

// keepalive sends g's next keepalive; one that cannot be encoded counts as
// unanswered.
func (t *Target) keepalive(g *membership, now int64, out []Packet) []Packet {
	g.phase, g.at, g.seq = keeping, now+int64(t.cfg.Keepalive), t.nextSeq()
	if b, err := encode(g.seq, &overlay.Keepalive{Group: g.Group, Port: g.Port}); err == nil {
		out = append(out, Packet{To: netip.AddrPortFrom(g.Group.Addr, t.cfg.ControlPort), Data: b})
	}
	return out
}

// leave sends g's next LEAVE to its JAP.
func (t *Target) leave(g *membership, now int64, out []Packet) []Packet {
	g.phase, g.at, g.seq = leaving, now+int64(leaveWait), t.nextSeq()
	g.tries++
	if b, err := encode(g.seq, &overlay.Leave{Group: g.Group, Port: g.Port}); err == nil {
		out = append(out, Packet{To: netip.AddrPortFrom(g.Group.Addr, t.cfg.ControlPort), Data: b})
	}
	return out
}

// nextSeq numbers a request; 0 stays for unnumbered ones (Moved's leaves).
func (t *Target) nextSeq() uint32 {
	if t.seq++; t.seq == 0 {
		t.seq++
	}
	return t.seq
}

func (t *Target) event(e overlay.Event) {
	if t.cfg.OnEvent != nil {
		e.Name = t.cfg.Name
		t.cfg.OnEvent(e)
	}
}

// setState records that g is now in state st, for reason.
func (t *Target) setState(g *membership, now int64, st JoinState, reason string) {
	jap := ""
	if st != JoinPending && t.cfg.JAP != nil {
		jap = t.cfg.JAP()
	}
	s := &t.status
	s.Lock()
	defer s.Unlock()
	if st == JoinJoined {
		s.joined[g.Group] = true
	} else {
		delete(s.joined, g.Group)
	}
	if st == JoinRefused {
		s.errs[g.Group] = reason
	}
	gs := &s.groups[g.i]
	if gs.State != st || gs.JAP != jap || gs.Reason != reason || !gs.Tried {
		// A refusal repeated keeps its first time.
		gs.Since = now
	}
	gs.State, gs.JAP, gs.Reason, gs.Tried = st, jap, reason, true
	if st != JoinDraining && st != JoinDrained {
		gs.Flows = 0
	}
	close(s.change)
	s.change = make(chan struct{})
}

// tried records that g's first join went out at now.
func (t *Target) tried(g *membership, now int64) {
	s := &t.status
	s.Lock()
	defer s.Unlock()
	if gs := &s.groups[g.i]; !gs.Tried {
		gs.Since, gs.Tried = now, true
	}
}

// Groups reports each group's state, in the order of the config.
func (t *Target) Groups() []GroupStatus {
	s := &t.status
	s.Lock()
	defer s.Unlock()
	var out []GroupStatus
	for i, g := range s.groups {
		if !s.gone[i] {
			out = append(out, g)
		}
	}
	return out
}

// SetGroups makes ms the target's groups (a reload of its file): a group
// no longer there is left (its JAP is told), a new one joins, and one whose
// port, policy or weight changed joins again with them; the others carry
// on untouched. It returns what to send now, and one line per change.
func (t *Target) SetGroups(now int64, ms []Membership) ([]Packet, []string) {
	var out []Packet
	var changes []string
	want := map[router.Group]Membership{}
	for _, m := range ms {
		want[m.Group] = m
	}
	s := &t.status
	for i := range t.groups {
		g := &t.groups[i]
		if g.phase == done || g.phase == leaving {
			continue
		}
		n, ok := want[g.Group]
		if !ok {
			changes = append(changes, fmt.Sprintf("left %s", g.Group))
			s.Lock()
			s.gone[g.i] = true
			delete(s.joined, g.Group)
			delete(s.errs, g.Group)
			s.Unlock()
			if g.joined {
				g.tries = 0
				out = t.leave(g, now, out)
			} else {
				g.phase = done
			}
			continue
		}
		delete(want, g.Group)
		if n != g.Membership {
			changes = append(changes, fmt.Sprintf("joins %s again: its port, policy or weight changed", g.Group))
			g.Membership = n
			if g.drain == notDraining {
				g.joined = false
				t.setState(g, now, JoinPending, "its file changed")
				out = t.join(g, now, out)
			}
		}
	}
	for _, m := range ms {
		if _, ok := want[m.Group]; !ok {
			continue
		}
		changes = append(changes, fmt.Sprintf("joins %s", m.Group))
		s.Lock()
		t.groups = append(t.groups, membership{Membership: m, i: len(s.groups), at: now})
		s.groups = append(s.groups, GroupStatus{Group: m.Group})
		s.gone = append(s.gone, false)
		s.Unlock()
	}
	s.Lock()
	t.cfg.Groups = slices.Clone(ms)
	close(s.change)
	s.change = make(chan struct{})
	s.Unlock()
	return append(out, t.Tick(now)...), changes
}

// Joined reports whether every group is joined right now.
func (t *Target) Joined() bool {
	s := &t.status
	s.Lock()
	defer s.Unlock()
	return len(s.joined) == len(t.cfg.Groups)
}

// WaitJoined waits until every group is joined, or a join is refused, or
// ctx ends.
func (t *Target) WaitJoined(ctx context.Context) error {
	s := &t.status
	for {
		s.Lock()
		n, ch := len(s.joined), s.change
		var refused error
		for _, m := range t.cfg.Groups {
			if why, ok := s.errs[m.Group]; ok {
				refused = fmt.Errorf("join %s refused: %q", m.Group, why)
				break
			}
		}
		s.Unlock()
		switch {
		case refused != nil:
			return refused
		case n == len(t.cfg.Groups):
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("groups not joined: %w", ctx.Err())
		}
	}
}
