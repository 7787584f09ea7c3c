package overlay

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// 2-tier proxy health monitoring (paper §3.6), SWIM-like:
//
//   - Tier 1: every proxy probes ClusterProbes other proxies of its own
//     cluster (all of them in a cluster that small): its successors on a
//     ring of the cluster's live members ordered by a hash of their names.
//     So every live member is probed by exactly ClusterProbes others of
//     its cluster, and the traffic at rest stops growing with the
//     cluster's size (probing all of 100 was 2,000 messages a second per
//     proxy). A member that dies is skipped: its watchers move on to the
//     next live one, as rendezvous hashing does for tier 2.
//   - Tier 2: every proxy probes WatchPerCluster proxies in each of
//     WatchClusters other clusters. Clusters and members are picked by
//     rendezvous hash of (watcher, cluster) and (watcher, member), so the
//     choice is deterministic, spread evenly, and every cluster is watched by
//     about N·WatchClusters/(clusters-1) outsiders. Dead members are skipped,
//     so a cluster's watchers move to its live members.
//   - A member that leaves ProbeMisses probes in a row unanswered is
//     suspected. The suspicion is confirmed SWIM-style: ConfirmHelpers other
//     live proxies are asked (ProbeReq) to probe it, and direct probes go on.
//     Any answer, direct or relayed, clears it; none within ConfirmTimeout
//     makes it dead.
//   - A death is told (Fail) cluster by cluster: the proxy that declares it
//     tells every live proxy of its own cluster and FailFanout live
//     proxies of each other cluster (picked by rendezvous hash of the
//     victim and the proxy, so that two proxies that declare the same
//     death tell the same ones); a proxy that learns it from a proxy of
//     another cluster tells every live proxy of its own, once. Every
//     proxy hears each death from up to FailFanout proxies, so the loss of
//     one copy does not matter, and a death costs about FailFanout
//     messages per proxy, not one per pair of proxies (every proxy told
//     every other before).
//   - Comebacks: a proxy announces Alive with its incarnation when it starts
//     (the wall clock in seconds, so a restart has a higher one). A proxy
//     that hears a Fail about itself refutes it with Alive at a higher
//     incarnation. Dead members are still probed, slowly (DeadProbeInterval),
//     and a dead member that answers with a stale incarnation is told (Fail)
//     so that it refutes.
//
// Precedence of news about a member, as in SWIM: Alive(i) beats what is
// known at incarnation < i; Fail(i) beats Alive or suspicion at ≤ i.

// MemberState is how a proxy sees another proxy.
type MemberState uint8

// Member states.
const (
	StateAlive MemberState = iota
	StateSuspect
	StateDead
	// StateJoining: a proxy learned at run time that has not yet been
	// heard from. It is neither probed nor sent anything until it speaks
	// (the newcomer announces itself to everyone), or until joinQuiet has
	// passed.
	StateJoining
)

// startGrace is how long a member this proxy has not heard from yet is
// probed before it is suspected: the first WireGuard handshakes of a
// proxy that just started take a while on a busy host, and a death
// declared for that would move RAP duties back and forth for nothing.
const startGrace = 2 * time.Second

// missesFor is how many unanswered probes in a row make m a suspect.
func (h *health) missesFor(m *mstate) int {
	if m.heard {
		return h.cfg.ProbeMisses
	}
	return max(h.cfg.ProbeMisses, int(startGrace/h.cfg.ProbeInterval))
}

// joinQuiet is how long a joining member is left to make first contact.
const joinQuiet = 3 * time.Second

// String names s.
func (s MemberState) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateJoining:
		return "joining"
	}
	return "state(?)"
}

// MemberInfo is a snapshot of one member as this proxy sees it.
type MemberInfo struct {
	Name        string
	Addr        netip.Addr
	Cluster     string
	State       MemberState
	RTT         time.Duration // smoothed probe round trip; 0: unknown, stale (rttAgeProbes), unwatched or dead
	Incarnation uint32
	Watched     bool // this proxy probes it
	// Unreachable: alive by others' word, but not answering this proxy
	// (a link between the two is cut); no JAP for its new flows.
	Unreachable bool
	// Heard: it has said something to this proxy since this proxy started.
	Heard bool
}

