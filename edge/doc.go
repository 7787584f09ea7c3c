// Package edge is the control plane of a target or client, as state
// machines with no goroutines, sockets or clock of their own:
//
//   - Target keeps a target's groups joined at its JAP (join, keepalive,
//     leave), in target.go.
//   - Selector (selector.go) decides which candidate proxy carries the
//     anycast prefix; Attacher (attacher.go) schedules the probes of the
//     candidates, feeds their results to the Selector, and says which moves
//     and WireGuard session resets to do.
//   - Learner (learner.go) asks the current proxy which proxies would admit
//     the edge and decides which of them become candidates.
//
// Every method takes the time, now, as int64 nanoseconds of one monotonic
// clock, and returns what to send (Packet) or do. node drives them: it owns
// the sockets, the ICMP probes, the timers (each machine's Next), the
// WireGuard device and the one goroutine that calls in. Only Attacher's and
// Target's status methods (Status, Current, Joined, WaitJoined) may be
// called from other goroutines.
package edge
