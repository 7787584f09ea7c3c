package tunnel

import (
	"bytes"
	"sync"
	"time"
)

// CrossedHandshakes mends the sessions that WireGuard handshakes crossing
// on the way leave broken, in a peer's first minute.
//
// When two nodes add each other at the same moment, both initiate. Each
// answers the other's initiation, which replaces its own pending one, so
// each refuses the response it then gets ("invalid response message").
// Neither has a session, and both retry RekeyTimeout (5 s) later, plus at
// most a third of a second of jitter: nearly in step again, so on a slow or
// distant link they can cross for tens of seconds. Of each pair of nodes
// that both run this, the one with the greater public key breaks the tie:
// a peer that has had no handshake ResetAfter since it was added is reset
// (removed and added again), and again after twice as long, and so on (a
// slow path may need more than ResetAfter for one handshake). The other
// side does nothing, so the two never reset in step.
//
// Crossings can also end with a session each side holds but one side
// cannot read: it is sent on a key pair the other has replaced. WireGuard
// mends that only when the deaf side has gone KeepaliveTimeout+RekeyTimeout
// (15 s) without a packet. So a side that has a session and keeps sending,
// but has heard nothing for ResetAfter, resets the peer too, with the same
// doubling.
//
// A reset drops wireguard-go's key pairs and retry timer; the peer comes
// back with a persistent keepalive, which initiates at once, out of step,
// so that the other side, which may still hold the old session, gets the
// new one within a round trip.
type CrossedHandshakes struct {
	dev  *Device
	self [32]byte // this device's public key

	mu    sync.Mutex
	peers map[[32]byte]*crossingPeer // peers in their first minute
}

type crossingPeer struct {
	peer         Peer
	added, reset time.Time
	wait         time.Duration // from reset to the next reset
	breaksTies   bool          // this side's key is the greater
	sampled      bool          // rx and tx hold a reading
	rx, tx       uint64        // bytes from and to it when it was last heard
	heard        time.Time     // when its rx last grew (or the first reading)
}

const (
	// ResetAfter is how long a peer may go without a handshake, or a peer
	// sent to without a word back, before the first reset: longer than a
	// handshake takes on a sane path, well short of wireguard-go's 5 s
	// retry (the reset falls between two retries) and of the time health
	// monitoring takes to declare a proxy dead.
	ResetAfter = time.Second
	// maxResetWait caps the doubling of the wait between resets.
	maxResetWait = 8 * time.Second
	// watchFor: a peer is watched this long after it was added. Crossings
	// happen when two nodes meet; later, WireGuard's own timers rule.
	watchFor = time.Minute
	// resetKeepalive is the persistent keepalive a reset peer gets if it
	// had none: it makes the new handshake start at once.
	resetKeepalive = 25 * time.Second
)

// NewCrossedHandshakes watches the peers of dev, whose public key is self.
func NewCrossedHandshakes(dev *Device, self [32]byte) *CrossedHandshakes {
	return &CrossedHandshakes{dev: dev, self: self, peers: map[[32]byte]*crossingPeer{}}
}

// Added tells it that p was added to the device, or updated, at now: p is
// watched for a minute from when it was first added.
func (c *CrossedHandshakes) Added(p Peer, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.peers[p.PublicKey]; w != nil {
		w.peer = p // an update: keep the times
		return
	}
	c.peers[p.PublicKey] = &crossingPeer{peer: p, added: now, reset: now, wait: ResetAfter,
		breaksTies: bytes.Compare(c.self[:], p.PublicKey[:]) > 0}
}

// Removed tells it that the peer with this key was removed.
func (c *CrossedHandshakes) Removed(key [32]byte) {
	c.mu.Lock()
	delete(c.peers, key)
	c.mu.Unlock()
}

// Check resets the watched peers that are due, and stops watching those
// past their minute. It reads the device's configuration only while some
// peer is watched, and returns how many peers it reset.
func (c *CrossedHandshakes) Check(now time.Time) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.peers) == 0 {
		return 0, nil
	}
	stats, err := c.dev.PeerStats()
	if err != nil {
		return 0, err
	}
	n := 0
	for key, w := range c.peers {
		st, isPeer := stats[key]
		if !isPeer || now.Sub(w.added) > watchFor {
			delete(c.peers, key)
			continue
		}
		if !w.sampled || st.Rx != w.rx || st.Tx < w.tx {
			w.sampled, w.rx, w.tx, w.heard = true, st.Rx, st.Tx, now
		}
		if now.Sub(w.reset) < w.wait {
			continue
		}
		crossed := st.Handshake.IsZero() && w.breaksTies
		deaf := !st.Handshake.IsZero() && st.Tx > w.tx && now.Sub(w.heard) >= w.wait
		if !crossed && !deaf {
			continue
		}
		pr := w.peer
		if pr.Keepalive <= 0 {
			pr.Keepalive = resetKeepalive
		}
		if err := c.dev.ResetPeer(pr); err != nil {
			return n, err
		}
		// A reset peer's counters start again from zero.
		w.reset, w.wait, w.sampled = now, min(2*w.wait, maxResetWait), false
		n++
	}
	return n, nil
}

// Watched is how many peers it watches.
func (c *CrossedHandshakes) Watched() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.peers)
}
