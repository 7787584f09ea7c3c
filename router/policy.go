package router

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
)

// Target selection policies. A group's policy says how a new flow picks
// its JAP (at the IAP) and its target (at the JAP); established flows keep
// theirs. The IAP learns the policy with the group's JAP list
// (ResolvedPolicy), a JAP from SetPolicy.

// Select is how a new flow of a group picks its JAP and its target.
type Select uint8

const (
	// SelectProximity: the nearest JAP that is live (the caller lists them
	// nearest first; this proxy's own targets are nearer still), then the
	// JAP's target by weighted rendezvous hash of the client's address: as
	// with native anycast, a client keeps its target while the JAP and its
	// targets stay, and a target that leaves moves only its own clients.
	SelectProximity Select = iota
	// SelectLoad: a JAP with probability proportional to its weight, then
	// the target with the fewest live flows per unit of weight.
	SelectLoad
	// SelectRandom: a JAP with probability proportional to its targets,
	// then one of its targets uniformly: uniform over all targets.
	SelectRandom
	// SelectAffinity: JAP and target by rendezvous hash of the client's
	// address, so a client reaches the same target from any port and any
	// IAP, and a target that comes or goes moves only its share of clients.
	SelectAffinity
	numSelect
)

var selectNames = [numSelect]string{"proximity", "load", "random", "affinity"}

func (s Select) String() string {
	if s < numSelect {
		return selectNames[s]
	}
	return fmt.Sprintf("select(%d)", uint8(s))
}

// ParseSelect parses a Select by its String name.
func ParseSelect(s string) (Select, error) {
	if i := slices.Index(selectNames[:], s); i >= 0 {
		return Select(i), nil
	}
	return 0, fmt.Errorf("selection %q is not one of %s", s, strings.Join(selectNames[:], ", "))
}

// Scope limits the JAPs a new flow may go to.
type Scope uint8

const (
	// ScopeAny: any JAP of the group.
	ScopeAny Scope = iota
	// ScopeSameCluster: only JAPs in the IAP's cluster (JAP.SameCluster),
	// or the IAP itself; with none, the packet is dropped (DropNoTarget).
	ScopeSameCluster
	numScope
)

var scopeNames = [numScope]string{"any", "same-cluster"}

func (s Scope) String() string {
	if s < numScope {
		return scopeNames[s]
	}
	return fmt.Sprintf("scope(%d)", uint8(s))
}

// ParseScope parses a Scope by its String name.
func ParseScope(s string) (Scope, error) {
	if i := slices.Index(scopeNames[:], s); i >= 0 {
		return Scope(i), nil
	}
	return 0, fmt.Errorf("scope %q is not one of %s", s, strings.Join(scopeNames[:], ", "))
}

// MaxReplicate is the largest Policy.Replicate; more counts as this many.
const MaxReplicate = 16

// Policy is a group's target selection policy. The zero Policy is
// proximity, no replication, any scope.
type Policy struct {
	Select Select
	// Replicate, for UDP groups only: each datagram reaches this many
	// distinct targets (fewer if fewer exist), across JAPs; 0 or 1 means no
	// replication. See Result.Copies.
	Replicate int
	Scope     Scope
}

// String is p in the words of a target's [[group]] keys, which status and
// logs print: replicate is at least 1, its documented default (0 and 1 both
// mean one copy).
func (p Policy) String() string {
	return fmt.Sprintf("select=%v replicate=%d scope=%v", p.Select, max(p.Replicate, 1), p.Scope)
}

// normal returns p with Replicate within [0, MaxReplicate], and unknown
// Select and Scope values as the defaults.
func (p Policy) normal() Policy {
	p.Replicate = min(max(p.Replicate, 0), MaxReplicate)
	if p.Select >= numSelect {
		p.Select = SelectProximity
	}
	if p.Scope >= numScope {
		p.Scope = ScopeAny
	}
	return p
}

// replicates reports whether datagrams of g are replicated under p.
func (p Policy) replicates(g Group) bool { return p.Replicate >= 2 && g.Proto == ProtoUDP }

