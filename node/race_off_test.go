//go:build !race

package node

const raceEnabled = false

const raceFloodRate = 1 // not used: the flood goes as fast as it can
