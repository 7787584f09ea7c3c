// Package router is pias's packet logic: parse, classify, flow tables, NAT,
// IAP→JAP encapsulation and target selection. It is pure: no sockets and no
// goroutines of its own. Callers pass the time in; methods are safe for
// concurrent use (wireguard-go delivers from one goroutine per peer).
package router

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Headroom is the space Route needs before a packet to prepend the IAP→JAP
// outer IPv4 header.
const Headroom = EncapOverhead

// EncapOverhead is the size of the outer IPv4 header of an encapsulated packet.
const EncapOverhead = 20

// Action says what the caller does with a packet after Route.
type Action uint8

const (
	// Drop: the packet is gone; Result.Reason says why (and is counted).
	Drop Action = iota
	// Forward: send buf[Start:End] into WireGuard, which routes it by its
	// destination address. Route may have rewritten, encapsulated,
	// decapsulated or answered it in place.
	Forward
	// Control: a UDP control message for this node's overlay. The UDP payload
	// is buf[Start:End]; Src and Dst are the datagram's addresses (Dst is this
	// proxy's overlay address, or an anycast address when an edge sent it).
	Control
	// Queued: the packet waits in the router for the group in Result.Group to
	// be resolved. When Result.Resolve is true the caller must ask a RAP and
	// later call ResolvedPolicy; otherwise a request is already outstanding.
	Queued
)

// Result is the verdict of Route.
type Result struct {
	Action     Action
	Start, End int
	Reason     DropReason
	// Group: Queued, and drops for want of a group or target. For a
	// DropNoTarget at a JAP, Src is the IAP that sent the packet (when it
	// is another proxy): it holds a JAP list that no longer fits.
	Group    Group
	Resolve  bool
	Src, Dst netip.AddrPort
	// Copies is how many more packets a Forward carries besides
	// buf[Start:End]: a datagram of a group with Policy.Replicate ≥ 2 goes
	// to several targets (through other JAPs, or NATed to local targets).
	// It is 0 for every other packet. For each i in [0, Copies) the caller
	// calls Copy(&res, i, dst) and forwards the copy into WireGuard exactly
	// as the main packet, and it does so before it reuses or changes buf
	// (the copies are made from buf[Start:End]).
	Copies int
	rep    *replicas // what the copies are
}

// JAP is a join proxy of a group as a RAP reports it.
type JAP struct {
	Addr    netip.Addr // the proxy's IPv4 overlay address
	Targets int        // roughly how many targets joined through it
	// Weight is the sum of the weights of those targets;
	// 0 means Targets. SelectLoad picks JAPs in proportion to it.
	Weight int `json:",omitempty"`
	// SameCluster: the JAP is in this IAP's cluster (set by the caller for
	// ScopeSameCluster; not part of what RAPs report).
	SameCluster bool `json:",omitempty"`
}

// Timeouts are the idle timeouts of flows by protocol and TCP state.
type Timeouts struct {
	TCPSyn         time.Duration // a TCP flow not yet established
	TCPEstablished time.Duration
	TCPClosing     time.Duration // after FIN from both sides, or RST
	UDP            time.Duration
	ICMP           time.Duration
}

// DefaultTimeouts are sane idle timeouts for an overlay of hobbyist networks.
var DefaultTimeouts = Timeouts{
	TCPSyn:         30 * time.Second,
	TCPEstablished: 2 * time.Hour,
	TCPClosing:     10 * time.Second,
	UDP:            60 * time.Second,
	ICMP:           30 * time.Second,
}