// needsJAPs reports whether a new flow of g at a proxy with n local
// targets (other than the sender) needs the group's JAP list: only nearest
// first lets the proxy's own targets win outright.
func (p Policy) needsJAPs(g Group, n int) bool {
	return p.Select != SelectProximity || p.replicates(g) && n < p.Replicate
}

// SetPolicy sets the policy of g for the new flows this proxy serves as
// its JAP, and as its IAP while it holds local targets of g (otherwise the
// IAP uses the policy given to ResolvedPolicy). The zero Policy is the
// default.
func (r *Router) SetPolicy(g Group, p Policy) {
	g.Addr = g.Addr.Unmap()
	p = p.normal()
	r.gmu.Lock()
	if p == (Policy{}) {
		delete(r.policies, g)
	} else {
		r.policies[g] = p
	}
	r.gmu.Unlock()
}

// Policy returns the policy SetPolicy set for g.
func (r *Router) Policy(g Group) Policy {
	g.Addr = g.Addr.Unmap()
	r.gmu.RLock()
	defer r.gmu.RUnlock()
	return r.policies[g]
}

// Rendezvous hashing. Each candidate gets a score from a hash of (key,
// candidate), and the highest score wins: the choice depends only on the key
// and the set of candidates, and a candidate that comes or goes moves only
// its own share of keys.

// mixScore is the rendezvous hash of key and a candidate.
func mixScore(key, cand uint64) uint64 { return mix64(key ^ cand*0x9e3779b97f4a7c15) }

// addrHash is a fixed hash of a key-form address.
func addrHash(a *[16]byte) uint64 {
	var k flowKey
	k.src = *a
	return mix64(k.hash())
}

// rank is the weighted rendezvous score w/−ln(u) of the uniform hash h (u
// in (0,1)): −ln(u)/w is exponential with rate w, so the highest rank goes
// to each candidate with probability w/Σw (and, with random u, ranking by it
// samples without replacement in proportion to w).
func rank(h uint64, w uint32) float64 {
	u := (float64(h>>11) + 0.5) * (1.0 / (1 << 53))
	return float64(w) / -math.Log(u)
}

// rand64 is the router's random source: math/rand/v2's, or a test's.
func (r *Router) rand64() uint64 {
	if r.rnd != nil {
		return r.rnd()
	}
	return rand.Uint64()
}

// randN is uniform in [0, n) (the bias of a 64-bit multiply is negligible).
func (r *Router) randN(n uint64) uint64 {
	hi, _ := bits.Mul64(r.rand64(), n)
	return hi
}

// japInfo is a JAP of a cached group, as the IAP chooses among them.
type japInfo struct {
	addr    uint32
	targets uint32 // > 0
	weight  uint32 // JAP.Weight, or JAP.Targets when that is 0
	same    bool   // in this IAP's cluster
}

// selectKey is what a policy's rendezvous hash is keyed on: the flow (load,
// so that the flow's packets agree), or the client (affinity).
func selectKey(sel Select, client *[16]byte, h uint64) uint64 {
	if sel == SelectAffinity {
		return addrHash(client)
	}
	return h
}

// japScore scores a JAP for a new flow under sel; the highest score wins
// (under proximity all score 0, and the first in preference order wins).
func (r *Router) japScore(sel Select, j *japInfo, key uint64) float64 {
	switch sel {
	case SelectLoad:
		return rank(mixScore(key, uint64(j.addr)), j.weight)
	case SelectRandom:
		return rank(r.rand64(), j.targets)
	case SelectAffinity:
		// Unweighted, so that every IAP agrees even while their target
		// counts differ: only the set of JAPs matters.
		return float64(mixScore(key, uint64(j.addr)) >> 11)
	}
	return 0
}

// eligible reports whether a new flow may go to the cached JAP j: another
// proxy that is live and within the scope.
func (r *Router) eligible(j *japInfo, sc Scope, proxies *proxySet) bool {
	return j.addr != r.self4 && proxies.has4(j.addr) && (sc == ScopeAny || j.same)
}

