//go:build !unix

package cores

import "time"

// cpuTime cannot be read here, so Start leaves the runtime alone.
func cpuTime() (time.Duration, bool) { return 0, false }
