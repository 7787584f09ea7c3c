package lab

import (
	"flag"
	"os"
	"testing"
)

// TestMain runs one lab test at a time under -race, unless -parallel says
// otherwise. Each lab is a dozen wireguard-go devices and netstacks in
// this process; under the race detector two of them at once, beside the
// other packages' tests, left the 2 cores so short that nodes stalled for
// a second or more: WireGuard handshakes, probes and registrations came
// late, and tests failed on what the stalls did, not on what they test.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if raceEnabled && !set {
		flag.Set("test.parallel", "1")
	}
	os.Exit(m.Run())
}