// Config is what a proxy's router needs to know about itself.
type Config struct {
	// Self lists this proxy's overlay addresses; the IPv4 one is the outer
	// source of encapsulated packets.
	Self []netip.Addr
	// Anycast lists the anycast prefixes owned by the service.
	Anycast []netip.Prefix
	// ControlPort is the UDP port of control messages, on overlay and anycast
	// addresses alike.
	ControlPort uint16
	// MTU is the MTU of the WireGuard tunnels (default DefaultMTU, at least
	// 576); TCP MSS is clamped so that an encapsulated segment still fits.
	MTU int
	// MaxFlows caps each flow table (default DefaultMaxFlows). One source
	// address (a client) holds at most a quarter of a table and beyond it
	// evicts its own stalest flows; a full table evicts from the source
	// with the most flows.
	MaxFlows int
	// QueueLimit caps the packets held per group while it is resolved
	// (default DefaultQueueLimit).
	QueueLimit int
	// MaxResolves caps the groups being resolved at once (default
	// DefaultMaxResolves), and MaxQueuedBytes the bytes their packets hold
	// (default DefaultMaxQueuedBytes). MaxResolvesPerSource (default
	// DefaultMaxResolvesPerSource) caps, per client address, the groups
	// being resolved whose first packet it sent plus those of them that
	// turned out not to exist, until their negative entries expire: so a
	// client resolves at most that many unknown groups per NegativeTTL.
	// Past a cap a packet is dropped, and a new group is not resolved: one
	// client flooding fresh groups takes no more than its share, and
	// others' groups still resolve.
	MaxResolves          int
	MaxResolvesPerSource int
	MaxQueuedBytes       int
	// Timeouts are the flows' idle timeouts; zero fields take DefaultTimeouts.
	Timeouts Timeouts
	// NegativeTTL is how long a group that has no JAP is remembered as such
	// (default DefaultNegativeTTL).
	NegativeTTL time.Duration
	// Rand, if set, is the router's random source (select = "random": the
	// JAP and the target of a new flow); nil is math/rand/v2's. Every
	// goroutine that routes packets calls it, so it must be safe for
	// concurrent use. A simulator passes a seeded one, so that a run can
	// be repeated.
	Rand func() uint64
}

// Router is a proxy's data path. The zero value is not usable; call New.
type Router struct {
	self4      uint32     // the IPv4 overlay address: encapsulation source
	selfV4     []uint32   // all IPv4 overlay addresses of this proxy
	selfV6     [][16]byte // its IPv6 overlay addresses
	any4       []prefix4
	any6       []prefix6
	ctrlPort   uint16
	mss4       uint16 // MSS clamps for IPv4 and IPv6 flows
	mss6       uint16
	encSum4    uint64 // constant part of the outer header's checksum, per inner family
	encSum6    uint64
	to         timeouts
	negTTL     time.Duration
	queueLimit int
	maxRes     int // Config.MaxResolves
	maxResSrc  int // Config.MaxResolvesPerSource
	maxQBytes  int // Config.MaxQueuedBytes

	proxies atomic.Pointer[proxySet]
	iap     *table // IAP flows: client → JAP
	jap     *table // JAP flows: the NAT

	gmu      sync.RWMutex // guards the group state below
	targets  map[Group]*targetSet
	policies map[Group]Policy   // the groups' policies, when not the zero one
	byAddr   map[netip.Addr]int // local targets per anycast IP, for echo
	cache    map[Group]*cacheEntry
	queues   map[Group]*pending
	bySrc    map[netip.Addr]int // groups in queues by the client that started them
	qbytes   int                // bytes held in queues

	rnd func() uint64 // Config.Rand: the random source, instead of math/rand/v2's

	st counters
}

func (r *Router) isAnycast(a *[16]byte, fam uint8) bool {
	if fam == 4 {
		return r.isAnycast4(v4(a))
	}
	return r.isAnycast6(a)
}

func (r *Router) isAnycast4(x uint32) bool {
	for _, p := range r.any4 {
		if x&p.mask == p.net {
			return true
		}
	}
	return false
}

func (r *Router) isAnycast6(a *[16]byte) bool {
	hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	for _, p := range r.any6 {
		if hi&p.mhi == p.hi && lo&p.mlo == p.lo {
			return true
		}
	}
	return false
}

func (r *Router) isSelf4(x uint32) bool {
	for _, s := range r.selfV4 {
		if x == s {
			return true
		}
	}
	return false
}

func (r *Router) isSelf6(a *[16]byte) bool {
	for i := range r.selfV6 {
		if *a == r.selfV6[i] {
			return true
		}
	}
	return false
}

// The packet's destination: this proxy, or an anycast address?
func (r *Router) toSelf(p *parsed) bool {
	if p.fam == 4 {
		return r.isSelf4(p.dst4)
	}
	return r.isSelf6(&p.dst)
}

