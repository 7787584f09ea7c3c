// Package check runs a target's health checks: whether the service behind a
// group answers, as opposed to whether pias itself is alive.
//
// A Probe asks the service once (tcp, http, dns, udp or exec; see Spec) and
// returns a Result; it takes its timeout from its context and reaches the
// service through a Dialer, so a node can pass its netstack's dialer or the
// host's. A State turns the stream of results into the check's status, with
// HAProxy's damping: rise successes in a row to become healthy, fall
// failures in a row to become failing.
//
// The package is pure standard library; it has its own small DNS codec
// (dns.go) rather than a dependency.
package check