// HealthConfig are the timers and fan-outs of health monitoring.
type HealthConfig struct {
	ProbeInterval     time.Duration // default 100ms
	ProbeMisses       int           // unanswered probes in a row before suspicion; default 3
	ConfirmTimeout    time.Duration // suspicion → death without an answer; default 3 probe intervals
	ConfirmHelpers    int           // proxies asked to probe a suspect; default 2
	WatchClusters     int           // other clusters each proxy watches; default 2
	WatchPerCluster   int           // proxies watched in each; default 2
	DeadProbeInterval time.Duration // how often dead members are probed for a comeback; default 1s
	ClusterProbes     int           // members of its own cluster each proxy probes (tier 1); default 8
	FailFanout        int           // proxies of each other cluster told of a death; default 3
	// Incarnation is this proxy's incarnation at start; NewProxy's default
	// is the wall clock in seconds, so that a restarted proxy outranks its
	// past self.
	Incarnation uint32
}

func (c *HealthConfig) defaults() {
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = 100 * time.Millisecond
	}
	if c.ProbeMisses <= 0 {
		c.ProbeMisses = 3
	}
	if c.ConfirmTimeout <= 0 {
		c.ConfirmTimeout = 3 * c.ProbeInterval
	}
	if c.ConfirmHelpers < 0 {
		c.ConfirmHelpers = 0
	} else if c.ConfirmHelpers == 0 {
		c.ConfirmHelpers = 2
	}
	if c.WatchClusters <= 0 {
		c.WatchClusters = 2
	}
	if c.WatchPerCluster <= 0 {
		c.WatchPerCluster = 2
	}
	if c.DeadProbeInterval <= 0 {
		c.DeadProbeInterval = time.Second
	}
	if c.ClusterProbes <= 0 {
		c.ClusterProbes = 8
	}
	if c.FailFanout <= 0 {
		c.FailFanout = 3
	}
}

// probeWindow is how many recent probes of a member an ack may answer.
const probeWindow = 8

// rttAgeProbes is how many probe intervals an RTT lasts without a new
// sample. A watched member answers every interval; one silent for this long
// is not measured any more (unwatched, cut off, dying), and an RTT this
// old no longer ranks JAPs. It is well past the ProbeMisses+1 intervals
// that make a member unreachable, so a slow answer does not blank it.
const rttAgeProbes = 10

type sentProbe struct {
	seq      uint32
	at       int64
	indirect bool
}

type mstate struct {
	Member
	state       MemberState
	inc         uint32
	srtt        int64 // ns, 0 = none
	rttAt       int64 // when srtt last took a sample
	rttFrom     int64 // when this measurement run's first answer came; 0: none yet (see sampleLocked)
	outstanding int   // probes sent since the last ack
	sent        [probeWindow]sentProbe
	next        int
	suspectAt   int64 // StateJoining: when it was added
	lastProbe   int64
	deadAt      int64 // when it last became dead here
	heard       bool  // it has said something since this proxy started
	lastHeard   int64 // when it last said something
	vouchedAt   int64 // when a helper last relayed its answer to our probe
	unreachable bool  // alive for others, but its probes go unanswered here
}

// probeRelay is a probe this proxy sends for another (ProbeReq).
type probeRelay struct {
	from    netip.Addr
	seq     uint32
	expires int64
}

// change is what health tells its owner after a membership change.
type change struct {
	dead    []Member // newly dead
	revived []Member // dead → alive
	reset   []Member // alive at a new incarnation: restarted, state lost
	added   []Member // new to this proxy and alive (joining → alive, or learned alive)
	// unreachable: alive (others reach it) but not from here any more;
	// reachable: from here again; unwatched: no longer probed from here
	// while it was unreachable, so no longer known to be. Only this
	// proxy's data path cares. A member that dies is in none of them: its
	// death says it all.
	unreachable, reachable, unwatched []Member
	// refuted: this proxy was declared dead and has just said it lives.
	// The RAPs that held it dead dropped its registrations.
	refuted bool
}

func (c *change) empty() bool {
	return len(c.dead)+len(c.revived)+len(c.reset)+len(c.added)+len(c.unreachable)+len(c.reachable)+len(c.unwatched) == 0 && !c.refuted
}

// onlyReach reports whether c is only about this proxy's own reachability.
func (c *change) onlyReach() bool {
	return len(c.dead)+len(c.revived)+len(c.reset)+len(c.added) == 0 && !c.refuted
}

