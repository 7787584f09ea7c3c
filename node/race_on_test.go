//go:build race

package node

// raceEnabled: the race detector slows everything about tenfold; timing
// figures are only logged.
const raceEnabled = true
