package router

import (
	"encoding/binary"
	"math"
)

// Replication (Policy.Replicate, UDP groups): each datagram of a client
// reaches N distinct targets. The IAP goes through the group's JAPs best
// first and gives each a quota, min(its targets, what is left), until N
// is covered; it sends each JAP one encapsulated copy that carries the quota
// in the outer header (see replicaMark), and NATs its own share to its local
// targets. A JAP delivers a copy to min(quota, its targets other than the
// sender) targets, the best by rendezvous hash of the client's address,
// each through a NAT flow of its own, so that each target's replies go back
// to the client. The flows share the client's key in the forward table
// (flowMap.getAll finds them all); there is no IAP flow.
//
// Route forwards one packet; the others are Result.Copies, which the caller
// has Copy write. Nothing of this costs a packet of a group that does not
// replicate more than the check of the outer header's identification.

// replicas is the plan of a replicated datagram beyond its main packet,
// buf[start:end] as Route left it.
type replicas struct {
	buf        []byte
	start, end int
	// base is the NAT flow the main packet went through; nil when the main
	// packet is encapsulated to a JAP (the client's datagram is then
	// unchanged inside).
	base *flow
	n    int
	c    [MaxReplicate]replica
}

// replica is one copy: NATed to the target of f, or, when f is nil,
// encapsulated to the JAP jap with its quota.
type replica struct {
	f     *flow
	jap   uint32
	quota uint16
}

func (rp *replicas) add(c replica) {
	if rp.n < len(rp.c) {
		rp.c[rp.n] = c
		rp.n++
	}
}

// The outer IPv4 header's identification field of an IAP→JAP packet (the
// packets are never fragmented, so it is free): 0 normally; replicaMark |
// quota for a copy of a replicated datagram that the JAP delivers to quota
// targets. The mark keeps stray identification values from counting.
const replicaMark = 0x5200 // 'R' in the high byte

// replicaQuota reads the quota of the outer IPv4 header h (at least 20
// bytes): 0 when it is not a replicated datagram's copy, else within
// [1, MaxReplicate].
func replicaQuota(h []byte) int {
	id := binary.BigEndian.Uint16(h[ipv4ID:])
	if id&0xff00 != replicaMark {
		return 0
	}
	return min(int(id&0xff), MaxReplicate)
}

// setQuota marks the encapsulated packet whose outer header is h as a copy
// for quota targets, and fixes the header checksum.
func setQuota(h []byte, quota int) {
	id := uint16(replicaMark | quota)
	old := binary.BigEndian.Uint16(h[ipv4ID:])
	binary.BigEndian.PutUint16(h[ipv4ID:], id)
	adjustAt(h, ipv4Checksum, delta16(old, id))
}

// ingressReplicas is the IAP step for a datagram of a replicated group
// (see above). self and loc are this proxy as a JAP candidate and its local
// targets; e is the group's JAP list (nil when the local targets are enough).
func (r *Router) ingressReplicas(res *Result, buf []byte, p *parsed, h uint64, g Group, pol Policy, e *cacheEntry, self *japInfo, loc *localSet, proxies *proxySet, now int64) *Result {
	var cbuf [maxCandidates]candidate
	left := pol.Replicate
	var remote [MaxReplicate]replica
	nr, selfQuota := 0, 0
	for _, c := range r.rankCandidates(pol, e, self, &p.src, h, proxies, cbuf[:0]) {
		if left == 0 {
			break
		}
		q := int(min(c.j.targets, uint32(left)))
		if c.j.addr == r.self4 {
			selfQuota = q
		} else {
			remote[nr] = replica{jap: c.j.addr, quota: uint16(q)}
			nr++
		}
		left -= q
	}
	var fbuf [MaxReplicate]*flow
	local := fbuf[:0]
	if selfQuota > 0 {
		local = r.replicaFlows(loc, &p.flowKey, h, r.self4, selfQuota, now, local)
	}
	if nr == 0 {
		if len(local) == 0 {
			if selfQuota > 0 {
				return r.drop(res, DropNoPort)
			}
			r.drop(res, DropNoTarget).Group = g
			return res
		}
		return r.deliverReplicas(res, buf, p, local)
	}
	// The main packet goes to the first JAP; the others get copies of it,
	// and the local targets copies of the datagram inside.
	if r.encapsulate(res, buf, p.off, p.end, p.fam, remote[0].jap, uint32(h), RoleIngress); res.Action != Forward {
		return res
	}
	if remote[0].quota >= 2 {
		setQuota(buf[res.Start:], int(remote[0].quota))
	}
	if nr+len(local) > 1 {
		rp := &replicas{buf: buf, start: res.Start, end: res.End}
		for _, c := range remote[1:nr] {
			rp.add(c)
		}
		for _, f := range local {
			rp.add(replica{f: f})
		}
		res.rep, res.Copies = rp, rp.n
	}
	return res
}

