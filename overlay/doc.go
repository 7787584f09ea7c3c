// Package overlay is the control plane of a pias proxy.
//
// What lives where: proxy.go composes the parts and holds the entry points;
// members.go (who the proxies are, admission by mesh key, digests),
// underlay.go (the hello and welcome of admission, outside the tunnels),
// health.go (which are alive: 2-tier SWIM-like probing), admits.go (which
// edges each admits), jap.go (targets that joined here), rap.go (which JAPs
// serve a group), iap.go (resolves for the router), hrw.go (RAPs by
// rendezvous hash). wire*.go is one Go type per control message, rules.go
// the one table of who may send each where, events.go every event kind.
//
// Who calls what: a node's control goroutine calls the entry points
// (HandleControl, HandleUnderlay, Resolve, NoTarget, Tick, HealthTick);
// status and tests call the readers from any goroutine. The package starts
// no goroutine and reads no system clock: time is a Clock, the network a
// Transport, so the same code runs in a node, in tests (overlaytest) and in
// a simulator. The edge side of the protocol is package edge.
package overlay
