//go:build race

package lab

// raceEnabled: the race detector slows every node of the in-process lab
// several times over.
const raceEnabled = true
