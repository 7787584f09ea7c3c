package router

import "encoding/binary"

// The JAP's NAT: the destination A:ap becomes T:tp, and the client's
// address is kept so targets see who calls. When the reply tuple
// T:tp → C:cp is already another flow's, the client port cp is remapped.
// Checksums are updated incrementally (RFC 1624) with deltas computed once
// per flow.

// Remapped client ports are searched in [natPortMin, 65535], at natProbes
// places at most: a new flow whose reply key and probes are all taken is
// dropped (DropNoPort). When a fraction u of the client's ports to the
// target is taken, that happens with probability u^natProbes: 0.1% at
// 90% used, 4% at 95%. A client holds at most a quarter of the table (see sources), so
// with the default MaxFlows it cannot fill the port space of one target.
const (
	natPortMin   = 1024
	natPortRange = 65536 - natPortMin
	natProbes    = 64
)

// natFlow returns the JAP flow of the client packet p (key k, hash h),
// creating it with target tgt when there is none. The caller has chosen
// tgt; it is used only when the flow is new. When there is no flow, why
// says why: DropNoPort, no client port of the reply tuple was found free;
// DropNoTarget, tgt has just left (or moved to another port).
func (r *Router) natFlow(k *flowKey, h uint64, tgt *target, iap uint32, now int64) (f *flow, why DropReason) {
	s := r.jap.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.m.get(k, h); f != nil { // created meanwhile by another peer's goroutine
		return f, DropNone
	}
	return r.newNATFlowLocked(s, k, h, tgt, iap, now)
}

// replicaFlow is natFlow for one of a replicated datagram's targets: it
// returns the JAP flow of key k to tgt, creating it beside the key's flows
// to other targets.
func (r *Router) replicaFlow(k *flowKey, h uint64, tgt *target, iap uint32, now int64) (f *flow, why DropReason) {
	s := r.jap.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf [MaxReplicate]*flow
	for _, f := range s.m.getAll(k, h, buf[:0]) {
		if f.to(tgt) {
			return f, DropNone
		}
	}
	return r.newNATFlowLocked(s, k, h, tgt, iap, now)
}

// to reports whether the JAP flow f goes to tgt.
func (f *flow) to(tgt *target) bool { return f.rkey.src == tgt.addr && f.rkey.sport == tgt.port }

// newNATFlowLocked creates the JAP flow of key k to tgt in the locked
// shard s.
func (r *Router) newNATFlowLocked(s *shard, k *flowKey, h uint64, tgt *target, iap uint32, now int64) (f *flow, why DropReason) {
	t := r.jap
	f = &flow{key: *k, h: h, ix: tgt.flows}
	f.peer.Store(iap)
	f.last.Store(now)
	f.rkey = flowKey{src: tgt.addr, dst: k.src, sport: tgt.port, dport: k.sport, proto: k.proto, fam: k.fam}
	f.setDeltas()
	if !t.claimRev(f) && !r.remapLocked(f, h) {
		return nil, DropNoPort
	}
	n, did := t.insertLocked(s, f, &r.to)
	switch did {
	case indexClosed:
		t.unclaimRev(f)
		return nil, DropNoTarget
	case churnLimit:
		t.unclaimRev(f)
		return nil, DropFlowRate
	}
	r.st.evicted.Add(n)
	return f, DropNone
}

// remapLocked looks for a client port of f's reply key that no flow uses,
// at natProbes places picked by a hash of the flow (the same on every
// proxy), and claims it. The probes look without locking; only a port that
// looks free is claimed under its reply shard's lock.
func (r *Router) remapLocked(f *flow, h uint64) bool {
	for i := uint64(1); i <= natProbes; i++ {
		f.rkey.dport = uint16(natPortMin + mix64(h+i*0x9e3779b97f4a7c15)%natPortRange)
		if r.jap.revTaken(&f.rkey) {
			continue
		}
		f.setDeltas()
		if r.jap.claimRev(f) {
			return true
		}
	}
	return false
}

// setDeltas computes the checksum deltas of the forward rewrite
// A:ap → T:tp (and cp → cpOut) from key and rkey.
func (f *flow) setDeltas() {
	k, rk := &f.key, &f.rkey
	f.dAddr = delta(addrBytes(&k.dst, k.fam), addrBytes(&rk.src, k.fam))
	f.dL4 = fold(uint64(f.dAddr) + uint64(delta16(k.dport, rk.sport)) + uint64(delta16(k.sport, rk.dport)))
}

// natForward rewrites a client packet C:cp → A:ap into C:cpOut → T:tp.
func natForward(buf []byte, p *parsed, f *flow) {
	rk := &f.rkey
	copy(buf[p.dstOff():], addrBytes(&rk.src, rk.fam))
	binary.BigEndian.PutUint16(buf[p.l4:], rk.dport)
	binary.BigEndian.PutUint16(buf[p.l4+2:], rk.sport)
	fixChecksums(buf, p, f.dAddr, f.dL4)
}

// natReverse rewrites a target's reply T:tp → C:cpOut into A:ap → C:cp.
func natReverse(buf []byte, p *parsed, f *flow) {
	k := &f.key
	copy(buf[p.srcOff():], addrBytes(&k.dst, k.fam))
	binary.BigEndian.PutUint16(buf[p.l4:], k.dport)
	binary.BigEndian.PutUint16(buf[p.l4+2:], k.sport)
	fixChecksums(buf, p, ^f.dAddr, ^f.dL4) // ~d is −d in ones' complement
}

// natRetarget rewrites a client packet that the flow from translated (nil:
// none, the packet is as the client sent it) as the flow to translates it.
func natRetarget(buf []byte, p *parsed, from, to *flow) {
	if from == nil {
		natForward(buf, p, to)
		return
	}
	rk := &to.rkey
	copy(buf[p.dstOff():], addrBytes(&rk.src, rk.fam))
	binary.BigEndian.PutUint16(buf[p.l4:], rk.dport)
	binary.BigEndian.PutUint16(buf[p.l4+2:], rk.sport)
	// Undo from's deltas, apply to's.
	fixChecksums(buf, p, fold(uint64(^from.dAddr)+uint64(to.dAddr)), fold(uint64(^from.dL4)+uint64(to.dL4)))
}

func fixChecksums(buf []byte, p *parsed, dAddr, dL4 uint16) {
	v4 := p.fam == 4
	if v4 {
		adjustAt(buf, p.off+ipv4Checksum, dAddr)
	}
	adjustL4(buf, p.l4ChecksumOff(), p.proto == ProtoUDP, v4, dL4)
}
