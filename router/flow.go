package router

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// flowKey is a 5-tuple as a packet carries it. It is a flat, padding-free
// array struct, so Go maps hash and compare it as plain memory (netip.Addr
// holds a zone pointer, which would make every lookup slower).
type flowKey struct {
	src, dst     [16]byte
	sport, dport uint16
	proto, fam   uint8
}

// hash is a cheap, fixed (unseeded) mix of the key. It picks shards and,
// being the same on every proxy, also JAPs and remapped ports: two IAPs with
// the same JAP list send a client's flow to the same JAP.
func (k *flowKey) hash() uint64 {
	h := binary.LittleEndian.Uint64(k.src[:8]) ^ binary.LittleEndian.Uint64(k.src[8:])*0x9e3779b97f4a7c15
	h ^= binary.LittleEndian.Uint64(k.dst[:8])*0xbf58476d1ce4e5b9 ^ binary.LittleEndian.Uint64(k.dst[8:])*0x94d049bb133111eb
	h ^= uint64(k.sport)<<32 | uint64(k.dport)<<16 | uint64(k.proto)<<8 | uint64(k.fam)
	return mix64(h)
}

// mix64 is the splitmix64 finalizer.
func mix64(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// TCP state bits of a flow. Both tables see both directions of a flow, so
// both track the state themselves.
const (
	stRev    = 1 << iota // a reply was seen
	stEst                // established
	stFinFwd             // FIN from the client
	stFinRev             // FIN from the target
	stRst                // RST from either side
)

// flow is one entry of a flow table. Fields other than the atomics never
// change after the flow is published, so readers need no lock.
type flow struct {
	// The mutable fields come first, beside key: lookups, the data path
	// and eviction's sampling then mostly touch one cache line.
	last  atomic.Int64  // monotonic ns of the last packet
	state atomic.Uint32 // stRev, stEst, … (TCP only)
	peer  atomic.Uint32 // IAP flows: the JAP; JAP flows: the IAP the flow last came from
	key   flowKey       // as the client sends it: C:cp → A:ap
	rkey  flowKey       // JAP flows: the reply as the target sends it: T:tp → C:cpOut
	// JAP flows: checksum deltas of the forward NAT rewrite, the address
	// part alone (IPv4 header) and all of it (TCP/UDP checksum). The reply
	// rewrite is their negation. (Here, in the padding after the two
	// 38-byte keys: a flow is then 160 bytes, a size class of its own,
	// not 168 in one of 176.)
	dAddr, dL4 uint16
	h          uint64 // key.hash()
	rh         uint64 // rkey.hash()
	// The flow's index (see flowList), fixed when the flow is made: a JAP
	// flow's target's flows, an IAP flow's group's flows joined here, or
	// nil. Its links are guarded by the list's lock.
	ix           *flowList
	iprev, inext *flow
	// The flow's source in its forward shard and its place in the source's
	// list (see sources), guarded by the shard's lock.
	src          *source
	sprev, snext *flow
}

// touch records a packet at now. Writes are skipped within a millisecond so
// that a busy flow does not keep dirtying its cache line.
func (f *flow) touch(now int64) {
	if now-f.last.Load() > int64(time.Millisecond) {
		f.last.Store(now)
	}
}

// tcp updates the TCP state from a packet's flags; rev is true for the
// target→client direction.
func (f *flow) tcp(flags uint8, rev bool) {
	for {
		old := f.state.Load()
		n := old
		switch {
		case !rev && flags&(tcpSYN|tcpACK|tcpRST) == tcpSYN && old&(stRst|stFinFwd|stFinRev) != 0:
			n = 0 // a new SYN on a closed tuple: the port is reused
		case rev:
			n |= stRev
			if flags&(tcpSYN|tcpRST) == 0 {
				n |= stEst
			}
			if flags&tcpFIN != 0 {
				n |= stFinRev
			}
		default:
			if flags&(tcpSYN|tcpRST) == 0 && old&stRev != 0 {
				n |= stEst
			}
			if flags&tcpFIN != 0 {
				n |= stFinFwd
			}
		}
		if flags&tcpRST != 0 {
			n |= stRst
		}
		if n == old || f.state.CompareAndSwap(old, n) {
			return
		}
	}
}

// timeouts are Timeouts in nanoseconds.
type timeouts struct{ syn, est, closing, udp, icmp int64 }

func (t *timeouts) of(f *flow) int64 {
	if f.key.proto != ProtoTCP {
		return t.udp
	}
	s := f.state.Load()
	switch {
	case s&stRst != 0 || s&(stFinFwd|stFinRev) == stFinFwd|stFinRev:
		return t.closing
	case s&stEst != 0:
		return t.est
	}
	return t.syn
}

func stateName(f *flow) string {
	if f.key.proto != ProtoTCP {
		return ""
	}
	s := f.state.Load()
	switch {
	case s&stRst != 0 || s&(stFinFwd|stFinRev) == stFinFwd|stFinRev:
		return "closing"
	case s&stEst != 0:
		return "established"
	}
	return "syn"
}

// shard is one mutex's worth of a table; lookups take no lock (see
// flowMap). Padding keeps two shards' hot words off one cache line (the
// shard is 128 bytes).
type shard struct {
	mu  sync.Mutex
	m   flowMap
	src sources // forward shards only
	// The shard's flows by protocol, now and made (forward shards only):
	// counted under the lock the insert or removal holds anyway.
	live [NumFlowProtos]int
	made [NumFlowProtos]uint64
	_    [24]byte
}

// table is a flow table, sharded by key hash so that peers on different
// cores rarely wait for each other's inserts, and so that each shard's
// eviction scans stay small. A JAP table also indexes its flows by reply key
// in rev (its own shards, locked after the forward shard, never before).
type table struct {
	shards   []shard
	rev      []shard // nil for the IAP table
	mask     uint64
	shardCap int   // the hard cap, split evenly: no shard may exceed it
	srcCap   int   // the most flows one source may hold in a shard
	churn    int64 // ns between a source's evictions of its own, at its share, per shard
	n        atomic.Int64
}

const maxShards = 16

func newTable(maxFlows int, withRev bool) *table {
	// Small tables get one shard, so that their cap is exact; big ones at
	// most 16, each big enough that uneven hashing costs little capacity.
	ns := 1
	for ns < maxShards && maxFlows/(ns*2) >= 1024 {
		ns *= 2
	}
	t := &table{shards: make([]shard, ns), mask: uint64(ns - 1), shardCap: maxFlows / ns}
	t.srcCap = max(t.shardCap/sourceShare, 1)
	t.churn = int64(ns) * int64(1e9) / SourceChurn
	for i := range t.shards {
		t.shards[i].m.init(false)
	}
	if withRev {
		t.rev = make([]shard, ns)
		for i := range t.rev {
			t.rev[i].m.init(true)
		}
	}
	return t
}

func (t *table) shard(h uint64) *shard { return &t.shards[h&t.mask] }

// get finds the flow of key k (hash h), without locking.
func (t *table) get(k *flowKey, h uint64) *flow { return t.shard(h).m.get(k, h) }

// getAll appends the flows of key k (hash h) to out, without locking.
func (t *table) getAll(k *flowKey, h uint64, out []*flow) []*flow {
	return t.shard(h).m.getAll(k, h, out)
}

// getRev finds the flow whose reply key is k, without locking.
func (t *table) getRev(k *flowKey) *flow {
	h := k.hash()
	return t.rev[h&t.mask].m.get(k, h)
}

// revTaken reports whether a flow has the reply key k, without locking.
func (t *table) revTaken(k *flowKey) bool { return t.getRev(k) != nil }

// unclaimRev undoes claimRev.
func (t *table) unclaimRev(f *flow) {
	rs := &t.rev[f.rh&t.mask]
	rs.mu.Lock()
	rs.m.delete(f)
	rs.mu.Unlock()
}

// claimRev indexes f under its reply key unless that key is taken. f must
// be complete: once claimed, replies find it.
func (t *table) claimRev(f *flow) bool {
	f.rh = f.rkey.hash()
	s := &t.rev[f.rh&t.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m.get(&f.rkey, f.rh) != nil {
		return false
	}
	s.m.put(f)
	return true
}

// insertOutcome is what insertLocked did.
type insertOutcome uint8

const (
	inserted    insertOutcome = iota
	indexClosed               // f's index is closed: what f serves is gone
	churnLimit                // f's source, at its share, makes new flows too fast
)

// insertLocked adds f to its locked forward shard s, and to its index,
// making room first if its source or the shard is full (see sources). It
// returns how many flows it evicted, and what it did; unless inserted, it
// did nothing. f.last must be the time of the packet that makes it.
func (t *table) insertLocked(s *shard, f *flow, to *timeouts) (uint64, insertOutcome) {
	src := s.src.get(&f.key.src)
	full := src != nil && src.n >= t.srcCap
	if full && !src.mayChurn(f.last.Load(), t.churn) {
		return 0, churnLimit
	}
	if f.ix != nil && !f.ix.add(f) {
		return 0, indexClosed
	}
	var n uint64
	if full {
		var buf [evictSample]*flow
		t.removeLocked(s, stalest(src.oldest(buf[:0]), to))
		n++
	}
	for s.m.n >= t.shardCap && s.m.n > 0 {
		t.removeLocked(s, t.victimLocked(s, to))
		n++
	}
	s.m.put(f)
	s.src.add(f)
	t.n.Add(1)
	fp := flowProtoOf(f.key.proto)
	s.live[fp]++
	s.made[fp]++
	return n, inserted
}

// removeLocked deletes f from its locked forward shard s, its index and
// the reply index. It returns false when f was not in the table.
func (t *table) removeLocked(s *shard, f *flow) bool {
	if !s.m.delete(f) {
		return false
	}
	t.n.Add(-1)
	s.live[flowProtoOf(f.key.proto)]--
	s.src.remove(f)
	if f.ix != nil {
		f.ix.remove(f)
	}
	if t.rev != nil {
		t.unclaimRev(f)
	}
	return true
}

// evictSample is how many flows an eviction looks at (as Redis's
// approximate LRU does; each costs a cache miss).
const evictSample = 5

// victimLocked picks the flow that the full, locked shard s evicts: one of
// its heaviest source's, the first of a few of them whose idle timeout
// runs out. When other sources have as many flows, a few flows from a
// random place compete too, and the flow of a source that has the most
// whose timeout runs out first goes.
func (t *table) victimLocked(s *shard, to *timeouts) *flow {
	heavy, tied := s.src.heaviest()
	var buf [2 * evictSample]*flow
	cand := heavy.oldest(buf[:0:evictSample])
	if tied {
		cand = s.m.sample(buf[: len(cand) : len(cand)+evictSample])
	}
	n := 0
	for _, f := range cand {
		if f.src.n >= heavy.n {
			cand[n] = f
			n++
		}
	}
	return stalest(cand[:n], to)
}

// stalest returns the flow of fs whose idle timeout runs out first.
func stalest(fs []*flow, to *timeouts) *flow {
	var victim *flow
	var deadline int64
	for _, f := range fs {
		if d := f.last.Load() + to.of(f); victim == nil || d < deadline {
			victim, deadline = f, d
		}
	}
	return victim
}

// deleteWhere removes the flows for which drop is true and returns how many.
func (t *table) deleteWhere(drop func(*flow) bool) int {
	n := 0
	if t.n.Load() == 0 {
		// Nothing to look at (a simulated proxy's tables, every time a
		// member dies); a flow added meanwhile could as well have gone
		// to a shard already walked.
		return 0
	}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.m.each(func(f *flow) {
			if drop(f) {
				t.removeLocked(s, f)
				n++
			}
		})
		s.mu.Unlock()
	}
	return n
}

// stats counts the table's flows by protocol, a shard at a time.
func (t *table) stats() TableStats {
	var ts TableStats
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for p := range NumFlowProtos {
			ts.Live[p] += s.live[p]
			ts.New[p] += s.made[p]
		}
		s.mu.Unlock()
	}
	return ts
}

