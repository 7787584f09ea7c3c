package overlay

import (
	"math"
	"net/netip"
	"slices"
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
//     proxies of each other cluster (all but one picked by rendezvous
//     hash of the victim's cluster and the proxy, so that two proxies
//     that declare the same death tell the same ones, and the deaths of
//     one cluster that a proxy declares in one tick go in one News; the
//     last by the declarer's, so that no fixed few carry a cluster's
//     deaths to theirs); a proxy that learns it from a proxy of another
//     cluster tells every live proxy of its own, once. The declarer tells
//     its own cluster a second time at its next flush (if the member is
//     still dead at that incarnation), since its cluster-mates pass on
//     nothing they hear from it. So a proxy hears each death twice from
//     the declarer in its cluster, and elsewhere from every forwarder of
//     its cluster (FailFanout of them, and up to one more for each other
//     proxy that declared it). The loss of one copy does not matter, and
//     a death costs a few messages per proxy, not one per pair of proxies
//     (every proxy told every other before). A proxy sends the news it
//     tells or passes on (deaths and comebacks) at once if it sent none
//     within the last ProbeInterval, and else at its next tick, all it
//     has for one member in one News: a partition of N proxies is N/2
//     deaths for each, and a datagram for each death to each proxy was
//     1.8 N² in all.
//   - Comebacks: a proxy announces Alive with its incarnation when it starts
//     (the wall clock in seconds, so a restart has a higher one): to every
//     member in an overlay of up to announceAll, and in a larger one to the
//     ~20 with a stake in it (startSetLocked): everyone was N² messages at
//     a cold start. Those that held it dead or knew an older incarnation
//     spread the news as a death is spread (the same fan-out); at a cold
//     start nobody did, and nothing is spread. A newcomer learned at run
//     time still calls every member (add). A proxy that hears a Fail about
//     itself refutes it with Alive at a higher incarnation. Dead members
//     are still probed, slowly (DeadProbeInterval), each by its guardians:
//     the DeadWatchers first live proxies after it on a ring of all
//     members (by the same hash as tier 1's rings), so that a comeback is
//     seen on each side of a partition while a dead member costs
//     DeadWatchers probes a second, not one per live proxy (5×10⁷ a second
//     in a partition of 10,000). Views differ, so every proxy also probes
//     its dead in turn, a round in deadTurnRound: one held dead only by
//     proxies that are none of its guardians in their own view still comes
//     back for them. A dead member that answers with a stale incarnation
//     is told (Fail) so that it refutes.
//   - A refutation is the rumor's incarnation plus one. A proxy that
//     starts asks the members it probes whom they hold dead (Restarted):
//     a restart lost that. A refutation gets no such list: the refuter
//     kept its view, and after a partition heals the other side's list
//     would declare its own side dead. Those it asks also say if they
//     hold it at a higher incarnation than it started at: its clock went
//     back, and at the end of its first second it starts again above
//     that (rebaseLocked). In an overlay of up to announceAll, where
//     nobody passes a restart on, it announces its start a second time to
//     those it has not heard from.
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
	FailFanout        int           // proxies of each other cluster told of a death; default 2 (see defaults)
	DeadWatchers      int           // proxies that probe each dead member for a comeback; default 8
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
		// One proxy by the victim's cluster and one by the declarer.
		// Each other declarer adds its own pick, so a cluster hears a
		// death from two forwarders at least. At 3, every (proxy, member
		// of the other side) pair of a partition, whose deaths have two
		// or three declarers each, was told about 4 times.
		c.FailFanout = 2
	}
	if c.DeadWatchers <= 0 {
		c.DeadWatchers = 8
	}
}

// confirmTicks is how many ticks after a suspicion confirm it: those of
// ConfirmTimeout.
func (h *health) confirmTicks() int {
	return int(h.cfg.ConfirmTimeout / h.cfg.ProbeInterval)
}

// probeWindow is how many recent probes of a member an ack may answer.
const probeWindow = 8

// rttAgeProbes is how many probe intervals an RTT lasts without a new
// sample. A watched member answers every interval; one silent for this long
// is not measured any more (unwatched, cut off, dying), and an RTT this
// old no longer ranks JAPs. It is well past the ProbeMisses+1 intervals
// that make a member unreachable, so a slow answer does not blank it.
const rttAgeProbes = 10

// mrec is how this proxy sees one member: 16 bytes, kept for every member
// (10,000 proxies each knowing 10,000 others are 10^8 of them).
type mrec struct {
	lastHeard int64 // when it last said something
	inc       uint32
	state     MemberState
	flags     uint8
	// outstanding: probes sent since the last ack (it stops at the top);
	// 0 for a member without a probeRec. Here, not in the probeRec: every
	// probe resets its sender's, and a second record looked up for that
	// was 7 % of a 10,000-proxy run at rest.
	outstanding uint16
}

const (
	fHeard       = 1 << iota // it has said something since this proxy started
	fUnreachable             // alive for others, but its probes go unanswered here
	fWatched                 // this proxy probes it (the cached watched set)
	fQueued                  // supersededLocked's mark: a later Alive of it is queued
	fRec                     // it has a probeRec (see recPages)
	fMissed                  // what this proxy sent it may be lost (Redialer): until it answers a probe
)

func (m *mrec) heard() bool       { return m.flags&fHeard != 0 }
func (m *mrec) unreachable() bool { return m.flags&fUnreachable != 0 }
func (m *mrec) watched() bool     { return m.flags&fWatched != 0 }

// probeRec is the rest of a member's state, kept only while it is not
// plain alive and unprobed: watched, suspect, dead, joining or
// unreachable. A tick drops it when the member is alive and unwatched
// again, after doing to it what it did to every unwatched member. It is
// 24 bytes (whether a member has one is a flag of its member record, not
// a field here), and a liveRec more unless the member is dead: in a partition
// every proxy holds half the others dead (5×10⁷ records at 10,000
// proxies), and a dead member is probed once a DeadProbeInterval at most,
// so one probe an answer may match is enough.
type probeRec struct {
	deadSeq   uint32 // the probe a dead member is asked with until it answers (0: none yet)
	live      int32  // its liveRec's number + 1 (0: none; see recPages)
	lastProbe int64
	deadAt    int64 // when it last became dead here
}

// liveRec is what a probeRec has of a member that is not dead (or of a
// dead one that was vouched for after this proxy last heard it).
type liveRec struct {
	// seq: the recent probes an ack may answer (0: none, or answered),
	// sent at at; ind: bit k says seq[k] asked helpers (indirect); next:
	// where the next one goes.
	seq       [probeWindow]uint32
	at        [probeWindow]int64
	ind, next uint8
	srtt      int64 // ns, 0 = none
	rttAt     int64 // when srtt last took a sample
	rttFrom   int64 // when this measurement run's first answer came; 0: none yet (see sampleLocked)
	suspectAt int64 // StateJoining: when it was added
	vouchedAt int64 // when a helper last relayed its answer to our probe
	// suspectTicks: the ticks since it became suspect, that one included.
	suspectTicks int32
}

// recPages holds probeRecs by member number, in pages of recPage records
// made when first needed, and their liveRecs by number, in pages of
// livePage: at rest a proxy has records for a dozen members, in a few
// pages; in a partition for half of them, and a map of those cost more
// than a pointer for every member. No pointers: as 5×10⁷ objects of their
// own (10,000 proxies split in half), or pages with a pointer in each
// record, they were most of the collector's work. A page never moves, so
// a record's address holds until it is dropped.
type recPages struct {
	recs  [][]probeRec
	lives [][]liveRec
	free  []int32 // the numbers of liveRecs not in use
	nLive int32   // liveRecs made
}

const (
	recPage  = 64
	livePage = 16
)

// at is member i's record, which it has (fRec): in use or not is its
// member record's flag, not a field here, so that a member without one
// costs no look into the pages, and a record is 24 bytes, not 32 (5×10⁷
// of them in a partition of 10,000 proxies).
func (r *recPages) at(i int32) *probeRec { return &r.recs[i/recPage][i%recPage] }

// add gives member i, which has none, a new record.
func (r *recPages) add(i int32) *probeRec {
	p := int(i / recPage)
	if p >= len(r.recs) {
		r.recs = append(r.recs, make([][]probeRec, p+1-len(r.recs))...)
	}
	if r.recs[p] == nil {
		r.recs[p] = make([]probeRec, recPage)
	}
	x := &r.recs[p][i%recPage]
	*x = probeRec{}
	return x
}

// remove drops member i's record, which it has.
func (r *recPages) remove(i int32) {
	x := r.at(i)
	r.dropLive(x)
	*x = probeRec{}
}

// l is x's liveRec, made if it has none.
func (r *recPages) l(x *probeRec) *liveRec {
	if x.live == 0 {
		var n int32
		if k := len(r.free); k > 0 {
			n, r.free = r.free[k-1], r.free[:k-1]
		} else {
			n = r.nLive
			r.nLive++
			if int(n/livePage) == len(r.lives) {
				r.lives = append(r.lives, make([]liveRec, livePage))
			}
		}
		x.live = n + 1
		*r.lv(x) = liveRec{}
	}
	return r.lv(x)
}

// lv is x's liveRec, nil if it has none.
func (r *recPages) lv(x *probeRec) *liveRec {
	if x.live == 0 {
		return nil
	}
	n := x.live - 1
	return &r.lives[n/livePage][n%livePage]
}

// dropLive frees x's liveRec.
func (r *recPages) dropLive(x *probeRec) {
	if x.live != 0 {
		r.free = append(r.free, x.live-1)
		x.live = 0
	}
}