// joinReplicas is the JAP step for a copy of a replicated datagram that
// carries quota ≥ 2; iap is the proxy the packet came from.
func (r *Router) joinReplicas(res *Result, buf []byte, p *parsed, h uint64, iap uint32, quota int, now int64) *Result {
	g := Group{Addr: addrOf(p.dst, p.fam), Port: p.dport, Proto: p.proto}
	loc := r.localTargets(g, &p.src)
	if !loc.ok {
		return r.noTarget(res, g, iap)
	}
	var fbuf [MaxReplicate]*flow
	flows := r.replicaFlows(&loc, &p.flowKey, h, iap, quota, now, fbuf[:0])
	if len(flows) == 0 {
		return r.drop(res, DropNoPort)
	}
	return r.deliverReplicas(res, buf, p, flows)
}

// deliverReplicas NATs the client's datagram p to the target of flows[0]
// in place and plans copies to the others.
func (r *Router) deliverReplicas(res *Result, buf []byte, p *parsed, flows []*flow) *Result {
	natForward(buf, p, flows[0])
	r.st.forward(uint32(flows[0].h), RoleJoin, p.end-p.off)
	res.Action, res.Start, res.End = Forward, p.off, p.end
	if len(flows) > 1 {
		rp := &replicas{buf: buf, start: p.off, end: p.end, base: flows[0]}
		for _, f := range flows[1:] {
			rp.add(replica{f: f})
		}
		res.rep, res.Copies = rp, rp.n
	}
	return res
}

// replicaFlows appends to out (capacity MaxReplicate) the NAT flows of the
// client key k to min(quota, loc.n) distinct local targets: the key's
// flows that exist, then new ones to the best targets by the client's
// weighted rendezvous hash. It refreshes them, as a packet of each.
func (r *Router) replicaFlows(loc *localSet, k *flowKey, h uint64, iap uint32, quota int, now int64, out []*flow) []*flow {
	want := min(quota, loc.n, cap(out))
	if out = r.jap.getAll(k, h, out); len(out) > want {
		out = out[:want]
	}
	if len(out) < want {
		// Rank the targets once; take the best that no flow covers yet.
		var sbuf [64]float64
		scores := sbuf[:0]
		if len(loc.list) > len(sbuf) {
			scores = make([]float64, 0, len(loc.list))
		}
		key := addrHash(&k.src)
		for i := range loc.list {
			t := &loc.list[i]
			s := math.Inf(-1) // the sender: never
			if t.addr != k.src {
				s = rank(mixScore(key, t.key), t.weight)
			}
			scores = append(scores, s)
		}
		for len(out) < want {
			best := -1
			for i, s := range scores {
				if !math.IsInf(s, -1) && (best < 0 || s > scores[best]) {
					best = i
				}
			}
			if best < 0 {
				break
			}
			scores[best] = math.Inf(-1)
			t := &loc.list[best]
			covered := false
			for _, f := range out {
				covered = covered || f.to(t)
			}
			if covered {
				continue
			}
			if f, why := r.replicaFlow(k, h, t, iap, now); why == DropNone {
				out = append(out, f)
			}
		}
	}
	for _, f := range out {
		f.touch(now)
		if f.peer.Load() != iap {
			f.peer.Store(iap) // the client moved to another IAP: follow it
		}
	}
	return out
}

// Copy writes the extra packet i (0 ≤ i < res.Copies) of the Forward
// result res into dst, which must hold res.End−res.Start bytes, and returns
// where it is: dst[start:end], ready for WireGuard like the main packet
// (NATed to a local target, or encapsulated to another JAP). ok is false
// when i is out of range or dst is too short. It reads the main packet
// buf[res.Start:res.End], so call it before buf changes.
func (r *Router) Copy(res *Result, i int, dst []byte) (start, end int, ok bool) {
	rp := res.rep
	if rp == nil || i < 0 || i >= rp.n || i >= res.Copies {
		return 0, 0, false
	}
	c := &rp.c[i]
	src := rp.buf[rp.start:rp.end]
	if c.f == nil {
		// Another JAP: the main packet is encapsulated; change the outer
		// destination and quota.
		if len(dst) < len(src) {
			return 0, 0, false
		}
		n := copy(dst, src)
		binary.BigEndian.PutUint32(dst[ipv4Dst:], c.jap)
		binary.BigEndian.PutUint16(dst[ipv4ID:], 0)
		if c.quota >= 2 {
			binary.BigEndian.PutUint16(dst[ipv4ID:], replicaMark|c.quota)
		}
		binary.BigEndian.PutUint16(dst[ipv4Checksum:], 0)
		binary.BigEndian.PutUint16(dst[ipv4Checksum:], checksum(0, dst[:EncapOverhead]))
		r.st.forward(c.jap, RoleIngress, n)
		return 0, n, true
	}
	if rp.base == nil {
		src = src[EncapOverhead:] // the client's datagram inside
	}
	if len(dst) < len(src) {
		return 0, 0, false
	}
	n := copy(dst, src)
	var p parsed
	if p.parse(dst, 0, n) != DropNone {
		return 0, 0, false // cannot happen: Route parsed it
	}
	natRetarget(dst, &p, rp.base, c.f)
	r.st.forward(uint32(c.f.h), RoleJoin, n)
	return 0, n, true
}
