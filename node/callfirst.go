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
// a busy host). It is short because a peer that holds a session with this
// proxy's past self (a restart) sends into that session, and loses what it
// sends, until this proxy calls: a JAP's registration again a second after
// a restart must find the new session.
const callWait = 500 * time.Millisecond

// maxHeld bounds the control messages held for one awaited peer: half a second
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
	// byCall, byTimeout: waits that ended with the peer's call, and
	// without it; released: the messages held until then (tests read
	// them).
	byCall, byTimeout, released int
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
		// Added again: an update, maybe of its addresses.
		a.unmapLocked(p.PublicKey, w)
		w.peer = p
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
	w := a.waiting[a.byAddr[dst]]
	if w == nil {
		return false
	}
	if len(w.held) < maxHeld {
		w.held = append(w.held, pkt)
	}
	return true
}

// ended reports how many waits ended with the peer's call, and without,
// and how many held messages they released.
func (a *awaitedCalls) ended() (byCall, byTimeout, released int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byCall, a.byTimeout, a.released
}

// awaits reports whether the peer with this key is awaited.
func (a *awaitedCalls) awaits(key [32]byte) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.waiting[key] != nil
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
	if w := a.waiting[key]; w != nil {
		a.unmapLocked(key, w)
		delete(a.waiting, key)
	}
}

// unmapLocked removes w's addresses from byAddr, those still mapped to key.
func (a *awaitedCalls) unmapLocked(key [32]byte, w *awaitedCall) {
	for _, pfx := range w.peer.AllowedIPs {
		if a.byAddr[pfx.Addr()] == key {
			delete(a.byAddr, pfx.Addr())
		}
	}
}

// done takes out the awaited peers that called (a handshake in peers,
// the device's) or that were awaited for callWait by now, each with the
// UAPI set that ends its wait. A key missing from peers is no peer any
// more: it is dropped.
func (a *awaitedCalls) done(now time.Time, peers []tunnel.PeerStats) []endedWait {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.waiting) == 0 {
		return nil
	}
	stats := make(map[[32]byte]tunnel.PeerStats, len(peers))
	for _, p := range peers {
		stats[p.PublicKey] = p
	}
	var out []endedWait
	for k, w := range a.waiting {
		st, ok := stats[k]
		called := ok && !st.LastHandshake.IsZero()
		if ok && !called && now.Sub(w.since) < callWait {
			continue
		}
		a.dropLocked(k)
		if !ok {
			continue
		}
		e := endedWait{peer: w.peer, held: w.held}
		a.released += len(w.held)
		switch {
		case called:
			// It called from where it is: keep the endpoint wireguard-go
			// learned (behind a NAT it is not the one in its record).
			e.peer.Endpoint = netip.AddrPort{}
			a.byCall++
		case st.RxBytes > 0:
			// A call came and its handshake is under way (an answering
			// side counts it once the caller's first packet confirms it):
			// leave that state alone.
			e.peer.Endpoint = netip.AddrPort{}
			a.byTimeout++
		default:
			// Nobody called. A packet the router forwarded meanwhile may
			// have made wireguard-go begin a handshake it could not send,
			// which would hold back the next one for 5 s: start the peer
			// afresh, so that its keepalive calls at once.
			e.reset = true
			a.byTimeout++
		}
		out = append(out, e)
	}
	return out
}

// endedWait is how an awaited peer's wait ends.
type endedWait struct {
	peer  tunnel.Peer
	reset bool // remove and add the peer, rather than update it
	held  [][]byte
}

// endAwaitedCalls ends the waits of the awaited peers that called, or that
// did not within callWait: each gets its keepalive (which calls at once if
// there is no session yet) and, unless a call came, its endpoint; then
// what was held for it is sent.
func (p *Proxy) endAwaitedCalls(now time.Time) {
	if !p.awaited.any() {
		return
	}
	p.peersMu.Lock()
	defer p.peersMu.Unlock()
	dev, peers, ok := p.devicePeers()
	if !ok {
		return
	}
	for _, e := range p.awaited.done(now, peers) {
		set := dev.AddPeer
		if e.reset {
			set = dev.ResetPeer
		}
		if err := set(e.peer); err != nil && p.logf != nil {
			p.logf("call peer %x…: %v", e.peer.PublicKey[:4], err)
		}
		for _, pkt := range e.held {
			p.tun.Inject(pkt)
		}
	}
}

// devicePeers is the device and its peers' counters; false if the device is
// not up yet or cannot say. The caller holds peersMu.
func (p *Proxy) devicePeers() (*tunnel.Device, []tunnel.PeerStats, bool) {
	dev, err := p.device()
	if err != nil {
		return nil, nil, false
	}
	peers, err := dev.Peers()
	if err != nil {
		return nil, nil, false
	}
	return dev, peers, true
}