// vouchedAt is when a helper last relayed x's member's answer (0: never).
func (r *recPages) vouchedAt(x *probeRec) int64 {
	if l := r.lv(x); l != nil {
		return l.vouchedAt
	}
	return 0
}

// record notes probe seq to x's member, sent now; the member's state says
// where. The probes of a dead member are direct, and not timed: they are
// no sample.
func (r *recPages) record(x *probeRec, seq uint32, now int64, indirect bool, st MemberState) {
	if st == StateDead {
		x.deadSeq = seq
		return
	}
	l := r.l(x)
	k := l.next % probeWindow
	l.seq[k], l.at[k] = seq, now
	l.ind &^= 1 << k
	if indirect {
		l.ind |= 1 << k
	}
	l.next = (l.next + 1) % probeWindow
}

// lastDirect is the newest direct probe to x's member not answered yet
// (0: none).
func (r *recPages) lastDirect(x *probeRec) uint32 {
	l := r.lv(x)
	if l == nil {
		return 0
	}
	for n := 1; n <= probeWindow; n++ {
		k := (int(l.next) - n + probeWindow) % probeWindow
		if l.seq[k] != 0 && l.ind&(1<<k) == 0 {
			return l.seq[k]
		}
	}
	return 0
}

// answered finds the probe seq that an ack from x's member answers, and
// forgets it: found, whether it asked helpers, and when it was sent (0:
// not timed).
func (r *recPages) answered(x *probeRec, seq uint32) (ok, indirect bool, sent int64) {
	if x.deadSeq == seq {
		x.deadSeq = 0
		return true, false, 0
	}
	l := r.lv(x)
	if l == nil {
		return false, false, 0
	}
	for k := range l.seq {
		if l.seq[k] == seq {
			l.seq[k] = 0
			return true, l.ind&(1<<k) != 0, l.at[k]
		}
	}
	return false, false, 0
}

// forgetRTT drops the RTT of x's member: it is no longer measured (dead,
// unwatched).
func (r *recPages) forgetRTT(x *probeRec) {
	if l := r.lv(x); l != nil {
		l.srtt, l.rttAt, l.rttFrom = 0, 0, 0
	}
}

// probeRelay is a probe this proxy sends for another (ProbeReq).
type probeRelay struct {
	from    netip.Addr
	seq     uint32
	expires int64
}

// change is what health tells its owner after a membership change.
type change struct {
	// dead: newly dead, as they are in the roster: a 144-byte copy of
	// each was 7 GB allocated in a partition of 10,000 proxies.
	dead    []*Member
	revived []Member // dead → alive
	reset   []Member // alive at a new incarnation: restarted, state lost
	added   []Member // new to this proxy and alive (joining → alive, or learned alive)
	// unreachable: alive (others reach it) but not from here any more;
	// reachable: from here again; unwatched: no longer probed from here
	// while it was unreachable, so no longer known to be. Only this
	// proxy's data path cares. A member that dies is in none of them: its
	// death says it all.
	unreachable, reachable, unwatched []Member
	// missed: with a Redialer, members that did not hear this proxy for a
	// while (silent to it, or heard but not answering its probes), now
	// answering again: what was sent to them meanwhile may be lost.
	// Those reachable again are not in it (reachable says it).
	missed []Member
	// refuted: this proxy was declared dead and has just said it lives.
	// The RAPs that held it dead dropped its registrations.
	refuted bool
}

func (c *change) empty() bool {
	return len(c.dead)+len(c.revived)+len(c.reset)+len(c.added)+len(c.unreachable)+len(c.reachable)+len(c.unwatched)+len(c.missed) == 0 && !c.refuted
}

// onlyReach reports whether c is only about this proxy's own reachability.
func (c *change) onlyReach() bool {
	return len(c.dead)+len(c.revived)+len(c.reset)+len(c.added) == 0 && !c.refuted
}

// health is the failure detector of one proxy. It is transport-agnostic:
// send delivers a message to a member's control port, now is the clock,
// changed hears membership changes (called without locks held).
//
// Its members are numbered by a roster, which proxies of one MemberList
// share; per member it keeps an mrec, and a probeRec only for the few it
// probes or has news of. A tick visits only those (hot), in name order as
// it visited every member before: with 10,000 members, walking all of them
// ten times a second at every proxy was most of a large overlay's cost.
type health struct {
	// First what every message touches, together: in a simulated overlay
	// of 10,000 proxies each message goes to a proxy whose state is out
	// of the cache, and every cache line read is a miss.
	now     func() int64
	mu      sync.Mutex
	ros     *roster // self included; replaced (never changed) by add
	selfIdx int32
	inc     uint32
	recs    []mrec // by member number; self's is unused
	// probeMsg, ackMsg: see probeMsgLocked.
	ackMsg   *ProbeAck
	probeMsg *Probe
	ext      recPages // the probeRecs, by member number
	// spreads: news to pass on (spreadLocked), in the order learned, whom
	// it goes to worked out when sent (newsOutLocked); newsQueued: about
	// how many (member, item) pairs they make; newsAt: when queued news
	// last went out.
	spreads    []queuedSpread
	newsQueued int
	newsAt     int64

	cfg     HealthConfig
	self    Member
	send    func(to netip.Addr, seq uint32, m Msg)
	changed func(change)

	// hot: the members (by rank, i.e. place by name) with a probeRec;
	// down: those dead or joining, who are not live; dead: those dead,
	// whom a tick leaves to guardedLocked.
	hot, dead bitset
	down      cowBits
	nDown     int
	// The deadAt and vouchedAt of members whose probeRec was dropped,
	// where they still matter (deadSince; a vouch newer than the last word).
	deadAt, vouched map[int32]int64
	// toldDead: the members told since the last tick that they are held
	// dead here (tellDeadLocked).
	toldDead map[int32]bool
	// deadListed: when each member that asked (Restarted) was last sent
	// whom this proxy holds dead, and at which incarnation it asked.
	deadListed  map[int32]listedAt
	nonce       uint32
	probeRelays map[uint32]probeRelay
	announced   bool
	// asked: whom it sent Restarted at its start; heldAt: the highest
	// incarnation one of them holds it at, if above its own (heldLocked);
	// rebased: that was dealt with (rebaseLocked); reannounced: its start
	// was announced a second time.
	asked                []int32
	heldAt               uint32
	rebased, reannounced bool
	// startedAt: the first tick, when it announced itself; refutedAt: its
	// last refutation to all.
	startedAt, refutedAt int64
	// watched caches watchedLocked (members flagged fWatched); stale
	// unless watchedOK.
	watched   []int32
	watchedOK bool
	// gen counts the changes of the live list (a member's state or
	// incarnation, a new member): liveOthers's callers compare it to
	// know that the list they walked is still the list.
	gen atomic.Uint64
	// cut counts the members marked unreachable, so that unreachableAddrs
	// need not look when none is (nearly always).
	cut int
	// redial hears the members to start sessions with afresh (Redialer),
	// called without locks held; redialAt: when each was last handed to it.
	redial   func([]SilentMember)
	redialAt map[int32]int64
	lastTick int64
	// deadTurn is the rank of the dead member deadTurnLocked probed last,
	// at deadTurnAt.
	deadTurn   int32
	deadTurnAt int64
	stats      healthStats
}

type queuedNews struct {
	to   int32
	news NewsItem
}

// queuedSpread is news about member v to be told, learned by this proxy
// (from: learned) or passed on by member from; retold: a death it
// declared, told to its own cluster a second time.
type queuedSpread struct {
	news    NewsItem
	v, from int32
}

const (
	learned = -1
	retold  = -2
)

// sortNewsByMember orders q by member, each one's news in the order
// queued: a stable radix sort, a byte of the member's number a pass. In a
// partition a proxy passes on hundreds of deaths a tick to each of its
// cluster, and a comparison sort of them was 7 % of a run.
func sortNewsByMember(q []queuedNews) {
	var hi int32
	for _, e := range q {
		hi = max(hi, e.to)
	}
	bp := newsScratch.Get().(*[]queuedNews)
	buf := slices.Grow((*bp)[:0], len(q))[:len(q)]
	src, dst := q, buf
	for shift := 0; shift < 32 && hi>>shift > 0; shift += 8 {
		var at [257]int
		for _, e := range src {
			at[(e.to>>shift)&0xff+1]++
		}
		for b := 1; b < len(at); b++ {
			at[b] += at[b-1]
		}
		for _, e := range src {
			d := (e.to >> shift) & 0xff
			dst[at[d]] = e
			at[d]++
		}
		src, dst = dst, src
	}
	if len(q) > 0 && &src[0] != &q[0] {
		copy(q, src)
	}
	clear(buf) // it holds names
	*bp = buf[:0]
	newsScratch.Put(bp)
}

// newsScratch is sortNewsByMember's room, shared by the proxies of a
// process.
var newsScratch = sync.Pool{New: func() any { return new([]queuedNews) }}

// Incarnations start at the wall clock in seconds (1.8 × 10⁹ in 2026)
// and grow by one a refutation. A Fail above maxFailIncarnation, or an
// Alive above maxAliveIncarnation, is forged: one Fail at 2³²−1 made its
// victim refute at 0 (rumor + 1, wrapped), which nobody took, and every
// proxy that held it dead answered its Alive with the Fail again, and it
// refuted each to all: a storm without end from one packet. A forged Fail
// just below the bound can still lift a proxy's incarnation there, but
// its refutations stay within the bound for Alive, and nothing wraps.
const (
	maxFailIncarnation  = math.MaxUint32 - 1<<20
	maxAliveIncarnation = maxFailIncarnation + 1<<16
)