// each calls fn for every flow.
func (t *table) each(fn func(*flow)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.m.each(fn)
		s.mu.Unlock()
	}
}

// Flow describes one flow, for status output and tests.
type Flow struct {
	Kind   string // "iap" or "jap"
	Proto  uint8
	Client netip.AddrPort // C:cp as the client sends it
	Group  Group
	// JAP is the join proxy an IAP flow sticks to (this proxy's own address
	// when it is its own JAP); IAP is the ingress proxy a JAP flow last came
	// from.
	JAP, IAP netip.Addr
	// Target is where a JAP flow goes (T:tp) and ClientPortOut the client's
	// port as the target sees it (cp, or the remapped port on a clash).
	Target        netip.AddrPort
	ClientPortOut uint16
	State         string // TCP: "syn", "established" or "closing"
	LastSeen      int64  // monotonic ns
}

// Flows returns a snapshot of both flow tables.
func (r *Router) Flows() []Flow {
	var out []Flow
	describe := func(kind string, f *flow) Flow {
		k := &f.key
		fl := Flow{
			Kind:     kind,
			Proto:    k.proto,
			Client:   netip.AddrPortFrom(addrOf(k.src, k.fam), k.sport),
			Group:    Group{Addr: addrOf(k.dst, k.fam), Port: k.dport, Proto: k.proto},
			State:    stateName(f),
			LastSeen: f.last.Load(),
		}
		var peer [4]byte
		binary.BigEndian.PutUint32(peer[:], f.peer.Load())
		if kind == "iap" {
			fl.JAP = netip.AddrFrom4(peer)
		} else {
			fl.IAP = netip.AddrFrom4(peer)
			fl.Target = netip.AddrPortFrom(addrOf(f.rkey.src, k.fam), f.rkey.sport)
			fl.ClientPortOut = f.rkey.dport
		}
		return fl
	}
	r.iap.each(func(f *flow) { out = append(out, describe("iap", f)) })
	r.jap.each(func(f *flow) { out = append(out, describe("jap", f)) })
	return out
}

// expireFlows removes idle flows from both tables.
func (r *Router) expireFlows(now int64) {
	idle := func(f *flow) bool { return now-f.last.Load() > r.to.of(f) }
	r.iap.deleteWhere(idle)
	r.jap.deleteWhere(idle)
}