func (r *Router) srcAnycast(p *parsed) bool {
	if p.fam == 4 {
		return r.isAnycast4(p.src4)
	}
	return r.isAnycast6(&p.src)
}

func (r *Router) dstAnycast(p *parsed) bool {
	if p.fam == 4 {
		return r.isAnycast4(p.dst4)
	}
	return r.isAnycast6(&p.dst)
}

// Route decides what happens to the IP packet buf[start:end], which any
// peer's WireGuard decrypted, editing it in place; buf must have Headroom
// bytes free before start. See Action for what the caller does with the
// result. By destination:
//   - this proxy: an encapsulated packet from another proxy (decapsulated,
//     then the JAP or the IAP's reply step), a control message, or a ping;
//   - an anycast address: a control message, a ping, or a client's packet
//     (the IAP step);
//   - anything else: a local target's reply (the JAP's reply step).
//
// Route does not allocate except for a packet it queues or a flow it
// creates.
func (r *Router) Route(buf []byte, start, end int, now int64) Result {
	// The stages fill in one Result by pointer: returned by value through
	// each of them, its ~130 bytes cost more than the NAT.
	var res Result
	r.route(&res, buf, start, end, now)
	return res
}

func (r *Router) route(res *Result, buf []byte, start, end int, now int64) *Result {
	var p parsed
	if reason := p.parse(buf, start, end); reason != DropNone {
		return r.drop(res, reason)
	}
	switch {
	case r.toSelf(&p):
		switch p.proto {
		case ProtoIPIP, ProtoIPv6:
			return r.decapsulate(res, buf, &p, now)
		case ProtoUDP:
			if p.dport == r.ctrlPort {
				return r.control(res, buf, &p)
			}
		case ProtoICMP, ProtoICMPv6:
			return r.echoSelf(res, buf, &p)
		}
		return r.drop(res, DropNotForUs)
	case r.dstAnycast(&p):
		switch p.proto {
		case ProtoUDP:
			if p.dport == r.ctrlPort {
				return r.control(res, buf, &p)
			}
			return r.ingress(res, buf, &p, now, nil)
		case ProtoTCP:
			return r.ingress(res, buf, &p, now, nil)
		case ProtoICMP, ProtoICMPv6:
			return r.echoAnycast(res, buf, &p, now, nil)
		}
		return r.drop(res, DropUnsupported)
	}
	switch p.proto {
	case ProtoTCP, ProtoUDP:
		return r.reply(res, buf, &p, now)
	case ProtoICMP, ProtoICMPv6:
		return r.drop(res, DropICMPUnsupported)
	}
	return r.drop(res, DropNotForUs)
}

// control hands a control message to the overlay.
func (r *Router) control(res *Result, buf []byte, p *parsed) *Result {
	r.st.control.Add(1)
	ulen := int(binary.BigEndian.Uint16(buf[p.l4+4:]))
	*res = Result{
		Action: Control,
		Start:  p.l4 + udpLen,
		End:    p.l4 + ulen,
		Src:    netipAddrPort(p.src, p.fam, p.sport),
		Dst:    netipAddrPort(p.dst, p.fam, p.dport),
	}
	return res
}

// decapsulate handles a packet another proxy encapsulated to this one: a
// client's packet for a group joined here (JAP), or a reply for a client
// that came in here (IAP).
func (r *Router) decapsulate(res *Result, buf []byte, p *parsed, now int64) *Result {
	outer := p.src4
	if !r.proxies.Load().has4(outer) {
		return r.drop(res, DropNotFromProxy)
	}
	var in parsed
	if reason := in.parse(buf, p.l4, p.end); reason != DropNone {
		return r.drop(res, reason)
	}
	if (p.proto == ProtoIPIP) != (in.fam == 4) {
		return r.drop(res, DropMalformed)
	}
	var toClient bool
	switch {
	case r.srcAnycast(&in):
		toClient = true
	case r.dstAnycast(&in):
	default:
		return r.drop(res, DropNotForUs)
	}
	switch in.proto {
	case ProtoTCP, ProtoUDP:
	case ProtoICMP, ProtoICMPv6:
		return r.drop(res, DropICMPUnsupported)
	default:
		return r.drop(res, DropUnsupported)
	}
	if toClient {
		return r.egress(res, buf, &in, now)
	}
	if in.proto == ProtoUDP {
		if quota := replicaQuota(buf[p.off:]); quota >= 2 {
			return r.joinReplicas(res, buf, &in, in.hash(), outer, quota, now)
		}
	}
	return r.join(res, buf, &in, &in.flowKey, in.hash(), outer, now)
}