// chooseJAP picks the JAP of a new flow by pol among self (this proxy, a
// candidate when self.targets > 0: its local targets other than the sender)
// and the JAPs of e (which may be nil). It returns 0 when there is none.
func (r *Router) chooseJAP(pol Policy, e *cacheEntry, self *japInfo, client *[16]byte, h uint64, proxies *proxySet) uint32 {
	key := selectKey(pol.Select, client, h)
	best, bestScore := uint32(0), 0.0
	if self.targets > 0 {
		if pol.Select == SelectProximity {
			return self.addr // distance 0
		}
		best, bestScore = self.addr, r.japScore(pol.Select, self, key)
	}
	if e == nil {
		return best
	}
	for i := range e.pref {
		j := &e.pref[i]
		if !r.eligible(j, pol.Scope, proxies) {
			continue
		}
		if pol.Select == SelectProximity {
			return j.addr
		}
		if s := r.japScore(pol.Select, j, key); best == 0 || s > bestScore {
			best, bestScore = j.addr, s
		}
	}
	return best
}

// maxCandidates bounds the JAPs a replicated datagram's plan looks at (in
// preference order): a ResolveReply carries at most 64, and this proxy.
const maxCandidates = 72

type candidate struct {
	j     japInfo // a copy: a pointer would move the caller's self to the heap
	score float64
}

// rankCandidates appends the candidates of chooseJAP to out, best first.
func (r *Router) rankCandidates(pol Policy, e *cacheEntry, self *japInfo, client *[16]byte, h uint64, proxies *proxySet, out []candidate) []candidate {
	key := selectKey(pol.Select, client, h)
	if self.targets > 0 {
		out = append(out, candidate{*self, r.japScore(pol.Select, self, key)})
	}
	if e != nil {
		for i := range e.pref {
			if j := &e.pref[i]; len(out) < cap(out) && r.eligible(j, pol.Scope, proxies) {
				out = append(out, candidate{*j, r.japScore(pol.Select, j, key)})
			}
		}
	}
	if pol.Select != SelectProximity {
		slices.SortStableFunc(out, func(a, b candidate) int { return cmp.Compare(b.score, a.score) })
	}
	return out
}

// pickTarget chooses a target of the local set for a new flow from sender
// (the client) by sel; nil when only the sender is there.
func (r *Router) pickTarget(l *localSet, sel Select, sender *[16]byte) *target {
	list := l.list
	if l.n <= 1 { // every policy agrees: no hash, no logarithm
		for k := range list {
			if list[k].addr != *sender {
				return &list[k]
			}
		}
		return nil
	}
	switch sel {
	case SelectLoad:
		// The fewest live flows per unit of weight, counting the new one:
		// (flows+1)/weight, compared crosswise. Ties go round the list, so
		// that a burst of new flows does not all land on the first.
		n := len(list)
		if n == 0 {
			return nil
		}
		start := int(l.ts.rr.Add(1) % uint32(n))
		var best *target
		var bestFlows int64
		for i := range n {
			t := &list[(start+i)%n]
			if t.addr == *sender {
				continue
			}
			f := t.flows.n.Load() + 1
			if best == nil || f*int64(best.weight) < bestFlows*int64(t.weight) {
				best, bestFlows = t, f
			}
		}
		return best
	case SelectRandom:
		if l.n == 0 {
			return nil
		}
		i := int(r.randN(uint64(l.n)))
		for k := range list {
			if list[k].addr == *sender {
				continue
			}
			if i == 0 {
				return &list[k]
			}
			i--
		}
		return nil
	}
	// Proximity and affinity.
	return clientTarget(list, sender)
}

// clientTarget chooses the target of list, not the sender, that ranks
// highest by weighted rendezvous hash of the sender's address: each with
// probability weight/Σweight over clients, the same one for a client while
// list stays the same, and a target that leaves moves only the clients it
// had. nil when only the sender is there. replicaFlows ranks alike, so a
// client's first copy goes where its unreplicated flow would.
func clientTarget(list []target, sender *[16]byte) *target {
	key := addrHash(sender)
	var best *target
	bestScore := 0.0
	for k := range list {
		t := &list[k]
		if t.addr == *sender {
			continue
		}
		if s := rank(mixScore(key, t.key), t.weight); best == nil || s > bestScore {
			best, bestScore = t, s
		}
	}
	return best
}
