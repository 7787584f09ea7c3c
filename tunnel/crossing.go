package tunnel

import (
	"bytes"
	"sync"
	"time"
)

// CrossedHandshakes breaks WireGuard handshakes that cross again and again.
//
// When two nodes add each other at the same moment, both initiate. Each
// answers the other's initiation, which replaces its own pending one, so
// each refuses the response it then gets ("invalid response message").
// Neither has a session, and both retry RekeyTimeout (5 s) later, plus at
// most a third of a second of jitter: nearly in step again, so on a slow or
// distant link they can cross for tens of seconds.
//
// Of each pair of nodes that both run this, the one with the greater public
// key breaks the tie: a peer that has had no handshake ResetAfter since it
// was added is removed and added again, and again after twice as long, and
// so on (a slow path may need more than ResetAfter for one handshake). That drops
// wireguard-go's retry timer, and the next packet to the peer initiates at
// once, out of step with the other side's retry. The other side does
// nothing, so the two never reset in step.
type CrossedHandshakes struct {
	dev  *Device
	self [32]byte // this device's public key

	mu    sync.Mutex
	peers map[[32]byte]*crossingPeer // peers with no handshake yet that this side resets
}

type crossingPeer struct {
	peer         Peer
	added, reset time.Time
	wait         time.Duration // from reset to the next reset
}

const (
	// ResetAfter is how long a peer may go without a handshake before the
	// first reset: longer than a handshake takes on a sane path, well short
	// of wireguard-go's 5 s retry (the reset falls between two retries) and
	// of the time health monitoring takes to declare a proxy dead.
	ResetAfter = time.Second
	// maxResetWait caps the doubling of the wait between resets.
	maxResetWait = 8 * time.Second
	// giveUpAfter: a peer with no handshake this long after it was added is
	// down, not crossed; resetting it further only costs handshakes.
	giveUpAfter = time.Minute
)

// NewCrossedHandshakes watches the peers of dev, whose public key is self.
func NewCrossedHandshakes(dev *Device, self [32]byte) *CrossedHandshakes {
	return &CrossedHandshakes{dev: dev, self: self, peers: map[[32]byte]*crossingPeer{}}
}

// Added tells it that p was added to the device, or updated, at now. It
// watches only peers whose key is less than this device's: this side
// breaks their ties.
//
// A reset can also drop a session the other side has just finished as
// initiator, before its first packet confirmed it here; the other side
// then sends into the void until this side sends to it, which initiates
// anew (at once with a persistent keepalive, else with the next packet).
// That window is one round trip, once per reset.
func (c *CrossedHandshakes) Added(p Peer, now time.Time) {
	if bytes.Compare(c.self[:], p.PublicKey[:]) <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.peers[p.PublicKey]; w != nil {
		w.peer = p // an update: keep the times
		return
	}
	c.peers[p.PublicKey] = &crossingPeer{peer: p, added: now, reset: now, wait: ResetAfter}
}

// Removed tells it that the peer with this key was removed.
func (c *CrossedHandshakes) Removed(key [32]byte) {
	c.mu.Lock()
	delete(c.peers, key)
	c.mu.Unlock()
}

// Check resets the watched peers that are due, and stops watching those that have had one or that it gave up on. It
// reads the device's configuration only while some peer is watched, and
// returns how many peers it reset.
func (c *CrossedHandshakes) Check(now time.Time) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.peers) == 0 {
		return 0, nil
	}
	hs, err := c.dev.Handshakes()
	if err != nil {
		return 0, err
	}
	n := 0
	for key, w := range c.peers {
		at, isPeer := hs[key]
		switch {
		case !isPeer || !at.IsZero() || now.Sub(w.added) > giveUpAfter:
			delete(c.peers, key)
		case now.Sub(w.reset) >= w.wait:
			if err := c.dev.ResetPeer(w.peer); err != nil {
				return n, err
			}
			w.reset, w.wait = now, min(2*w.wait, maxResetWait)
			n++
		}
	}
	return n, nil
}
