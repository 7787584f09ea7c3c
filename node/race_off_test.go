//go:build !race

package node

const raceFloodGap = 0 // the flood goes as fast as it can
