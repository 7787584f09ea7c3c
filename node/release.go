package node

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// A proxy's memory after a burst of traffic: wireguard-go takes a 64 KiB
// buffer for every packet in flight, from pools that only a garbage
// collection empties, and with no traffic there is no allocation to start
// one (the runtime forces one every 2 minutes, and a pool needs two). So
// after 8 streams a proxy would sit at its peak, 150-250 MB, for minutes.
// Once the data path has been quiet for a second, a proxy that holds more
// than releaseAbove collects twice and hands the free memory back to the
// OS: 30 ms of CPU for 250 MB, once per burst; the next burst allocates
// its buffers anew.
const (
	// quietPackets: fewer packets than this in a tick is quiet (1000 a
	// second, a few interactive flows).
	quietPackets = 100
	// quietTicks: this many quiet ticks in a row end a burst.
	quietTicks = 10
	// releaseAbove: what a proxy may keep of the OS's memory when idle
	// (about twice an idle proxy's).
	releaseAbove = 32 << 20
)

// burstEnd tells, tick by tick, when the data path has gone quiet after
// traffic: once per quiet period that follows a busy tick.
type burstEnd struct {
	last  uint64 // packets counted at the previous tick
	busy  bool   // a busy tick since the last quiet period
	quiet int    // quiet ticks in a row
}

// tick takes the data path's packet count; it is true on the tick that
// completes quietTicks quiet ticks after a busy one.
func (b *burstEnd) tick(packets uint64) bool {
	d := packets - b.last
	b.last = packets
	if d >= quietPackets {
		b.busy, b.quiet = true, 0
		return false
	}
	b.quiet++
	if b.busy && b.quiet == quietTicks {
		b.busy = false
		return true
	}
	return false
}

// releasing is held while a release runs: one at a time in a process
// (tests run many proxies in one).
var releasing = make(chan struct{}, 1)

// releaseAfterBurst starts releaseMemory on its own goroutine (it takes a
// few hundred ms) if the process holds more than releaseAbove and no
// release is running.
func releaseAfterBurst() {
	if retained() <= releaseAbove {
		return
	}
	select {
	case releasing <- struct{}{}:
		go func() { releaseMemory(); <-releasing }()
	default:
	}
}

// retained is the memory the Go runtime holds from the OS (what RSS is
// made of): all it mapped less what it returned.
func retained() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}

// releaseMemory empties the pools (the first collection moves them aside,
// the second frees them) and returns the free memory to the OS.
func releaseMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}