// health is the failure detector of one proxy. It is transport-agnostic:
// send delivers a message to a member's control port, now is the clock,
// changed hears membership changes (called without locks held).
type health struct {
	cfg     HealthConfig
	self    Member
	now     func() int64
	send    func(to netip.Addr, seq uint32, m Msg)
	changed func(change)

	mu          sync.Mutex
	inc         uint32
	members     map[string]*mstate // every other proxy
	byAddr      map[netip.Addr]*mstate
	order       []string // sorted names of members
	nonce       uint32
	probeRelays map[uint32]probeRelay
	announced   bool
	watched     map[string]bool // cache of watchedLocked; nil: stale
	// others caches liveOthers, which every Tick reads (10,000 members
	// copied ten times a second was most of a large overlay's idle cost);
	// nil: stale. Every change of a member's state or incarnation, and
	// every new member, drops it.
	// It is read without the lock (Tick reads it several times).
	others atomic.Pointer[[]liveMember]
	// cut counts the members marked unreachable, so that unreachableAddrs
	// need not walk every member when none is (nearly always).
	cut      int
	lastTick int64
	stats    healthStats
}

type healthStats struct {
	probes, fails, alives, probeReqs uint64
	// deaths: members that turned dead here, by this proxy's verdict or
	// another's; detect sums, over them, the time from their last word
	// heard here to that moment (ns).
	deaths, detect uint64
}

func newHealth(cfg HealthConfig, self Member, members []Member, now func() int64, send func(netip.Addr, uint32, Msg), changed func(change)) *health {
	cfg.defaults()
	h := &health{cfg: cfg, self: self, now: now, send: send, changed: changed, inc: cfg.Incarnation,
		members: map[string]*mstate{}, byAddr: map[netip.Addr]*mstate{}, probeRelays: map[uint32]probeRelay{}}
	for _, m := range members {
		if m.Name == self.Name || h.members[m.Name] != nil {
			continue
		}
		ms := &mstate{Member: m}
		h.members[m.Name] = ms
		h.byAddr[m.Addr] = ms
		h.order = append(h.order, m.Name)
	}
	slices.Sort(h.order)
	return h
}

type outMsg struct {
	to  netip.Addr
	seq uint32
	m   Msg
}

// flush sends what a locked section queued, then reports a change.
func (h *health) flush(out []outMsg, ch change) {
	for i := range out {
		h.send(out[i].to, out[i].seq, out[i].m)
	}
	if !ch.empty() && h.changed != nil {
		h.changed(ch)
	}
}

func (h *health) nextNonce() uint32 {
	h.nonce++
	if h.nonce == 0 {
		h.nonce++
	}
	return h.nonce
}

// pairWeight is the rendezvous weight of b for a: how watchers pick the
// clusters and members they watch, and helpers.
func pairWeight(a, b string) uint64 {
	h := fnvAdd(uint64(fnvOffset), a)
	h ^= 0xff
	h *= fnvPrime
	return weight(h, b)
}

// setState moves m to st, and drops the cached watched set when that
// changes who may be watched (the dead and the joining are not).
func (h *health) setState(m *mstate, st MemberState) {
	if m.state != st {
		h.others.Store(nil)
	}
	if watchable(m.state) != watchable(st) {
		h.watched = nil
	}
	switch {
	case st == StateDead:
		if m.state != StateDead {
			h.stats.deaths++
			if m.heard {
				h.stats.detect += uint64(max(0, h.now()-m.lastHeard))
			}
		}
		m.forgetRTT()
		h.setUnreachable(m, false) // dead is all there is to say of it
	case st == StateSuspect && m.state != StateSuspect:
		// Silent for ProbeMisses probes: its next answers may have waited
		// for a new WireGuard handshake. Keep the estimate, restart the run.
		m.rttFrom = 0
	}
	m.state = st
}

// forgetRTT drops m's RTT: it is no longer measured (dead, unwatched).
func (m *mstate) forgetRTT() { m.srtt, m.rttAt, m.rttFrom = 0, 0, 0 }

