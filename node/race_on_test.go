//go:build race

package node

import "time"

// raceFloodGap paces the forged-hello flood under -race: 10,000 hellos a
// second. The race detector slows a proxy's Go code several times over,
// and not the kernel's sends. There, beside the other packages' tests on
// 2 cores, p1 read about 11,000 hellos a second of a 149,000 a second
// flood; the rest overflowed its socket buffer, the client's packets
// with them, and one of its two requests went unanswered. No reader
// outpaces a sender 13 times faster than itself; without -race,
// wireguard-go's batched reads outpace one sending goroutine. At this
// rate the flood still fills p1's queue of control events (the check
// under test).
const raceFloodGap = time.Second / 10_000
