package node

import (
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/tunnel"
)

// Two proxies that call each other at the same moment may each answer the
// other's initiation while the other's answer to their own is in
// wireguard-go's second handshake worker. Both exchanges then complete, out
// of step: one side keeps a session whose receiving index it dropped for
// the second exchange, and every packet its peer sends it is discarded.
// Its own packets still arrive, so wireguard-go starts again only when it
// has heard nothing for 15 s (KeepaliveTimeout + RekeyTimeout). Or neither
// exchange completes, and neither side has a session until wireguard-go's
// retry 5 s later. Under load the lab hits both at start-up (callfirst.go
// makes crossings rare, not impossible: a call can sit a second in a busy
// peer's queue, and two proxies that admit each other add each other at
// once).
//
// The overlay sees it within a few probe intervals: the peer, never heard
// from, becomes a suspect, or it is alive by others' word but silent here
// (overlay.Redialer). Then:
//   - A session that began within that silence (and at least sessionGrace
//     ago) carried nothing from the peer: the peer is removed and added
//     again, as at start (the greater key calls at once, the lesser waits
//     callWait for that call first), and the two meet in a round trip.
//   - No session at all: the two calls crossed, and wireguard-go's retries
//     5 s later may cross again (it jitters them by a third of a second at
//     most, and under load a handshake takes longer than that to land): a
//     lab start under load crossed, crossed again 5 s later, and was not
//     ready in 16 s. The lesser key resets, to wait for the greater's call
//     as at start; the greater leaves it to its retry, which keeps what
//     wireguard-go holds for the peer. What the lesser's device held is
//     lost, so the overlay sends it what may be lost again once it hears
//     the member (change.missed).
//   - A session older than the silence is on a cut path (or to a dead
//     proxy), and is left alone: it works again the moment the path does,
//     where a fresh one would wait for a handshake.

// Redial starts sessions afresh with the silent members whose session
// began within their silence, or who have none and call first.
func (t transport) Redial(silent []overlay.SilentMember) { t.p.redial(silent, time.Now()) }

func (p *Proxy) redial(silent []overlay.SilentMember, now time.Time) {
	p.peersMu.Lock()
	defer p.peersMu.Unlock()
	dev, peers, ok := p.devicePeers()
	if !ok {
		return
	}
	stats := make(map[[32]byte]tunnel.PeerStats, len(peers))
	for _, st := range peers {
		stats[st.PublicKey] = st
	}
	for _, s := range silent {
		st, ok := stats[s.Member.PublicKey]
		if !ok || p.awaited.awaits(s.Member.PublicKey) {
			continue
		}
		age, reset := redialAge(st, s.Silent, now, callsFirst(p.awaited.self, s.Member.PublicKey))
		if !reset {
			continue
		}
		pr := memberPeer(s.Member, true)
		if st.Endpoint.IsValid() {
			pr.Endpoint = st.Endpoint // where it called from, maybe not its record's
		}
		if err := dev.ResetPeer(p.awaited.peer(pr, now)); err != nil {
			if p.logf != nil {
				p.logf("redial %q: %v", s.Member.Name, err)
			}
			continue
		}
		why := "no session"
		if st.LastHandshake.IsZero() {
			p.recalls.Add(1)
		} else {
			p.redials.Add(1)
			why = "its session of " + age.Round(time.Millisecond).String() + " ago carried nothing"
		}
		if p.logf != nil {
			p.logf("redial %q: %s in %v of silence; started afresh (the greater key calls first)", s.Member.Name, why, s.Silent.Round(time.Millisecond))
		}
	}
}

// sessionGrace is how old a session must be before its silence counts: a
// fresh one (the peer's own call, say) may not have carried its first
// packet yet on a busy host, and a reset then would cut it short.
const sessionGrace = time.Second

// redialAge reports the age of the peer's session, and whether it is reset
// for a silence of silent: it began within the silence, past sessionGrace;
// or there is none, and this proxy does not call first.
func redialAge(st tunnel.PeerStats, silent time.Duration, now time.Time, callsFirst bool) (time.Duration, bool) {
	if st.LastHandshake.IsZero() {
		return 0, !callsFirst
	}
	age := now.Sub(st.LastHandshake)
	return age, age < silent && age >= sessionGrace
}