// sampleLocked takes the round trip of a direct probe m answered now, sent
// at sent. Samples are counted only from a measurement run's first answer
// on: a run starts when m is first probed, and again after it was
// unwatched, silent (suspect, unreachable), dead or restarted. Probes sent
// before that first answer may have waited in WireGuard for a handshake
// (hundreds of ms to seconds on a busy host), and one such sample skews the
// estimate for dozens of probes; those sent after it found the tunnel up.
// Samples are not capped at a multiple of the estimate: a path that really
// got slower (a reroute, the lab's delay) must show at once, and handshakes
// stall probes only at these run starts, where nothing is counted yet.
func (h *health) sampleLocked(m *mstate, sent, now int64) {
	switch {
	case m.state == StateDead:
		return // a dead member's answers (to slow probes) rank nothing
	case m.rttFrom == 0:
		m.rttFrom = now
		return
	case sent < m.rttFrom:
		return
	}
	sample := now - sent
	if m.srtt == 0 || now-m.rttAt > h.rttMaxAge() {
		m.srtt = sample // nothing fresh to smooth with
	} else {
		m.srtt += (sample - m.srtt) / 8
	}
	m.rttAt = now
}

// rttMaxAge is how old an RTT may be and still count.
func (h *health) rttMaxAge() int64 { return rttAgeProbes * int64(h.cfg.ProbeInterval) }

// rttLocked is m's RTT as MemberInfo.RTT has it: 0 when unknown, stale,
// dead, or no longer watched (tick forgets it at its next round).
func (h *health) rttLocked(m *mstate, now int64, watched bool) time.Duration {
	if !watched || m.state == StateDead || m.srtt == 0 || now-m.rttAt > h.rttMaxAge() {
		return 0
	}
	return time.Duration(m.srtt)
}

func watchable(st MemberState) bool { return st != StateDead && st != StateJoining }

// watchedLocked returns the names of the non-dead members this proxy
// probes: its cluster, and a few members of a few other clusters. The set
// is kept until a member comes, dies, or comes back (setState, add): a
// tick of a large overlay need not rebuild it. Callers must not change it.
func (h *health) watchedLocked() map[string]bool {
	if h.watched == nil {
		h.watched = h.computeWatchedLocked()
	}
	return h.watched
}