// ingress is the IAP step: a client's packet to a group goes to the JAP its
// flow sticks to, picked when the flow is new. override, when not nil, is
// the group's cache entry (ResolvedPolicy routes with it).
func (r *Router) ingress(res *Result, buf []byte, p *parsed, now int64, override *cacheEntry) *Result {
	k := &p.flowKey
	h := k.hash()
	f := r.iap.get(k, h)
	if f == nil {
		if f = r.newIngress(res, buf, p, k, h, now, override); f == nil {
			return res
		}
	}
	f.touch(now)
	if p.proto == ProtoTCP {
		f.tcp(p.tcpFlags, false)
		if p.tcpFlags&(tcpSYN|tcpACK) == tcpSYN {
			clampMSS(buf, p, r.clampFor(p.fam))
		}
	}
	jap := f.peer.Load()
	if jap == r.self4 { // this proxy is the JAP too
		return r.join(res, buf, p, k, h, r.self4, now)
	}
	return r.encapsulate(res, buf, p.off, p.end, p.fam, jap, uint32(h), RoleIngress)
}

// newIngress picks the JAP of a new IAP flow and creates the flow. It
// returns nil, with the result (a drop, or Queued) in res, when there is no
// JAP yet.
func (r *Router) newIngress(res *Result, buf []byte, p *parsed, k *flowKey, h uint64, now int64, override *cacheEntry) *flow {
	proxies := r.proxies.Load()
	if proxies.has(&p.src, p.fam) {
		// Proxies talk to groups only encapsulated; this is not a client.
		r.drop(res, DropNotForUs)
		return nil
	}
	g := Group{Addr: addrOf(p.dst, p.fam), Port: p.dport, Proto: p.proto}
	// Local targets that are not the sender make this proxy a JAP
	// candidate, at distance 0; then the policy is the one this proxy holds
	// for g as its JAP, else the one the RAP gave with the JAP list.
	loc := r.localTargets(g, &p.src)
	pol := loc.pol
	var e *cacheEntry
	if !loc.ok || pol.needsJAPs(g, loc.n) {
		if e = override; e == nil {
			e = r.lookup(g, now)
		}
		if e == nil {
			if e = r.enqueue(res, g, buf, p, now); e == nil {
				return nil
			}
		}
		if !loc.ok {
			if !e.known {
				r.drop(res, DropNoGroup).Group = g
				return nil
			}
			pol = e.pol
		}
	}
	var self japInfo
	if loc.ok {
		self = japInfo{addr: r.self4, targets: uint32(loc.n), weight: loc.weight, same: true}
	}
	if pol.replicates(g) {
		// No IAP flow: each datagram is planned anew (alike, while the
		// JAP list is).
		r.ingressReplicas(res, buf, p, h, g, pol, e, &self, &loc, proxies, now)
		return nil
	}
	jap := r.chooseJAP(pol, e, &self, &p.src, h, proxies)
	if jap == 0 {
		r.drop(res, DropNoTarget).Group = g
		return nil
	}

	t := r.iap
	s := t.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.m.get(k, h); f != nil {
		return f
	}
	f := &flow{key: *k, h: h}
	if jap == r.self4 {
		f.ix = loc.iapFlows
	}
	f.peer.Store(jap)
	f.last.Store(now)
	n, did := t.insertLocked(s, f, &r.to)
	if did == indexClosed {
		// This proxy's targets of g changed meanwhile and the group's IAP
		// flows were dropped: the flow goes on, unindexed; its JAP step
		// picks a target anew.
		f.ix = nil
		n, did = t.insertLocked(s, f, &r.to)
	}
	if did == churnLimit {
		r.drop(res, DropFlowRate)
		return nil
	}
	r.st.evicted.Add(n)
	return f
}

