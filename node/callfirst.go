package node

import (
	"bytes"
	"net/netip"
	"sync"
	"time"

	"github.com/pias-net/pias/tunnel"
)

// Two proxies that make each other WireGuard peers at the same moment (they
// start together, or each is the other's seed) both send a handshake
// initiation. Each answers the other's, which replaces its own, and then
// refuses the answer to its own: neither has a session until wireguard-go
// retries 5 s later, nearly in step, so they may cross again. Meanwhile
// their probes go unanswered and each declares the other dead.
//
// So of each pair of proxies, the one with the greater WireGuard key calls
// first. The other adds it without an endpoint and without a keepalive, and
// holds its own control messages to it: wireguard-go starts no handshake to
// it, answers its call, and takes its endpoint from the call. Once it called,
// or after callWait if it did not (it had nothing to send, or was not up
// yet), the peer gets its endpoint and keepalive, and the held messages go.
// They are held here, not in wireguard-go: a handshake wireguard-go began
// would hold back its next one for 5 s.

// callWait is how long a proxy waits for a peer with a greater key to call
// first. Crossed handshakes need both initiations in flight at once, within
// one handshake's time (milliseconds; some 100 ms under the race detector on
// a busy host), so a second is ample, and a peer that never calls costs a
// second once.
const callWait = time.Second

// maxHeld bounds the control messages held for one awaited peer: a second
// of probes and announcements is a few dozen.
const maxHeld = 256

// callsFirst reports whether a device with key self calls a peer with key
// peer first.
func callsFirst(self, peer [32]byte) bool { return bytes.Compare(self[:], peer[:]) > 0 }

// awaitedCalls are the peers added without their endpoint, waiting for
// their call.
type awaitedCalls struct {
	mu      sync.Mutex
	self    [32]byte
	waiting map[[32]byte]*awaitedCall
	byAddr  map[netip.Addr][32]byte
}

type awaitedCall struct {
	peer  tunnel.Peer // as it is once it called: endpoint, keepalive
	since time.Time
	held  [][]byte // control messages to it
}

// peer is p as this proxy adds it: without endpoint and keepalive if p
// calls first, in which case it is awaited from now on.
func (a *awaitedCalls) peer(p tunnel.Peer, now time.Time) tunnel.Peer {
	if !p.Endpoint.IsValid() || callsFirst(a.self, p.PublicKey) {
		return p
	}
	a.mu.Lock()
	if a.waiting == nil {
		a.waiting = map[[32]byte]*awaitedCall{}
		a.byAddr = map[netip.Addr][32]byte{}
	}
	if w := a.waiting[p.PublicKey]; w != nil {
		w.peer = p // added again: an update
	} else {
		a.waiting[p.PublicKey] = &awaitedCall{peer: p, since: now}
	}
	for _, pfx := range p.AllowedIPs {
		a.byAddr[pfx.Addr()] = p.PublicKey
	}
	a.mu.Unlock()
	p.Endpoint, p.Keepalive = netip.AddrPort{}, 0
	return p
}

// hold keeps pkt, a control message to dst, if dst is an awaited peer's.
func (a *awaitedCalls) hold(dst netip.Addr, pkt []byte) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.waiting) == 0 {
		return false
	}
	key, ok := a.byAddr[dst]
	if !ok {
		return false
	}
	if w := a.waiting[key]; len(w.held) < maxHeld {
		w.held = append(w.held, pkt)
	}
	return true
}

// any reports whether a peer is awaited.
func (a *awaitedCalls) any() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.waiting) > 0
}

// forget stops waiting for key (its peer was removed), and drops what was
// held for it.
func (a *awaitedCalls) forget(key [32]byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dropLocked(key)
}

func (a *awaitedCalls) dropLocked(key [32]byte) {
	w := a.waiting[key]
	if w == nil {
		return
	}
	for _, pfx := range w.peer.AllowedIPs {
		if a.byAddr[pfx.Addr()] == key {
			delete(a.byAddr, pfx.Addr())
		}
	}
	delete(a.waiting, key)
}

// done takes out the awaited peers that called (a handshake in hs, the
// device's) or that were awaited for callWait by now. A key missing from
// hs is no peer any more: it is dropped.
func (a *awaitedCalls) done(now time.Time, hs map[[32]byte]time.Time) []*awaitedCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*awaitedCall
	for k, w := range a.waiting {
		at, ok := hs[k]
		if !ok || !at.IsZero() || now.Sub(w.since) >= callWait {
			a.dropLocked(k)
			if ok {
				out = append(out, w)
			}
		}
	}
	return out
}

// endAwaitedCalls gives the awaited peers that called, or that did not
// within callWait, their endpoint and keepalive (which calls at once if
// there is no session yet), then sends what was held for them.
func (p *Proxy) endAwaitedCalls(now time.Time) {
	if !p.awaited.any() {
		return
	}
	dev, err := p.device()
	if err != nil {
		return
	}
	hs, err := dev.Handshakes()
	if err != nil {
		return
	}
	for _, w := range p.awaited.done(now, hs) {
		if err := dev.AddPeer(w.peer); err != nil && p.logf != nil {
			p.logf("call peer %x…: %v", w.peer.PublicKey[:4], err)
		}
		for _, pkt := range w.held {
			p.tun.Inject(pkt)
		}
	}
}