func (h *health) computeWatchedLocked() map[string]bool {
	out := map[string]bool{}
	others := map[string][]*mstate{}
	ring := []string{h.self.Name}
	for _, name := range h.order {
		m := h.members[name]
		if m.state == StateDead || m.state == StateJoining {
			continue
		}
		if m.Cluster == h.self.Cluster {
			ring = append(ring, name)
		} else {
			others[m.Cluster] = append(others[m.Cluster], m)
		}
	}
	// Tier 1: the next ClusterProbes members on the cluster's ring.
	slices.SortFunc(ring, func(a, b string) int {
		if c := cmp.Compare(ringKey(a), ringKey(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	at := slices.Index(ring, h.self.Name)
	for i := 1; i < len(ring) && i <= h.cfg.ClusterProbes; i++ {
		out[ring[(at+i)%len(ring)]] = true
	}
	clusters := make([]string, 0, len(others))
	for c := range others {
		clusters = append(clusters, c)
	}
	byWeight := func(key func(string) uint64) func(a, b string) int {
		return func(a, b string) int {
			wa, wb := key(a), key(b)
			switch {
			case wa > wb:
				return -1
			case wa < wb:
				return 1
			}
			return strings.Compare(a, b)
		}
	}
	slices.SortFunc(clusters, byWeight(func(c string) uint64 { return pairWeight(h.self.Name, "cluster:"+c) }))
	for _, c := range clusters[:min(len(clusters), h.cfg.WatchClusters)] {
		ms := others[c]
		names := make([]string, len(ms))
		for i, m := range ms {
			names[i] = m.Name
		}
		slices.SortFunc(names, byWeight(func(n string) uint64 { return pairWeight(h.self.Name, n) }))
		for _, n := range names[:min(len(names), h.cfg.WatchPerCluster)] {
			out[n] = true
		}
	}
	return out
}

// ringKey places a member on its cluster's ring (tier 1).
func ringKey(name string) uint64 { return weight(uint64(fnvOffset), name) }

// tellDeathLocked tells others that m died, as this proxy just learned:
// by its own verdict (src invalid), or by a Fail from src. See the top
// of this file.
func (h *health) tellDeathLocked(out []outMsg, msg *Fail, m *mstate, src netip.Addr) []outMsg {
	var fromOutside bool
	if src.IsValid() {
		from := h.byAddr[src]
		fromOutside = from != nil && from.Cluster != h.self.Cluster
		if !fromOutside {
			return out // its sender told this cluster
		}
	}
	var entries map[string][]*mstate // other clusters' live members
	if !src.IsValid() {
		entries = map[string][]*mstate{}
	}
	for _, name := range h.order {
		o := h.members[name]
		if o == m || o.Addr == src || o.state == StateDead || o.state == StateJoining {
			continue
		}
		switch {
		case o.Cluster == h.self.Cluster:
			out = append(out, outMsg{o.Addr, 0, msg})
		case entries != nil:
			entries[o.Cluster] = append(entries[o.Cluster], o)
		}
	}
	clusters := slices.Sorted(maps.Keys(entries))
	for _, c := range clusters {
		os := entries[c]
		slices.SortFunc(os, func(a, b *mstate) int {
			if c := cmp.Compare(pairWeight(m.Name, b.Name), pairWeight(m.Name, a.Name)); c != 0 {
				return c
			}
			return strings.Compare(a.Name, b.Name)
		})
		for _, o := range os[:min(len(os), h.cfg.FailFanout)] {
			out = append(out, outMsg{o.Addr, 0, msg})
		}
	}
	return out
}

func (h *health) probeLocked(out []outMsg, m *mstate, now int64, indirect bool) []outMsg {
	seq := h.nextNonce()
	m.sent[m.next%probeWindow] = sentProbe{seq: seq, at: now, indirect: indirect}
	m.next++
	h.stats.probes++
	return append(out, outMsg{m.Addr, seq, &Probe{From: h.self.Name, Incarnation: h.inc}})
}

func (h *health) broadcastLocked(out []outMsg, msg Msg, except ...netip.Addr) []outMsg {
	for _, name := range h.order {
		m := h.members[name]
		if m.state == StateDead || m.state == StateJoining || slices.Contains(except, m.Addr) {
			continue
		}
		out = append(out, outMsg{m.Addr, 0, msg})
	}
	return out
}

// tick runs one probe round. Call it every ProbeInterval.
func (h *health) tick() {
	now := h.now()
	var out []outMsg
	var ch change
	h.mu.Lock()
	if !h.announced {
		h.announced = true
		// Everyone, dead or not: a restart must be heard.
		for _, name := range h.order {
			if h.members[name].state == StateJoining {
				continue
			}
			out = append(out, outMsg{h.members[name].Addr, 0, &Alive{Name: h.self.Name, Incarnation: h.inc}})
			h.stats.alives++
		}
	}
	for seq, r := range h.probeRelays {
		if now >= r.expires {
			delete(h.probeRelays, seq)
		}
	}
	watched := h.watchedLocked()
	for _, name := range h.order {
		m := h.members[name]
		switch {
		case m.state == StateJoining:
			if now-m.suspectAt < int64(joinQuiet) {
				continue
			}
			// It never called: call it.
			h.setState(m, StateAlive)
			ch.added = append(ch.added, m.Member)
			continue
		case m.state == StateDead:
			if now-m.lastProbe >= int64(h.cfg.DeadProbeInterval) {
				m.lastProbe = now
				out = h.probeLocked(out, m, now, false)
			}
			continue
		case !watched[name]:
			m.outstanding = 0
			m.forgetRTT()
			if m.state == StateSuspect {
				h.setState(m, StateAlive)
			}
			continue
		}
		if m.state == StateAlive && m.outstanding >= h.missesFor(m) {
			h.setState(m, StateSuspect)
			m.suspectAt = now
			// Ask helpers to probe it for us: a different path, and a
			// second opinion before a death is declared.
			seq := h.nextNonce()
			m.sent[m.next%probeWindow] = sentProbe{seq: seq, at: now, indirect: true}
			m.next++
			for _, hn := range h.helpersLocked(m) {
				h.stats.probeReqs++
				out = append(out, outMsg{h.members[hn].Addr, seq, &ProbeReq{Suspect: m.Name, Incarnation: m.inc}})
			}
		}
		if m.state == StateSuspect && now-m.suspectAt >= int64(h.cfg.ConfirmTimeout) {
			h.setState(m, StateDead)
			m.outstanding, m.lastProbe, m.deadAt = 0, now, now
			h.stats.fails++
			ch.dead = append(ch.dead, m.Member)
			out = h.tellDeathLocked(out, &Fail{Name: m.Name, Incarnation: m.inc}, m, netip.Addr{})
			continue
		}
		m.outstanding++
		m.lastProbe = now
		out = h.probeLocked(out, m, now, false)
	}
	h.reachLocked(&ch, now, watched)
	h.lastTick = now
	h.mu.Unlock()
	h.flush(out, ch)
}

// reachLocked notes the watched members that are alive by others' word
// (a helper relayed an answer since this proxy last heard them) but silent
// to this proxy for ProbeMisses+1 probe intervals: the path between the
// two is cut while the rest of the overlay still reaches both. This
// proxy's data path then avoids them (change.unreachable) until they
// answer again. Silence alone is not enough: a proxy that died is silent
// to everyone, and is declared dead, not unreachable.
func (h *health) reachLocked(ch *change, now int64, watched map[string]bool) {
	limit := int64(h.cfg.ProbeMisses+1) * int64(h.cfg.ProbeInterval)
	for _, name := range h.order {
		m := h.members[name]
		live := m.state == StateAlive || m.state == StateSuspect
		cut := m.heard && watched[name] && live && now-m.lastHeard > limit && m.vouchedAt > m.lastHeard
		switch {
		case cut && !m.unreachable:
			h.setUnreachable(m, true)
			m.rttFrom = 0
			ch.unreachable = append(ch.unreachable, m.Member)
		case !cut && m.unreachable:
			h.setUnreachable(m, false)
			switch {
			case !live:
				// Dead (or gone back to joining): not a change of reachability.
			case !watched[name]:
				ch.unwatched = append(ch.unwatched, m.Member)
			default:
				ch.reachable = append(ch.reachable, m.Member)
			}
		}
	}
}

// setUnreachable marks m (un)reachable, keeping count.
func (h *health) setUnreachable(m *mstate, cut bool) {
	switch {
	case cut && !m.unreachable:
		h.cut++
	case !cut && m.unreachable:
		h.cut--
	}
	m.unreachable = cut
}

// unreachableAddrs lists the addresses of the members reachLocked found
// cut; nil when there are none.
func (h *health) unreachableAddrs() map[netip.Addr]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cut == 0 {
		return nil
	}
	out := map[netip.Addr]bool{}
	for _, m := range h.members {
		if m.unreachable && m.state != StateDead {
			out[m.Addr] = true
		}
	}
	return out
}

// helpersLocked picks up to ConfirmHelpers live members, not m, to probe
// m: first those of a third cluster (neither ours nor m's), whose paths to
// m are the least like ours — when only the link between two clusters is
// cut, they still reach m, and m is not declared dead for everyone over a
// fault of one path — then the others, each set by rendezvous hash.
func (h *health) helpersLocked(m *mstate) []string {
	var cands []string
	for _, name := range h.order {
		o := h.members[name]
		if o != m && o.state == StateAlive {
			cands = append(cands, name)
		}
	}
	third := func(name string) bool {
		c := h.members[name].Cluster
		return c != h.self.Cluster && c != m.Cluster
	}
	slices.SortFunc(cands, func(a, b string) int {
		if ta, tb := third(a), third(b); ta != tb {
			if ta {
				return -1
			}
			return 1
		}
		wa, wb := pairWeight(h.self.Name+"/"+m.Name, a), pairWeight(h.self.Name+"/"+m.Name, b)
		switch {
		case wa > wb:
			return -1
		case wa < wb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return cands[:min(len(cands), h.cfg.ConfirmHelpers)]
}

// handle takes a health message from the proxy at src.
func (h *health) handle(src netip.Addr, seq uint32, msg Msg) {
	now := h.now()
	var out []outMsg
	var ch change
	h.mu.Lock()
	from := h.byAddr[src]
	if from == nil {
		h.mu.Unlock()
		return
	}
	from.heard, from.lastHeard = true, now
	if from.state == StateJoining {
		// Its first word: the newcomer's handshake is done, talk back.
		h.setState(from, StateAlive)
		from.outstanding = 0
		ch.added = append(ch.added, from.Member)
	}
	switch msg := msg.(type) {
	case *Probe:
		out = append(out, outMsg{src, seq, &ProbeAck{From: h.self.Name, Incarnation: h.inc}})
		if msg.From == from.Name {
			out = h.aliveEvidenceLocked(out, &ch, from, msg.Incarnation)
		}
	case *ProbeAck:
		if r, ok := h.probeRelays[seq]; ok && msg.From == from.Name {
			delete(h.probeRelays, seq)
			out = append(out, outMsg{r.from, r.seq, msg})
		}
		m := h.members[msg.From]
		if m == nil {
			break
		}
		for i := range m.sent {
			sp := &m.sent[i]
			if sp.seq == 0 || sp.seq != seq {
				continue
			}
			direct := !sp.indirect && from == m
			if direct {
				h.sampleLocked(m, sp.at, now)
			}
			sp.seq = 0
			if sp.indirect && from != m {
				m.vouchedAt = now // a helper reaches it
			}
			if direct || sp.indirect {
				out = h.aliveEvidenceLocked(out, &ch, m, msg.Incarnation)
			}
			break
		}
	case *ProbeReq:
		target := h.members[msg.Suspect]
		if target == nil || msg.Suspect == h.self.Name {
			break
		}
		nonce := h.nextNonce()
		h.probeRelays[nonce] = probeRelay{from: src, seq: seq, expires: now + int64(h.cfg.ConfirmTimeout)*2}
		h.stats.probes++
		out = append(out, outMsg{target.Addr, nonce, &Probe{From: h.self.Name, Incarnation: h.inc}})
	case *Fail:
		if msg.Name == h.self.Name {
			// Refute: we are alive, at a higher incarnation than the rumor.
			if msg.Incarnation >= h.inc {
				h.inc = msg.Incarnation + 1
				ch.refuted = true
			}
			h.stats.alives++
			out = h.broadcastLocked(out, &Alive{Name: h.self.Name, Incarnation: h.inc})
			// Dead members are skipped by broadcast, but the sender thinks
			// we are dead and is alive itself.
			if from.state == StateDead {
				out = append(out, outMsg{src, 0, &Alive{Name: h.self.Name, Incarnation: h.inc}})
			}
			break
		}
		m := h.members[msg.Name]
		if m == nil {
			break
		}
		if (m.state != StateDead && msg.Incarnation >= m.inc) || (m.state == StateDead && msg.Incarnation > m.inc) {
			wasDead := m.state == StateDead
			h.setState(m, StateDead)
			m.inc, m.outstanding, m.lastProbe = msg.Incarnation, 0, now
			h.others.Store(nil)
			if !wasDead {
				m.deadAt = now
			}
			if !wasDead {
				ch.dead = append(ch.dead, m.Member)
				// Pass it on once: new to us, so maybe new to others.
				out = h.tellDeathLocked(out, msg, m, src)
			}
		}
	case *Alive:
		if msg.Name != from.Name {
			// Forwarded news about a third proxy.
			if m := h.members[msg.Name]; m != nil && msg.Incarnation > m.inc {
				out = h.newIncarnationLocked(out, &ch, m, msg.Incarnation, src)
			}
			break
		}
		if msg.Incarnation > from.inc {
			out = h.newIncarnationLocked(out, &ch, from, msg.Incarnation, src)
		} else if from.state == StateDead {
			out = append(out, outMsg{src, 0, &Fail{Name: from.Name, Incarnation: from.inc}})
		}
	}
	h.mu.Unlock()
	h.flush(out, ch)
}

// newIncarnationLocked applies Alive(inc) for m, inc > m.inc.
func (h *health) newIncarnationLocked(out []outMsg, ch *change, m *mstate, inc uint32, src netip.Addr) []outMsg {
	if m.state == StateJoining {
		m.inc = inc // news from a third proxy: still wait for its own word
		h.others.Store(nil)
		return out
	}
	old, oldInc := m.state, m.inc
	h.setState(m, StateAlive)
	m.inc, m.outstanding = inc, 0
	h.others.Store(nil)
	m.rttFrom = 0 // a new process: a new WireGuard session to set up
	switch {
	case old == StateDead:
		ch.revived = append(ch.revived, m.Member)
		// Forward once, and tell the newcomer whom we know dead.
		out = h.broadcastLocked(out, &Alive{Name: m.Name, Incarnation: inc}, src, m.Addr)
		out = h.deadListLocked(out, m.Addr)
	case oldInc != 0:
		// A restart (or refutation) we had not noticed: its state is gone.
		ch.reset = append(ch.reset, m.Member)
		out = h.deadListLocked(out, m.Addr)
	}
	return out
}

func (h *health) deadListLocked(out []outMsg, to netip.Addr) []outMsg {
	for _, name := range h.order {
		if d := h.members[name]; d.state == StateDead && d.Addr != to {
			out = append(out, outMsg{to, 0, &Fail{Name: d.Name, Incarnation: d.inc}})
		}
	}
	return out
}

// aliveEvidenceLocked handles an answer (or probe) from m carrying inc.
func (h *health) aliveEvidenceLocked(out []outMsg, ch *change, m *mstate, inc uint32) []outMsg {
	switch {
	case m.state == StateDead && inc > m.inc:
		out = h.newIncarnationLocked(out, ch, m, inc, netip.Addr{})
	case m.state == StateDead:
		// It is up but was declared dead at this incarnation: tell it, so
		// that it refutes.
		out = append(out, outMsg{m.Addr, 0, &Fail{Name: m.Name, Incarnation: m.inc}})
	default:
		if inc > m.inc {
			m.inc = inc
			h.others.Store(nil)
		}
		h.setState(m, StateAlive)
		m.outstanding = 0
	}
	return out
}

// statsSnapshot returns the health counters.
func (h *health) statsSnapshot() healthStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats
}

// snapshot lists every member, self first then by name.
func (h *health) snapshot() []MemberInfo {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	watched := h.watchedLocked()
	out := []MemberInfo{{Name: h.self.Name, Addr: h.self.Addr, Cluster: h.self.Cluster, State: StateAlive, Incarnation: h.inc}}
	for _, name := range h.order {
		m := h.members[name]
		out = append(out, MemberInfo{Name: m.Name, Addr: m.Addr, Cluster: m.Cluster, State: m.state,
			RTT: h.rttLocked(m, now, watched[name]), Incarnation: m.inc, Watched: watched[name], Unreachable: m.unreachable && m.state != StateDead,
			Heard: m.heard})
	}
	return out
}

// live lists the members not known dead, self included, sorted by name.
func (h *health) live() []Member {
	others := h.liveOthers()
	out := make([]Member, 0, len(others)+1)
	out = append(out, h.self) // never written after newHealth
	for _, m := range others {
		out = append(out, *m.Member)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// liveMember is a live member other than this proxy, with its incarnation.
// Member points into its mstate, whose Member is never written after it
// is made: a copy cost 152 bytes per member at every proxy.
type liveMember struct {
	*Member
	inc uint32
}

// liveOthers lists the members other than this proxy that are not known
// dead, by name. The list is shared: callers must not change it.
func (h *health) liveOthers() []liveMember {
	if o := h.others.Load(); o != nil {
		return *o
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if o := h.others.Load(); o != nil {
		return *o
	}
	out := make([]liveMember, 0, len(h.order))
	for _, name := range h.order {
		if m := h.members[name]; m.state != StateDead && m.state != StateJoining {
			out = append(out, liveMember{&m.Member, m.inc})
		}
	}
	out = slices.Clip(out)
	h.others.Store(&out)
	return out
}

// add makes m, learned at run time, a member at incarnation inc in state
// StateAlive, StateDead or StateJoining; announce sends it this proxy's
// Alive (a newcomer's first contact). It returns false when m is known.
func (h *health) add(m Member, inc uint32, state MemberState, announce bool) bool {
	if m.Name == h.self.Name {
		return false
	}
	now := h.now()
	var out []outMsg
	var ch change
	h.mu.Lock()
	if h.members[m.Name] != nil || h.byAddr[m.Addr] != nil {
		h.mu.Unlock()
		return false
	}
	ms := &mstate{Member: m, state: state, inc: inc, suspectAt: now, lastProbe: now}
	if state == StateDead {
		ms.deadAt = now
	}
	h.members[m.Name] = ms
	h.byAddr[m.Addr] = ms
	h.order = append(h.order, m.Name)
	slices.Sort(h.order)
	h.watched = nil
	h.others.Store(nil)
	if state == StateAlive {
		ch.added = append(ch.added, m)
	}
	if announce && state != StateJoining {
		h.stats.alives++
		out = append(out, outMsg{m.Addr, 0, &Alive{Name: h.self.Name, Incarnation: h.inc}})
	}
	h.mu.Unlock()
	h.flush(out, ch)
	return true
}

// state is how this proxy sees the member called name, and its incarnation.
func (h *health) state(name string) (MemberState, uint32, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if name == h.self.Name {
		return StateAlive, h.inc, true
	}
	m := h.members[name]
	if m == nil {
		return 0, 0, false
	}
	return m.state, m.inc, true
}

// incarnation is this proxy's current incarnation.
func (h *health) incarnation() uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inc
}

// deadSince is when the member called name last became dead here; false
// if it never did.
func (h *health) deadSince(name string) (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.members[name]
	if m == nil || m.deadAt == 0 {
		return 0, false
	}
	return m.deadAt, true
}