// join is the JAP step: a client's packet for a group joined here goes to
// the flow's local target, NATed. iap is the proxy the packet came from.
func (r *Router) join(res *Result, buf []byte, p *parsed, k *flowKey, h uint64, iap uint32, now int64) *Result {
	f := r.jap.get(k, h)
	if f == nil {
		g := Group{Addr: addrOf(p.dst, p.fam), Port: p.dport, Proto: p.proto}
		loc := r.localTargets(g, &p.src)
		tgt := r.pickTarget(&loc, loc.pol.Select, &p.src)
		if tgt == nil { // none, or only the sender itself
			return r.noTarget(res, g, iap)
		}
		var why DropReason
		switch f, why = r.natFlow(k, h, tgt, iap, now); why {
		case DropNone:
		case DropNoTarget:
			return r.noTarget(res, g, iap)
		default:
			return r.drop(res, why)
		}
	} else if f.peer.Load() != iap {
		f.peer.Store(iap) // the client moved to another IAP: follow it
	}
	f.touch(now)
	if p.proto == ProtoTCP {
		f.tcp(p.tcpFlags, false)
	}
	natForward(buf, p, f)
	r.st.forward(uint32(h), RoleJoin, p.end-p.off)
	res.Action, res.Start, res.End = Forward, p.off, p.end
	return res
}

// noTarget drops a client's packet for g at a JAP that has no target for
// it (none, or only the sender itself).
func (r *Router) noTarget(res *Result, g Group, iap uint32) *Result {
	r.drop(res, DropNoTarget).Group = g
	if iap != r.self4 {
		// Tell the caller which IAP still sends here: it can tell that IAP
		// to look again (see Result).
		res.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(iap >> 24), byte(iap >> 16), byte(iap >> 8), byte(iap)}), 0)
	}
	return res
}

// reply is the JAP's reply step: a local target's packet to a client is
// translated back (A:ap as source) and sent to the flow's IAP.
func (r *Router) reply(res *Result, buf []byte, p *parsed, now int64) *Result {
	f := r.jap.getRev(&p.flowKey)
	if f == nil {
		if r.proxies.Load().has(&p.src, p.fam) {
			return r.drop(res, DropNotForUs)
		}
		return r.drop(res, DropNoFlow)
	}
	f.touch(now)
	if p.proto == ProtoTCP {
		f.tcp(p.tcpFlags, true)
		if p.tcpFlags&(tcpSYN|tcpACK) == tcpSYN|tcpACK {
			clampMSS(buf, p, r.clampFor(p.fam))
		}
	}
	natReverse(buf, p, f)
	iap := f.peer.Load()
	if iap != r.self4 {
		return r.encapsulate(res, buf, p.off, p.end, p.fam, iap, uint32(f.h), RoleReply)
	}
	// This proxy is the flow's IAP too: deliver to the client directly.
	if fi := r.iap.get(&f.key, f.h); fi != nil {
		fi.touch(now)
		if p.proto == ProtoTCP {
			fi.tcp(p.tcpFlags, true)
		}
	}
	r.st.forward(uint32(f.h), RoleReply, p.end-p.off)
	res.Action, res.Start, res.End = Forward, p.off, p.end
	return res
}

// egress is the IAP's reply step: a JAP sent back a reply for a client of
// this proxy; it goes to the client as it is. It goes even when the IAP
// flow is gone (expired here while the JAP's lives on): only proxies can
// send encapsulated packets, and the JAP knows the flow.
func (r *Router) egress(res *Result, buf []byte, in *parsed, now int64) *Result {
	k := flowKey{src: in.dst, dst: in.src, sport: in.dport, dport: in.sport, proto: in.proto, fam: in.fam}
	h := k.hash()
	if f := r.iap.get(&k, h); f != nil {
		f.touch(now)
		if in.proto == ProtoTCP {
			f.tcp(in.tcpFlags, true)
		}
	}
	r.st.forward(uint32(h), RoleReply, in.end-in.off)
	res.Action, res.Start, res.End = Forward, in.off, in.end
	return res
}