type listedAt struct {
	at  int64
	inc uint32
}

type healthStats struct {
	probes, fails, alives, probeReqs uint64
	// deaths: members that turned dead here, by this proxy's verdict or
	// another's; detect sums, over them, the time from their last word
	// heard here to that moment (ns).
	deaths, detect uint64
}

// newHealth starts health monitoring of members (self among them or not),
// or, if ros is set, of its members instead (self among them).
func newHealth(cfg HealthConfig, self Member, members []Member, ros *roster, now func() int64, send func(netip.Addr, uint32, Msg), changed func(change)) *health {
	cfg.defaults()
	h := &health{cfg: cfg, self: self, now: now, send: send, changed: changed, inc: cfg.Incarnation,
		probeRelays: map[uint32]probeRelay{}}
	if ros == nil {
		ms := []Member{self}
		for _, m := range members {
			if m.Name != self.Name {
				ms = append(ms, m)
			}
		}
		ros = newRoster(ms)
	}
	h.ros = ros
	h.selfIdx = ros.byName[self.Name]
	h.recs = make([]mrec, len(ros.ms))
	h.hot, h.down, h.dead = newBitset(len(ros.ms)), cowBits{}, newBitset(len(ros.ms))
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

// probeMsgLocked is this proxy's Probe at its incarnation, and
// ackMsgLocked its ProbeAck: all its probes and answers are the same
// message but for their number, so one of each serves until the
// incarnation moves (10⁸ a simulated minute at 10,000 proxies). Nothing
// changes a message once queued.
func (h *health) probeMsgLocked() *Probe {
	if h.probeMsg == nil || h.probeMsg.Incarnation != h.inc {
		h.probeMsg = &Probe{From: h.self.Name, Incarnation: h.inc}
	}
	return h.probeMsg
}

func (h *health) ackMsgLocked() *ProbeAck {
	if h.ackMsg == nil || h.ackMsg.Incarnation != h.inc {
		h.ackMsg = &ProbeAck{From: h.self.Name, Incarnation: h.inc}
	}
	return h.ackMsg
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
func pairWeight(a, b string) uint64 { return weight(pairPrefix(a), b) }

// pairPrefix is pairWeight's hash of a, to weigh many b with.
func pairPrefix(a string) uint64 {
	h := fnvAdd(uint64(fnvOffset), a)
	h ^= 0xff
	h *= fnvPrime
	return h
}

// byName is the number of the member called name; -1 if none (or self).
func (h *health) byName(name string) int32 {
	if i, ok := h.ros.byName[name]; ok && i != h.selfIdx {
		return i
	}
	return -1
}

// byAddr is the number of the member at a; -1 if none (or self).
func (h *health) byAddr(a netip.Addr) int32 {
	if i, ok := h.ros.at(a); ok && i != h.selfIdx {
		return i
	}
	return -1
}

// rec is i's probeRec, nil if it has none.
func (h *health) rec(i int32) *probeRec {
	if h.recs[i].flags&fRec == 0 {
		return nil
	}
	return h.ext.at(i)
}

// x is i's probeRec, made if it has none.
func (h *health) x(i int32) *probeRec {
	if x := h.rec(i); x != nil {
		return x
	}
	x := h.ext.add(i)
	h.recs[i].flags |= fRec
	if at, ok := h.deadAt[i]; ok {
		x.deadAt = at
		delete(h.deadAt, i)
	}
	if at, ok := h.vouched[i]; ok {
		h.ext.l(x).vouchedAt = at
		delete(h.vouched, i)
	}
	h.hot.set(h.ros.rank[i], true)
	return x
}

// drop forgets i's probeRec: it is alive, unwatched and reachable, and
// probed no more. What may still matter is kept aside.
func (h *health) drop(i int32) {
	x := h.rec(i)
	if x == nil {
		return
	}
	if x.deadAt != 0 {
		if h.deadAt == nil {
			h.deadAt = map[int32]int64{}
		}
		h.deadAt[i] = x.deadAt
	}
	if h.ext.vouchedAt(x) > h.recs[i].lastHeard {
		if h.vouched == nil {
			h.vouched = map[int32]int64{}
		}
		h.vouched[i] = h.ext.vouchedAt(x)
	}
	h.ext.remove(i)
	h.recs[i].outstanding = 0
	h.recs[i].flags &^= fRec
	h.hot.set(h.ros.rank[i], false)
}

// setState moves m to st, and drops the cached watched set when that
// changes who may be watched (the dead and the joining are not).
func (h *health) setState(i int32, st MemberState) {
	m := &h.recs[i]
	if m.state != st {
		h.gen.Add(1)
	}
	if st == StateDead {
		m.flags &^= fMissed // a comeback is caught up as such
	}
	if watchable(m.state) != watchable(st) {
		h.watchedOK = false
		if watchable(st) {
			h.nDown--
		} else {
			h.nDown++
		}
		h.down.set(h.ros.rank[i], !watchable(st))
	}
	if (m.state == StateDead) != (st == StateDead) {
		// Only on a change: every answer sets its member alive again, and
		// the bit's word was a cache miss each time.
		h.dead.set(h.ros.rank[i], st == StateDead)
	}
	switch {
	case st == StateDead:
		if m.state != StateDead {
			h.stats.deaths++
			if m.heard() {
				h.stats.detect += uint64(max(0, h.now()-m.lastHeard))
			}
		}
		x := h.x(i)
		if m.state != StateDead && x.deadSeq == 0 {
			// Its answer to the last direct probe may be on the way (a
			// path slower than the verdict): it still counts.
			x.deadSeq = h.ext.lastDirect(x)
		}
		if h.ext.vouchedAt(x) <= m.lastHeard {
			// Nothing in it matters while it is dead (a vouch older than
			// its last word never will).
			h.ext.dropLive(x)
		} else {
			h.ext.forgetRTT(x)
		}
		h.setUnreachable(i, false) // dead is all there is to say of it
	case st == StateSuspect && m.state != StateSuspect:
		// Silent for ProbeMisses probes: its next answers may have waited
		// for a new WireGuard handshake. Keep the estimate, restart the run.
		h.ext.l(h.x(i)).rttFrom = 0
	case st == StateJoining:
		h.ext.l(h.x(i))
	}
	m.state = st
}

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
func (h *health) sampleLocked(m *mrec, xr *probeRec, sent, now int64) {
	if m.state == StateDead {
		return // a dead member's answers (to slow probes) rank nothing
	}
	x := h.ext.l(xr)
	switch {
	case x.rttFrom == 0:
		x.rttFrom = now
		return
	case sent < x.rttFrom:
		return
	}
	sample := now - sent
	if x.srtt == 0 || now-x.rttAt > h.rttMaxAge() {
		x.srtt = sample // nothing fresh to smooth with
	} else {
		x.srtt += (sample - x.srtt) / 8
	}
	x.rttAt = now
}

// rttMaxAge is how old an RTT may be and still count.
func (h *health) rttMaxAge() int64 { return rttAgeProbes * int64(h.cfg.ProbeInterval) }

// rttLocked is i's RTT as MemberInfo.RTT has it: 0 when unknown, stale,
// dead, or no longer watched (tick forgets it at its next round).
func (h *health) rttLocked(i int32, now int64) time.Duration {
	m, x := &h.recs[i], h.rec(i)
	if x == nil || !m.watched() || m.state == StateDead {
		return 0
	}
	if l := h.ext.lv(x); l != nil && l.srtt != 0 && now-l.rttAt <= h.rttMaxAge() {
		return time.Duration(l.srtt)
	}
	return 0
}

func watchable(st MemberState) bool { return st != StateDead && st != StateJoining }

// watchedLocked returns the non-dead members this proxy probes: ClusterProbes
// of its cluster, and a few members of a few other clusters. The set is
// kept until a member comes, dies, or comes back (setState, add): a tick
// of a large overlay need not rebuild it. Callers must not change it.
// Every member in it has a probeRec.
func (h *health) watchedLocked() []int32 {
	if !h.watchedOK {
		for _, i := range h.watched {
			h.recs[i].flags &^= fWatched
		}
		h.watched = h.computeWatchedLocked()
		for _, i := range h.watched {
			h.recs[i].flags |= fWatched
			h.x(i)
		}
		h.watchedOK = true
	}
	return h.watched
}

// top keeps, in top, the k best of the candidates offered, best first.
type top struct {
	k    int
	idx  []int32
	keys []topKey
}

type topKey struct {
	first bool // ranks before every candidate without it
	w     uint64
	name  string
}

func (a topKey) before(b topKey) bool {
	if a.first != b.first {
		return a.first
	}
	if a.w != b.w {
		return a.w > b.w
	}
	return a.name < b.name
}

func (t *top) offer(i int32, key topKey) {
	n := len(t.idx)
	if n == t.k && !key.before(t.keys[n-1]) {
		return
	}
	if n < t.k {
		t.idx, t.keys = append(t.idx, 0), append(t.keys, topKey{})
		n++
	}
	j := n - 1
	for j > 0 && key.before(t.keys[j-1]) {
		t.idx[j], t.keys[j] = t.idx[j-1], t.keys[j-1]
		j--
	}
	t.idx[j], t.keys[j] = i, key
}

func (h *health) computeWatchedLocked() []int32 {
	r := h.ros
	var out []int32
	// Tier 1: the next ClusterProbes live members on the cluster's ring.
	own := r.cluster[h.selfIdx]
	ring := r.rings[own]
	at := slices.Index(ring, h.selfIdx)
	for k := 1; k < len(ring) && len(out) < h.cfg.ClusterProbes; k++ {
		if i := ring[(at+k)%len(ring)]; watchable(h.recs[i].state) {
			out = append(out, i)
		}
	}
	// Tier 2: WatchClusters other clusters with a live member, by weight,
	// and WatchPerCluster of each.
	self := pairPrefix(h.self.Name)
	cs := top{k: h.cfg.WatchClusters}
	for c, ms := range r.clusters {
		if int32(c) == own || !slices.ContainsFunc(ms, func(i int32) bool { return i != h.selfIdx && watchable(h.recs[i].state) }) {
			continue
		}
		cs.offer(int32(c), topKey{w: weight(self, r.clusterKeys[c]), name: r.clusterNames[c]})
	}
	for _, c := range cs.idx {
		t := top{k: h.cfg.WatchPerCluster}
		for _, i := range r.clusters[c] {
			if i != h.selfIdx && watchable(h.recs[i].state) {
				t.offer(i, topKey{w: weight(self, r.ms[i].Name), name: r.ms[i].Name})
			}
		}
		out = append(out, t.idx...)
	}
	return out
}

// ringKey places a member on its cluster's ring (tier 1).
func ringKey(name string) uint64 { return weight(uint64(fnvOffset), name) }

// live reports whether i is neither dead nor joining.
func (h *health) liveAt(i int32) bool { return i != h.selfIdx && watchable(h.recs[i].state) }

// spreadLocked tells others news about v (Dead: it died; else it came
// back or restarted) that this proxy just learned: by its own verdict or
// from v itself (src invalid), or passed on by src. See the top of this
// file. The news is queued, and newsOutLocked works out whom it goes to
// when it sends it: in a partition a proxy learns hundreds of deaths
// between ticks and tells each to all of its cluster, and those pairs,
// held until then at every proxy, were a third of the heap.
func (h *health) spreadLocked(news NewsItem, v int32, src netip.Addr) {
	r := h.ros
	from := int32(learned)
	if src.IsValid() {
		from = h.byAddr(src)
		if from < 0 || r.ms[from].Cluster == h.self.Cluster {
			return // its sender told this cluster
		}
	}
	h.spreads = append(h.spreads, queuedSpread{news, v, from})
	h.newsQueued += len(r.clusters[r.cluster[h.selfIdx]])
	if from < 0 {
		h.newsQueued += h.cfg.FailFanout * (len(r.clusters) - 1)
	}
}

// tellsLocked appends to q whom s goes to, by the rules at the top of
// this file, in the order learned.
func (h *health) tellsLocked(q []queuedNews, s queuedSpread) []queuedNews {
	r, news, v := h.ros, s.news, s.v
	if s.from == retold {
		if m := &h.recs[v]; m.state != StateDead || m.inc != news.Incarnation {
			// It came back (or died again) since: a death at an
			// incarnation of 0 would be taken at the one it came back at.
			return q
		}
	}
	tell := func(o int32) bool { return o != v && o != s.from && h.liveAt(o) }
	own := r.cluster[h.selfIdx]
	for _, o := range r.clusters[own] {
		if tell(o) {
			q = append(q, queuedNews{o, news})
		}
	}
	if s.from != learned {
		return q // only the proxy that learned it tells the other clusters
	}
	// Forwarders by the victim's cluster, not the victim: deaths in one
	// cluster (a cluster lost, a partition) that this proxy declares in
	// one tick go to the same proxies of each cluster, in one News. All
	// but one: that one is this proxy's own pick, so that no fixed
	// FailFanout of a cluster (hostile, or dying with the victims) carry
	// every death of another cluster to theirs.
	vw := pairPrefix(forwardKey + r.ms[v].Cluster)
	sw := pairPrefix(forwardKey + h.self.Name)
	byVictim := max(1, h.cfg.FailFanout-1)
	// One top's room for all clusters (at the default fan-out): a death
	// told to 1,000 clusters made 2,000 allocations.
	var idx, mineIdx [4]int32
	var keys, mineKeys [4]topKey
	// pick tells t's best of ms by the weight w, leaving out skip.
	pick := func(t *top, ms []int32, w uint64, skip []int32) {
		for _, o := range ms {
			if tell(o) && !slices.Contains(skip, o) {
				t.offer(o, topKey{w: weight(w, r.ms[o].Name), name: r.ms[o].Name})
			}
		}
		for _, o := range t.idx {
			q = append(q, queuedNews{o, news})
		}
	}
	for c, ms := range r.clusters {
		if int32(c) == own {
			continue
		}
		t := top{k: byVictim, idx: idx[:0], keys: keys[:0]}
		pick(&t, ms, vw, nil)
		if byVictim < h.cfg.FailFanout {
			pick(&top{k: 1, idx: mineIdx[:0], keys: mineKeys[:0]}, ms, sw, t.idx)
		}
	}
	return q
}

// supersededLocked drops from the queue each comeback or restart (an
// Alive) of a member that a later one in the queue supersedes: a receiver
// that takes the later one holds the member at the later incarnation,
// with what it had of it reset, as after both. A member that claims
// restart after restart (its own Alive, two above the last, as often as
// it likes) was passed on once for each, to every proxy (red team of the
// news, finding 4): now at most once a flush. A death stays, and so does
// an Alive behind it: the receiver must hear the death, then the
// comeback (TestRedteamNewsOrderAndDelayKept).
func (h *health) supersededLocked() {
	alives := 0
	for _, s := range h.spreads {
		if !s.news.Dead {
			alives++
		}
	}
	if alives < 2 {
		return // (a partition's queue: deaths only; its members' records stay untouched)
	}
	for k := len(h.spreads) - 1; k >= 0; k-- {
		s := &h.spreads[k]
		m := &h.recs[s.v]
		if s.news.Dead {
			m.flags &^= fQueued // what came before the death is not superseded
			continue
		}
		if m.flags&fQueued != 0 {
			s.v = -1
			continue
		}
		m.flags |= fQueued
	}
	kept := h.spreads[:0]
	for _, s := range h.spreads {
		if s.v >= 0 {
			h.recs[s.v].flags &^= fQueued
			kept = append(kept, s)
		}
	}
	clear(h.spreads[len(kept):]) // they hold names
	h.spreads = kept
}

// forwardKey keeps the forwarders' hash apart from the watchers', which
// weigh by a member's name.
const forwardKey = "forward/"

// queuedLocked is the news queued, by whom it goes to, in the order
// learned; put back in newsScratch when done.
func (h *health) queuedLocked() *[]queuedNews {
	h.supersededLocked()
	qp := newsScratch.Get().(*[]queuedNews)
	q := (*qp)[:0]
	for _, s := range h.spreads {
		q = h.tellsLocked(q, s)
	}
	if len(h.spreads) > 1 {
		// By member, each one's news in the order learned. (One spread
		// names each member once: a death told to every cluster.)
		sortNewsByMember(q)
	}
	*qp = q
	return qp
}

// newsOutLocked sends the news queued (see the top of this file): now if
// none went out within the last ProbeInterval, at a tick (tick), or when
// about maxNewsQueued wait (a flood must not grow memory); else it waits
// for the next tick.
func (h *health) newsOutLocked(out []outMsg, now int64, tick bool) []outMsg {
	if len(h.spreads) == 0 || (!tick && now-h.newsAt < int64(h.cfg.ProbeInterval) && h.newsQueued < maxNewsQueued) {
		return out
	}
	qp := h.queuedLocked()
	q := *qp
	// The deaths this proxy declared go to its cluster once more, at
	// the next flush (tellsLocked drops those no longer true): its
	// cluster-mates pass on nothing they hear from it, so each heard it
	// in this one datagram alone, and a loss of 2 % left 4 of 5,000
	// (proxy, victim) pairs alive for good (TestHealthDeathToldTwiceAtHome).
	again := h.spreads[:0]
	for _, s := range h.spreads {
		if s.from == learned && s.news.Dead {
			s.from = retold
			again = append(again, s)
		}
	}
	clear(h.spreads[len(again):]) // they hold names
	h.spreads, h.newsQueued = again, len(again)*len(h.ros.clusters[h.ros.cluster[h.selfIdx]])
	if cap(h.spreads) > maxOutboxKept {
		// A partition's: keep no room for it at every proxy. (Not
		// slices.Clone: a clone of none still holds the old array.)
		h.spreads = nil
		if len(again) > 0 {
			h.spreads = append([]queuedSpread(nil), again...)
		}
	}
	if len(q) > 0 {
		h.newsAt = now
	}
	var items []NewsItem
	for k := 0; k < len(q); {
		o, n := q[k].to, 1
		for k+n < len(q) && q[k+n].to == o {
			n++
		}
		items = items[:0]
		for _, e := range q[k : k+n] {
			items = append(items, e.news)
		}
		out = tellNews(out, h.ros.ms[o].Addr, items)
		k += n
	}
	clear(q) // it holds names
	*qp = q[:0]
	newsScratch.Put(qp)
	return out
}

// tellNews sends items to to: one as the Fail or Alive it is, more in as
// few News as hold them.
func tellNews(out []outMsg, to netip.Addr, items []NewsItem) []outMsg {
	if len(items) == 1 {
		it := items[0]
		if it.Dead {
			return append(out, outMsg{to, 0, &Fail{Name: it.Name, Incarnation: it.Incarnation}})
		}
		return append(out, outMsg{to, 0, &Alive{Name: it.Name, Incarnation: it.Incarnation}})
	}
	for _, m := range packNews(items) {
		out = append(out, outMsg{to, 0, m})
	}
	return out
}

// maxNewsQueued is how many news items wait for a tick at most.
const maxNewsQueued = 1 << 14

func (h *health) probeLocked(out []outMsg, i int32, now int64, indirect bool) []outMsg {
	x := h.x(i)
	seq := x.deadSeq
	if h.recs[i].state != StateDead || seq == 0 {
		seq = h.nextNonce()
		h.ext.record(x, seq, now, indirect, h.recs[i].state)
	}
	// else: a dead member is probed with the number it has not answered
	// yet, so that an answer slower than DeadProbeInterval still counts.
	h.stats.probes++
	return append(out, outMsg{h.ros.ms[i].Addr, seq, h.probeMsgLocked()})
}

func (h *health) broadcastLocked(out []outMsg, msg Msg, except ...netip.Addr) []outMsg {
	for _, i := range h.ros.order {
		if !h.liveAt(i) || slices.Contains(except, h.ros.ms[i].Addr) {
			continue
		}
		out = append(out, outMsg{h.ros.ms[i].Addr, 0, msg})
	}
	return out
}

// eachHot calls f for the members with a probeRec, by name. f may add and
// drop records: a record added after the one f is at is visited too.
func (h *health) eachHot(f func(i int32)) {
	for k := h.hot.next(0); k >= 0; k = h.hot.next(k + 1) {
		f(h.ros.order[k])
	}
}

// eachHotLive is eachHot but for the dead: in a partition half the
// members are dead, and visiting them at every tick of every proxy did
// nothing but cost.
func (h *health) eachHotLive(f func(i int32)) {
	for k := h.hot.nextNotIn(h.dead, 0); k >= 0; k = h.hot.nextNotIn(h.dead, k+1) {
		f(h.ros.order[k])
	}
}

// guardedLocked lists the dead members this proxy probes for a comeback:
// those it is one of the DeadWatchers first live members after, on the
// ring of all members. Walking back from this proxy, they are the dead
// met before the DeadWatchers-th live one; every proxy that sees the same
// members live picks the same guardians.
func (h *health) guardedLocked() []int32 {
	r := h.ros
	n := len(r.ring)
	at := int(r.ringAt[h.selfIdx])
	var out []int32
	for k, live := 1, 0; k < n && live < h.cfg.DeadWatchers; k++ {
		switch i := r.ring[(at-k+n)%n]; {
		case h.recs[i].state == StateDead:
			out = append(out, i)
		case watchable(h.recs[i].state):
			live++
		}
	}
	return out
}

// deadTurnLocked probes, each DeadProbeInterval, the next of the dead in
// turn (by name) that its guardians' probes have not just covered: one,
// or as many as make a round of them within deadTurnRound. Guardians are
// picked by each proxy's own view: when views differ, a member held dead
// here may have no guardian that holds it dead too (the others saw it come
// back, or never saw it go), and nobody would tell this proxy until its
// next incarnation. Each proxy so probes about D/30 of its D dead a second:
// a view that is wrong alone is right again within half a minute, at a
// thirtieth of the cost of every proxy probing every dead member.
func (h *health) deadTurnLocked(out []outMsg, now int64) []outMsg {
	if now-h.deadTurnAt < int64(h.cfg.DeadProbeInterval) {
		return out
	}
	h.deadTurnAt = now
	per, round := int64(h.cfg.DeadProbeInterval), int64(deadTurnRound)
	budget := max(1, int((int64(h.nDown)*per+round-1)/round))
	start := h.dead.next(h.deadTurn + 1)
	if start < 0 {
		start = h.dead.next(0)
	}
	for k := start; k >= 0 && budget > 0; {
		var probed bool
		if out, probed = h.probeDeadLocked(out, h.ros.order[k], now); probed {
			h.deadTurn = k
			budget--
		}
		if k = h.dead.next(k + 1); k < 0 {
			k = h.dead.next(0)
		}
		if k == start {
			break // a whole round
		}
	}
	return out
}

// probeDeadLocked probes the dead member i for a comeback unless a probe
// went to it within the last DeadProbeInterval, and reports whether it did.
func (h *health) probeDeadLocked(out []outMsg, i int32, now int64) ([]outMsg, bool) {
	x := h.rec(i) // the dead have a probeRec
	if now-x.lastProbe < int64(h.cfg.DeadProbeInterval) {
		return out, false
	}
	x.lastProbe = now
	return h.probeLocked(out, i, now, false), true
}

// deadTurnRound is how long deadTurnLocked takes to probe each dead member
// once.
const deadTurnRound = 30 * time.Second

// tick runs one probe round. Call it every ProbeInterval.
func (h *health) tick() {
	now := h.now()
	var out []outMsg
	var ch change
	var redial []SilentMember
	h.mu.Lock()
	r := h.ros
	starting := !h.announced
	switch {
	case starting:
		h.announced, h.startedAt = true, now
		out = h.announceLocked(out, false)
	case !h.reannounced && now-h.startedAt >= reannounceAfter*int64(h.cfg.ProbeInterval):
		// Once more, to those it has not heard from since: in an overlay
		// of up to announceAll nobody passes a restart on (it told
		// everyone), and a lost copy was lost for good.
		h.reannounced = true
		if h.announcesToAll() {
			out = h.announceLocked(out, true)
		}
	case !h.rebased && now-h.startedAt >= int64(h.cfg.DeadProbeInterval):
		out = h.rebaseLocked(out)
	}
	for seq, r := range h.probeRelays {
		if now >= r.expires {
			delete(h.probeRelays, seq)
		}
	}
	h.toldDead = nil
	h.watchedLocked()
	if starting {
		// A start, or a restart that lost whom it knew dead: ask those it
		// probes (a dozen, alive as far as anyone knows) for their dead.
		h.asked = slices.Clone(h.watched)
		for _, i := range h.watched {
			out = append(out, outMsg{r.ms[i].Addr, 0, &Restarted{Name: h.self.Name, Incarnation: h.inc}})
		}
	}
	if h.nDown > 0 {
		for _, i := range h.guardedLocked() {
			out, _ = h.probeDeadLocked(out, i, now)
		}
		out = h.deadTurnLocked(out, now)
	}
	// Every member without a probeRec is alive, unwatched and reachable:
	// there is nothing to do to it; the dead are guardedLocked's.
	h.eachHotLive(func(i int32) {
		m, x := &h.recs[i], h.rec(i)
		switch {
		case m.state == StateJoining:
			if now-h.ext.l(x).suspectAt < int64(joinQuiet) {
				return
			}
			// It never called: call it.
			h.setState(i, StateAlive)
			ch.added = append(ch.added, r.ms[i])
			return
		case !m.watched():
			m.outstanding = 0
			h.ext.forgetRTT(x)
			if m.state == StateSuspect {
				h.setState(i, StateAlive)
			}
			if !m.unreachable() {
				h.drop(i)
			}
			return
		}
		if m.state == StateAlive && int(m.outstanding) >= h.missesFor(m, now) {
			h.setState(i, StateSuspect)
			if !m.heard() {
				// Never heard, past the start grace: its session may be
				// one that cannot carry its answers (Redialer), and all
				// of this proxy's may be, with no helper's answer coming
				// back either. Redial before a death is declared.
				redial = h.redialLocked(redial, i, now)
			} else if h.redial != nil {
				// Heard, but not answering: maybe its session cannot
				// read this proxy's packets (redial.go in node), and
				// what this proxy sends it is lost until that ends.
				m.flags |= fMissed
			}
			l := h.ext.l(x)
			l.suspectAt, l.suspectTicks = now, 0
			// Ask helpers to probe it for us: a different path, and a
			// second opinion before a death is declared.
			seq := h.nextNonce()
			h.ext.record(x, seq, now, true, m.state)
			for _, hn := range h.helpersLocked(i) {
				h.stats.probeReqs++
				out = append(out, outMsg{r.ms[hn].Addr, seq, &ProbeReq{Suspect: r.ms[i].Name, Incarnation: m.inc}})
			}
		}
		if m.state == StateSuspect {
			h.ext.l(x).suspectTicks++
		}
		// A death takes ConfirmTimeout, and as many ticks after the
		// suspicion as fit in it: a proxy starved of CPU ticks late
		// (300-500 ms apart, the lab under -race on busy cores), and the
		// answers that came meanwhile are handled only between ticks.
		if m.state == StateSuspect && now-h.ext.l(x).suspectAt >= int64(h.cfg.ConfirmTimeout) && int(h.ext.l(x).suspectTicks) > h.confirmTicks() {
			h.setState(i, StateDead)
			m.outstanding, x.lastProbe, x.deadAt = 0, now, now
			h.stats.fails++
			ch.dead = append(ch.dead, &r.ms[i])
			h.spreadLocked(NewsItem{Name: r.ms[i].Name, Incarnation: m.inc, Dead: true}, i, netip.Addr{})
			return
		}
		if m.outstanding < math.MaxUint16 {
			m.outstanding++
		}
		x.lastProbe = now
		out = h.probeLocked(out, i, now, false)
	})
	h.reachLocked(&ch, now, &redial)
	out = h.newsOutLocked(out, now, true)
	h.lastTick = now
	h.mu.Unlock()
	h.flush(out, ch)
	if len(redial) > 0 {
		h.redial(redial)
	}
}

// announceAll is the largest overlay in which a proxy announces its start
// to every member: at most 63 Alives each, and every pair has heard from
// each other at once (the lab's readiness waits for that).
const announceAll = 64

// announcesToAll reports whether the overlay is small enough that a
// proxy announces its start to every member (announceAll).
func (h *health) announcesToAll() bool { return len(h.ros.order) <= announceAll }

// startSetLocked lists whom this proxy announces its start to (Alive).
// In a small overlay, everyone but the joining. In a large one, telling
// everyone was N² messages at a cold start (10⁸ at 10,000 proxies), so it
// tells only those that have a stake in it: those it probes, those of its
// cluster that probe it (its ClusterProbes predecessors on the cluster's
// ring), and its guardians (the DeadWatchers live members after it on the
// ring of all members), who probe it while it is held dead. Those that
// knew it at an older incarnation, or held it dead, spread the news
// (newIncarnationLocked); at a cold start nobody knew it, nothing is
// spread, and the others hear it when they probe it, if they ever do.
func (h *health) startSetLocked() []int32 {
	r := h.ros
	var out []int32
	add := func(i int32) {
		if i != h.selfIdx && h.recs[i].state != StateJoining && !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	if h.announcesToAll() {
		for _, i := range r.order {
			add(i)
		}
		return out
	}
	for _, i := range h.watchedLocked() {
		add(i)
	}
	ring := r.rings[r.cluster[h.selfIdx]]
	at := slices.Index(ring, h.selfIdx)
	for k, n := 1, 0; k < len(ring) && n < h.cfg.ClusterProbes; k++ {
		if i := ring[(at-k+len(ring))%len(ring)]; watchable(h.recs[i].state) {
			add(i)
			n++
		}
	}
	n := len(r.ring)
	at = int(r.ringAt[h.selfIdx])
	for k, live := 1, 0; k < n && live < h.cfg.DeadWatchers; k++ {
		if i := r.ring[(at+k)%n]; watchable(h.recs[i].state) {
			add(i)
			live++
		}
	}
	return out
}

// missesFor is how many unanswered probes in a row make m a suspect: more
// for one not heard from yet while its first handshake may still be slow.
// In a large overlay a proxy announces its start to a few only
// (startSetLocked), and a member it starts to probe later (its watchers
// move on when one dies) may never have spoken to it: past its own start
// that is no reason to wait, and a dead cluster's last members were found
// 2 s late for it.
func (h *health) missesFor(m *mrec, now int64) int {
	if m.heard() || (!h.announcesToAll() && now-h.startedAt >= int64(startGrace)) {
		return h.cfg.ProbeMisses
	}
	return max(h.cfg.ProbeMisses, int(startGrace/h.cfg.ProbeInterval))
}

// reachLocked notes the watched members that are alive by others' word
// (a helper relayed an answer since this proxy last heard them) but silent
// to this proxy for ProbeMisses+1 probe intervals: the path between the
// two is cut while the rest of the overlay still reaches both. This
// proxy's data path then avoids them (change.unreachable) until they
// answer again. Silence alone is not enough: a proxy that died is silent
// to everyone, and is declared dead, not unreachable. One never heard
// from counts too (a vouch comes only after a suspicion, startGrace for
// it): its path never worked. (Watched and unreachable members have a
// probeRec.)
//
// With a Redialer, it adds the unreachable members to redial, to start
// sessions with afresh: each as it becomes unreachable, and every
// redialEvery while it stays so.
func (h *health) reachLocked(ch *change, now int64, redial *[]SilentMember) {
	limit := int64(h.cfg.ProbeMisses+1) * int64(h.cfg.ProbeInterval)
	h.eachHotLive(func(i int32) { // a dead member is neither (setState)
		m, x := &h.recs[i], h.rec(i)
		live := m.state == StateAlive || m.state == StateSuspect
		cut := m.watched() && live && now-m.lastHeard > limit && h.ext.vouchedAt(x) > m.lastHeard
		if cut {
			*redial = h.redialLocked(*redial, i, now)
		}
		if h.redial != nil && !cut && m.watched() && live && m.flags&fMissed == 0 {
			// Heard, but its answers to this proxy's probes stopped: it
			// may not read what this proxy sends (a session only one
			// side can read; node's redial.go), so what was sent meanwhile
			// is sent again once it answers (change.missed). Its last
			// answer is its last RTT sample, or the first answer of a
			// measurement run (sampleLocked), none yet after a comeback.
			if l := h.ext.lv(x); l != nil && l.rttFrom != 0 && now-max(l.rttAt, l.rttFrom) > limit {
				m.flags |= fMissed
			}
		}
		switch {
		case cut && !m.unreachable():
			h.setUnreachable(i, true)
			h.ext.l(x).rttFrom = 0
			ch.unreachable = append(ch.unreachable, h.ros.ms[i])
		case !cut && m.unreachable():
			h.setUnreachable(i, false)
			switch {
			case !live:
				// Dead (or gone back to joining): not a change of reachability.
			case !m.watched():
				ch.unwatched = append(ch.unwatched, h.ros.ms[i])
			default:
				h.reachableAgain(ch, i)
			}
		}
	})
}

// reachableAgain reports member i reachable again in ch. That also says
// what fMissed would: membershipChanged sends it what it may have missed.
func (h *health) reachableAgain(ch *change, i int32) {
	h.recs[i].flags &^= fMissed
	ch.reachable = append(ch.reachable, h.ros.ms[i])
}

// redialLocked appends member i to rd for the Redialer, unless it was
// handed over within redialEvery (as a suspect, then as unreachable, say),
// and marks it fMissed: a redial may drop what was sent to it.
func (h *health) redialLocked(rd []SilentMember, i int32, now int64) []SilentMember {
	if h.redial == nil {
		return rd
	}
	if at, ok := h.redialAt[i]; ok && now-at < int64(redialEvery) {
		return rd
	}
	if h.redialAt == nil {
		h.redialAt = map[int32]int64{}
	}
	h.redialAt[i] = now
	h.recs[i].flags |= fMissed
	return append(rd, SilentMember{Member: h.ros.ms[i], Silent: time.Duration(now - h.recs[i].lastHeard)})
}

// setUnreachable marks i (un)reachable, keeping count.
func (h *health) setUnreachable(i int32, cut bool) {
	m := &h.recs[i]
	switch {
	case cut && !m.unreachable():
		h.cut++
		h.x(i)
		m.flags |= fUnreachable
	case !cut && m.unreachable():
		h.cut--
		m.flags &^= fUnreachable
	}
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
	h.eachHot(func(i int32) {
		if m := &h.recs[i]; m.unreachable() && m.state != StateDead {
			out[h.ros.ms[i].Addr] = true
		}
	})
	return out
}

// helpersLocked picks up to ConfirmHelpers live members, not v, to probe
// v: first those of a third cluster (neither ours nor v's), whose paths to
// v are the least like ours — when only the link between two clusters is
// cut, they still reach v, and v is not declared dead for everyone over a
// fault of one path — then the others, each set by rendezvous hash.
func (h *health) helpersLocked(v int32) []int32 {
	r := h.ros
	vc := r.ms[v].Cluster
	key := pairPrefix(h.self.Name + "/" + r.ms[v].Name)
	t := top{k: h.cfg.ConfirmHelpers}
	for _, i := range r.order {
		if i == v || i == h.selfIdx || h.recs[i].state != StateAlive {
			continue
		}
		c := r.ms[i].Cluster
		name := r.ms[i].Name
		t.offer(i, topKey{first: c != h.self.Cluster && c != vc, w: weight(key, name), name: name})
	}
	return t.idx
}

// handle takes a health message from the proxy at src.
func (h *health) handle(src netip.Addr, seq uint32, msg Msg) {
	now := h.now()
	var out []outMsg
	var ch change
	h.mu.Lock()
	fi := h.byAddr(src)
	if fi < 0 {
		h.mu.Unlock()
		return
	}
	r := h.ros
	from := &h.recs[fi]
	from.flags |= fHeard
	from.lastHeard = now
	if from.unreachable() && from.state != StateDead {
		// Reachable as of this word, not as of the next tick: a router
		// that still avoids it meanwhile picks other JAPs for nothing.
		h.setUnreachable(fi, false)
		h.reachableAgain(&ch, fi)
	}
	if from.state == StateJoining {
		// Its first word: the newcomer's handshake is done, talk back.
		h.setState(fi, StateAlive)
		h.x(fi)
		from.outstanding = 0
		ch.added = append(ch.added, r.ms[fi])
	}
	if from.state == StateSuspect {
		// Whatever it sent shows that it is up (WireGuard vouches for the
		// sender's address): a starved proxy reads its suspects' messages
		// in a burst, and must not declare dead one it just heard from.
		h.setState(fi, StateAlive)
		h.x(fi)
		from.outstanding = 0
	}
	switch msg := msg.(type) {
	case *Probe:
		out = append(out, outMsg{src, seq, h.ackMsgLocked()})
		if msg.From == r.ms[fi].Name {
			out = h.aliveEvidenceLocked(out, &ch, fi, msg.Incarnation)
		}
	case *ProbeAck:
		if rl, ok := h.probeRelays[seq]; ok && msg.From == r.ms[fi].Name {
			delete(h.probeRelays, seq)
			out = append(out, outMsg{rl.from, rl.seq, msg})
		}
		mi := h.byName(msg.From)
		if mi < 0 {
			break
		}
		x := h.rec(mi)
		if x == nil {
			break // not probed lately
		}
		if seq == 0 {
			break // no probe has it
		}
		ok, indirect, sent := h.ext.answered(x, seq)
		if !ok {
			break
		}
		direct := !indirect && fi == mi
		if direct && sent != 0 {
			h.sampleLocked(&h.recs[mi], x, sent, now)
		}
		if m := &h.recs[mi]; direct && m.flags&fMissed != 0 {
			// This proxy's words reach it again.
			m.flags &^= fMissed
			if m.state != StateDead {
				ch.missed = append(ch.missed, r.ms[mi])
			}
		}
		if indirect && fi != mi {
			h.ext.l(x).vouchedAt = now // a helper reaches it
		}
		if direct || indirect {
			out = h.aliveEvidenceLocked(out, &ch, mi, msg.Incarnation)
		}
	case *ProbeReq:
		ti := h.byName(msg.Suspect)
		if ti < 0 {
			break
		}
		nonce := h.nextNonce()
		h.probeRelays[nonce] = probeRelay{from: src, seq: seq, expires: now + int64(h.cfg.ConfirmTimeout)*2}
		h.stats.probes++
		out = append(out, outMsg{r.ms[ti].Addr, nonce, h.probeMsgLocked()})
	case *Restarted:
		if msg.Name != r.ms[fi].Name {
			break // about itself only: WireGuard vouches for the sender
		}
		// A Restarted costs its sender one datagram and this proxy one per
		// dead member: one answer per DeadProbeInterval to each, or per
		// ProbeInterval if it started again since (a crash loop).
		last, ok := h.deadListed[fi]
		if ok && (now-last.at < int64(h.cfg.ProbeInterval) || msg.Incarnation == last.inc && now-last.at < int64(h.cfg.DeadProbeInterval)) {
			break
		}
		if h.deadListed == nil {
			h.deadListed = map[int32]listedAt{}
		}
		h.deadListed[fi] = listedAt{now, msg.Incarnation}
		out = h.deadListLocked(out, src)
		// Its start is news by its Alive, sent with this. One below the
		// incarnation held here is a restart whose clock went back, or a
		// Restarted that a refutation overtook on the way: this proxy
		// cannot tell, the sender can (see aliveLocked).
		if msg.Incarnation < from.inc {
			out = append(out, outMsg{src, 0, &Alive{Name: r.ms[fi].Name, Incarnation: from.inc}})
		}
	case *Fail:
		out = h.failLocked(out, &ch, src, fi, msg.Name, msg.Incarnation, now)
	case *Alive:
		out = h.aliveLocked(out, &ch, src, fi, msg.Name, msg.Incarnation, now)
	case *News:
		for _, it := range msg.Items {
			if it.Dead {
				out = h.failLocked(out, &ch, src, fi, it.Name, it.Incarnation, now)
			} else {
				out = h.aliveLocked(out, &ch, src, fi, it.Name, it.Incarnation, now)
			}
		}
	}
	out = h.newsOutLocked(out, now, false)
	h.mu.Unlock()
	h.flush(out, ch)
}

// failLocked takes a Fail from src (member fi): name is dead at inc0.
func (h *health) failLocked(out []outMsg, ch *change, src netip.Addr, fi int32, name string, inc0 uint32, now int64) []outMsg {
	r, from := h.ros, &h.recs[fi]
	if inc0 > maxFailIncarnation {
		return out // see maxFailIncarnation
	}
	if name == h.self.Name {
		alive := &Alive{Name: h.self.Name, Incarnation: h.inc}
		if inc0 < h.inc {
			// Refuted already: only its sender has not heard. (Every
			// proxy that held this one dead tells it so: a broadcast
			// for each was N² messages.)
			h.stats.alives++
			return append(out, outMsg{src, 0, alive})
		}
		// Refute: we are alive, at a higher incarnation than the rumor.
		h.inc = inc0 + 1
		alive.Incarnation = h.inc
		ch.refuted = true
		h.stats.alives++
		if now-h.refutedAt < int64(h.cfg.ProbeInterval) {
			// A Fail at the incarnation refuted a moment ago is no
			// suspicion (confirming one takes longer): forged ones,
			// each refuted to all, were N messages a packet. Its
			// sender hears; others learn at the next probe.
			return append(out, outMsg{src, 0, alive})
		}
		h.refutedAt = now
		out = h.broadcastLocked(out, alive)
		// Dead members are skipped by broadcast, but the sender thinks
		// we are dead and is alive itself.
		if from.state == StateDead {
			out = append(out, outMsg{src, 0, alive})
		}
		return out
	}
	mi := h.byName(name)
	if mi < 0 {
		return out
	}
	m := &h.recs[mi]
	inc := inc0
	if inc == 0 && m.state != StateDead {
		// Its sender never heard its incarnation (it announces its
		// start to a few only), and probed it in vain: a death at
		// the incarnation known here. Any member may send a Fail at
		// any incarnation; this is no more.
		inc = m.inc
	}
	if (m.state != StateDead && inc >= m.inc) || (m.state == StateDead && inc > m.inc) {
		wasDead := m.state == StateDead
		h.setState(mi, StateDead)
		x := h.rec(mi)
		m.inc, m.outstanding, x.lastProbe = inc, 0, now
		h.gen.Add(1)
		if !wasDead {
			x.deadAt = now
			ch.dead = append(ch.dead, &r.ms[mi])
			// Pass it on once: new to us, so maybe new to others.
			h.spreadLocked(NewsItem{Name: name, Incarnation: inc0, Dead: true}, mi, src)
		}
	}
	return out
}

// aliveLocked takes an Alive from src (member fi): name is alive at inc.
func (h *health) aliveLocked(out []outMsg, ch *change, src netip.Addr, fi int32, name string, inc uint32, now int64) []outMsg {
	r, from := h.ros, &h.recs[fi]
	if inc > maxAliveIncarnation {
		return out
	}
	if name == h.self.Name {
		h.heldLocked(fi, inc, now)
		return out
	}
	if name != r.ms[fi].Name {
		// Forwarded news about a third proxy. Any member may pass it
		// on, as any may pass on a Fail.
		if mi := h.byName(name); mi >= 0 && inc > h.recs[mi].inc {
			h.newIncarnationLocked(ch, mi, inc, src)
		}
		return out
	}
	if inc > from.inc {
		h.newIncarnationLocked(ch, fi, inc, netip.Addr{})
	} else if from.state == StateDead {
		out = h.tellDeadLocked(out, fi)
	}
	return out
}

// announceLocked tells the start set that this proxy lives, at its
// incarnation; if unheard, only those it has not heard from since its
// start.
func (h *health) announceLocked(out []outMsg, unheard bool) []outMsg {
	alive := &Alive{Name: h.self.Name, Incarnation: h.inc}
	for _, i := range h.startSetLocked() {
		if unheard && h.recs[i].heard() {
			continue
		}
		out = append(out, outMsg{h.ros.ms[i].Addr, 0, alive})
		h.stats.alives++
	}
	return out
}

// reannounceAfter is how many probe intervals after its start a proxy
// announces it again.
const reannounceAfter = 3

// maxRebase is how far above its start's incarnation a proxy moves on
// its peers' word: 18 hours of a clock gone back.
const maxRebase = 1 << 16

// heldLocked takes member fi's answer to this proxy's Restarted: it holds
// this proxy at incarnation inc. Only the answers of members it asked, in
// the first DeadProbeInterval of its life and within maxRebase of its
// start, count: any other Alive about itself proves nothing.
func (h *health) heldLocked(fi int32, inc uint32, now int64) {
	if inc > h.inc && inc > h.heldAt && !h.rebased && h.announced && now-h.startedAt < int64(h.cfg.DeadProbeInterval) &&
		uint64(inc) <= uint64(h.cfg.Incarnation)+maxRebase && slices.Contains(h.asked, fi) {
		h.heldAt = inc
	}
}

// rebaseLocked ends the first DeadProbeInterval of this proxy's life. If
// a member it asked holds it at an incarnation above its own (heldLocked),
// its wall clock went back since the last life (red team, finding 2):
// every proxy took its start for an old Alive and kept what it had of the
// last life. It starts again at the highest such incarnation plus 2,
// which everyone takes for a restart (plus 1 would be a refutation), and
// announces that as its start.
func (h *health) rebaseLocked(out []outMsg) []outMsg {
	h.rebased = true
	if h.heldAt <= h.inc {
		return out
	}
	h.inc = h.heldAt + 2
	return h.announceLocked(out, false)
}

// newIncarnationLocked applies Alive(inc) for i, inc > its incarnation,
// learned from i itself (its Alive, a probe or an answer: src invalid) or
// passed on by the proxy at src.
//
// News is spread as a death is (spreadLocked): i announced its start only
// to a few (startSetLocked), and a proxy that held it dead, or knew it at
// an older incarnation, is one of those who must know. A refutation (one
// more than the incarnation i was known at, i alive) is not spread: i
// sent it to everyone. Nor is a first word at a cold start (incarnation 0
// known): there is nothing to tell. Each proxy passes each incarnation on
// once, as it takes it once.
func (h *health) newIncarnationLocked(ch *change, i int32, inc uint32, src netip.Addr) {
	m := &h.recs[i]
	if m.state == StateJoining {
		m.inc = inc // news from a third proxy: still wait for its own word
		h.gen.Add(1)
		return
	}
	old, oldInc := m.state, m.inc
	h.setState(i, StateAlive)
	m.inc = inc
	m.outstanding = 0
	if x := h.rec(i); x != nil {
		if l := h.ext.lv(x); l != nil {
			l.rttFrom = 0 // a new process: a new WireGuard session to set up
		}
	}
	h.gen.Add(1)
	mb := h.ros.ms[i]
	// No list of whom we hold dead goes with the news: a restarted proxy
	// asks for that (Restarted), and one that refuted (a partition healed)
	// kept its own side's view, which the other side's list would overturn
	// with deaths that only guardians' probes undo. A restart starts at
	// the wall clock; a refutation is the incarnation it was declared dead
	// at plus one, and the refuter tells everyone itself.
	restart := inc > oldInc+1
	passed := src.IsValid()
	// A restart in an overlay of up to announceAll was announced to every
	// member by the restarted proxy itself (startSetLocked): passing it
	// on from each that held it dead was N² messages (red team, finding
	// 5). A refutation was not: the refuter tells only those it holds live.
	toldAll := restart && !passed && h.announcesToAll()
	switch {
	case old == StateDead:
		ch.revived = append(ch.revived, mb)
	case oldInc != 0 || passed:
		// A restart (or refutation) we had not noticed: its state is
		// gone. News passed on is news to its sender, who knew it at an
		// older incarnation or held it dead: this proxy, which never
		// heard its incarnation, may still have had state with it.
		ch.reset = append(ch.reset, mb)
	}
	if !toldAll && (passed || old == StateDead || (restart && oldInc != 0)) {
		h.spreadLocked(NewsItem{Name: mb.Name, Incarnation: inc}, i, src)
	}
}

// deadListLocked tells to whom this proxy holds dead, in as few News as
// hold them (a Fail each was 5,000 datagrams in a partition of 10,000).
func (h *health) deadListLocked(out []outMsg, to netip.Addr) []outMsg {
	var items []NewsItem
	h.eachHot(func(i int32) { // the dead have a probeRec
		if d := &h.recs[i]; d.state == StateDead && h.ros.ms[i].Addr != to {
			items = append(items, NewsItem{Name: h.ros.ms[i].Name, Incarnation: d.inc, Dead: true})
		}
	})
	return tellNews(out, to, items)
}

// tellDeadLocked tells i, which has just spoken, that it is held dead
// here at its incarnation, so that it refutes: once between two ticks,
// while its refutation may be on the way. (Under a flood of forged deaths
// each of its messages was answered with a Fail, and each Fail with an
// Alive.)
func (h *health) tellDeadLocked(out []outMsg, i int32) []outMsg {
	if h.toldDead[i] {
		return out
	}
	if h.toldDead == nil {
		h.toldDead = map[int32]bool{}
	}
	h.toldDead[i] = true
	return append(out, outMsg{h.ros.ms[i].Addr, 0, &Fail{Name: h.ros.ms[i].Name, Incarnation: h.recs[i].inc}})
}

// aliveEvidenceLocked handles an answer (or probe) from i carrying inc.
func (h *health) aliveEvidenceLocked(out []outMsg, ch *change, i int32, inc uint32) []outMsg {
	m := &h.recs[i]
	switch {
	case m.state == StateDead && inc > m.inc:
		h.newIncarnationLocked(ch, i, inc, netip.Addr{})
	case m.state == StateDead:
		// It is up but was declared dead at this incarnation: tell it, so
		// that it refutes.
		out = h.tellDeadLocked(out, i)
	case m.inc != 0 && inc > m.inc+1:
		// A restart, heard first by a probe or its answer.
		h.newIncarnationLocked(ch, i, inc, netip.Addr{})
	default:
		if inc > m.inc {
			m.inc = inc
			h.gen.Add(1)
		}
		h.setState(i, StateAlive)
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
	h.watchedLocked()
	out := []MemberInfo{{Name: h.self.Name, Addr: h.self.Addr, Cluster: h.self.Cluster, State: StateAlive, Incarnation: h.inc}}
	for _, i := range h.ros.order {
		if i == h.selfIdx {
			continue
		}
		m, mb := &h.recs[i], &h.ros.ms[i]
		out = append(out, MemberInfo{Name: mb.Name, Addr: mb.Addr, Cluster: mb.Cluster, State: m.state,
			RTT: h.rttLocked(i, now), Incarnation: m.inc, Watched: m.watched(), Unreachable: m.unreachable() && m.state != StateDead,
			Heard: m.heard()})
	}
	return out
}

// liveMember is a live member other than this proxy, with its number and
// incarnation. Member points into the roster, which is never written.
type liveMember struct {
	*Member
	idx int32
	inc uint32
}

// liveOthers lists the members other than this proxy that are not known
// dead, by name, and the liveGen it is of. It is made at each call (kept,
// it cost 16 bytes per member at every proxy): callers that only need to
// know whether it changed compare liveGen.
func (h *health) liveOthers() ([]liveMember, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.ros
	out := make([]liveMember, 0, len(r.ms)-1-h.nDown)
	for _, i := range r.order {
		if h.liveAt(i) {
			out = append(out, liveMember{&r.ms[i], i, h.recs[i].inc})
		}
	}
	return out, h.gen.Load()
}

// liveGen changes whenever liveOthers would.
func (h *health) liveGen() uint64 { return h.gen.Load() }

// liveOthersCount is len(liveOthers()).
func (h *health) liveOthersCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ros.ms) - 1 - h.nDown
}

// liveOther is liveOthers()[k], without the list.
func (h *health) liveOther(k int) Member {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.ros
	if h.nDown == 0 {
		// By name, self left out.
		if int32(k) >= r.rank[h.selfIdx] {
			k++
		}
		return r.ms[r.order[k]]
	}
	for _, i := range r.order {
		if h.liveAt(i) {
			if k == 0 {
				return r.ms[i]
			}
			k--
		}
	}
	return Member{}
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
	if h.byName(m.Name) >= 0 || h.byAddr(m.Addr) >= 0 {
		h.mu.Unlock()
		return false
	}
	h.ros = h.ros.with(m)
	i := int32(len(h.ros.ms) - 1)
	h.recs = append(h.recs, mrec{state: state, inc: inc})
	// New ranks: index the bit sets again.
	h.hot, h.down, h.dead = newBitset(len(h.ros.ms)), cowBits{}, newBitset(len(h.ros.ms))
	for j := range h.recs {
		if h.rec(int32(j)) != nil {
			h.hot.set(h.ros.rank[j], true)
		}
	}
	for j := range h.recs {
		if int32(j) != h.selfIdx && !watchable(h.recs[j].state) {
			h.down.set(h.ros.rank[j], true)
		}
		if int32(j) != h.selfIdx && h.recs[j].state == StateDead {
			h.dead.set(h.ros.rank[j], true)
		}
	}
	if !watchable(state) {
		h.nDown++
		x := h.x(i)
		h.ext.l(x).suspectAt, x.lastProbe = now, now
		if state == StateDead {
			x.deadAt = now
		}
	}
	h.watchedOK = false
	h.gen.Add(1)
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

// index is the number of the member called name; -1 if none (or self).
func (h *health) index(name string) int32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byName(name)
}

// state is how this proxy sees the member called name, and its incarnation.
func (h *health) state(name string) (MemberState, uint32, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if name == h.self.Name {
		return StateAlive, h.inc, true
	}
	i := h.byName(name)
	if i < 0 {
		return 0, 0, false
	}
	return h.recs[i].state, h.recs[i].inc, true
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
	i := h.byName(name)
	if i < 0 {
		return 0, false
	}
	at := h.deadAt[i]
	if x := h.rec(i); x != nil {
		at = x.deadAt
	}
	return at, at != 0
}

// liveView is the live proxies as health saw them at one moment, kept by
// the proxy for its RAP hash and its router; it is never changed. It
// costs a bit per member: every proxy copying the names of 10,000 live
// ones at every death was a large overlay's main cost in an event.
type liveView struct {
	ros  *roster
	self int32
	// down: dead or joining; cut: unreachable from here (nil if none);
	// both by rank.
	down  cowBits
	cut   bitset
	once  sync.Once
	names []string
}

// view is the live proxies now.
func (h *health) view() *liveView {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := &liveView{ros: h.ros, self: h.selfIdx, down: h.down.snapshot()}
	if h.cut > 0 {
		v.cut = newBitset(len(h.ros.ms))
		h.eachHot(func(i int32) {
			if m := &h.recs[i]; m.unreachable() && m.state != StateDead {
				v.cut.set(h.ros.rank[i], true)
			}
		})
	}
	return v
}

// Names are the live proxies' names (self included), sorted.
func (v *liveView) Names() []string {
	v.once.Do(func() {
		if v.names != nil {
			return
		}
		v.names = make([]string, 0, len(v.ros.ms)-v.down.count())
		for k, i := range v.ros.order {
			if !v.down.has(int32(k)) {
				v.names = append(v.names, v.ros.ms[i].Name)
			}
		}
	})
	return v.names
}

// routes reports whether the member numbered i is a JAP for new flows:
// live and reachable from here.
func (v *liveView) routes(i int32) bool {
	k := v.ros.rank[i]
	return !v.down.has(k) && !v.cut.has(k)
}

// Has4 is for the router: whether the proxy at a is live and reachable.
func (v *liveView) Has4(a uint32) bool {
	i, ok := v.ros.v4[a]
	return ok && v.routes(i)
}

// Has16 is Has4 for IPv6.
func (v *liveView) Has16(a [16]byte) bool {
	i, ok := v.ros.v6[a]
	return ok && v.routes(i)
}

// lost is shrinks, knowing that the members dead died from v to w: if
// one of them routed in v, that is the answer, without a walk over every
// member's bits (a partition changes the view at every proxy for every
// datagram of news).
func (v *liveView) lost(w *liveView, dead []*Member) bool {
	for _, m := range dead {
		if i, ok := v.ros.at(m.Addr); ok && v.routes(i) {
			return true
		}
	}
	return v.shrinks(w)
}

// shrinks reports whether a proxy that routes in v does not in w.
func (v *liveView) shrinks(w *liveView) bool {
	if v.ros != w.ros {
		for i := range v.ros.ms {
			if v.routes(int32(i)) && (i >= len(w.ros.ms) || !w.routes(int32(i))) {
				return true
			}
		}
		return false
	}
	for k := range (len(v.ros.ms) + 63) / 64 {
		out := w.down.word(k) | w.cut.word(k)
		if out&^(v.down.word(k)|v.cut.word(k)) != 0 {
			return true
		}
	}
	return false
}
