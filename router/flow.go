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

// reverse is the key of the other direction.
func (k flowKey) reverse() flowKey {
	return flowKey{src: k.dst, dst: k.src, sport: k.dport, dport: k.sport, proto: k.proto, fam: k.fam}
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
	key  flowKey // as the client sends it: C:cp → A:ap
	h    uint64  // key.hash()
	rkey flowKey // JAP flows: the reply as the target sends it: T:tp → C:cpOut
	// JAP flows: checksum deltas of the forward NAT rewrite, the address
	// part alone (IPv4 header) and all of it (TCP/UDP checksum). The reply
	// rewrite is their negation.
	dAddr, dL4 uint16
	peer       atomic.Uint32 // IAP flows: the JAP; JAP flows: the IAP the flow last came from
	last       atomic.Int64  // monotonic ns of the last packet
	state      atomic.Uint32 // stRev, stEst, … (TCP only)
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

// shard is one lock's worth of a table. Padding keeps two shards' locks off
// one cache line.
type shard struct {
	mu sync.RWMutex
	m  map[flowKey]*flow
	_  [40]byte
}

// table is a flow table, sharded by key hash so that peers on different
// cores rarely share a lock. A JAP table also indexes its flows by reply key
// in rev (its own shards, locked after the forward shard, never before).
type table struct {
	shards   []shard
	rev      []shard // nil for the IAP table
	mask     uint64
	shardCap int // the hard cap, split evenly: no shard may exceed it
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
	for i := range t.shards {
		t.shards[i].m = make(map[flowKey]*flow)
	}
	if withRev {
		t.rev = make([]shard, ns)
		for i := range t.rev {
			t.rev[i].m = make(map[flowKey]*flow)
		}
	}
	return t
}

func (t *table) shard(h uint64) *shard      { return &t.shards[h&t.mask] }
func (t *table) revShard(k *flowKey) *shard { return &t.rev[k.hash()&t.mask] }

func (t *table) get(k *flowKey, h uint64) *flow {
	s := t.shard(h)
	s.mu.RLock()
	f := s.m[*k]
	s.mu.RUnlock()
	return f
}

func (t *table) getRev(k *flowKey) *flow {
	s := t.revShard(k)
	s.mu.RLock()
	f := s.m[*k]
	s.mu.RUnlock()
	return f
}

// claimRev indexes f under its reply key unless that key is taken. f must
// be complete: once claimed, replies find it.
func (t *table) claimRev(f *flow) bool {
	s := t.revShard(&f.rkey)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.m[f.rkey]; taken {
		return false
	}
	s.m[f.rkey] = f
	return true
}

// removeLocked deletes f from its (locked) forward shard s and from the
// reply index.
func (t *table) removeLocked(s *shard, f *flow) {
	delete(s.m, f.key)
	t.n.Add(-1)
	if t.rev != nil {
		rs := t.revShard(&f.rkey)
		rs.mu.Lock()
		if rs.m[f.rkey] == f {
			delete(rs.m, f.rkey)
		}
		rs.mu.Unlock()
	}
}

// evictSample is how many flows an insert into a full shard looks at.
const evictSample = 8

// makeRoomLocked evicts from the locked shard s while it is full: of a few
// flows (Go's map iteration starts at a random place, so these are a random
// sample), the one whose idle timeout runs out first. It returns how many
// flows it evicted.
func (t *table) makeRoomLocked(s *shard, to *timeouts) uint64 {
	var n uint64
	for len(s.m) >= t.shardCap && len(s.m) > 0 {
		var victim *flow
		var deadline int64
		i := 0
		for _, f := range s.m {
			if d := f.last.Load() + to.of(f); victim == nil || d < deadline {
				victim, deadline = f, d
			}
			if i++; i == evictSample {
				break
			}
		}
		t.removeLocked(s, victim)
		n++
	}
	return n
}

// deleteWhere removes the flows for which drop is true and returns how many.
func (t *table) deleteWhere(drop func(*flow) bool) int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, f := range s.m {
			if drop(f) {
				t.removeLocked(s, f)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// each calls fn for every flow, under the shards' read locks.
func (t *table) each(fn func(*flow)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		for _, f := range s.m {
			fn(f)
		}
		s.mu.RUnlock()
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
