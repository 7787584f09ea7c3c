package overlay

// Red-team tests of three changes to health.go: forwarders of a death by
// the victim's cluster (bf6ae65), the 32-byte probeRec that keeps one
// outstanding probe of a dead member (4733f04), and the radix sort of
// queued news (84af0a1). A test whose finding stands is skipped unless
// REDTEAM=1 (and then fails); the others check what holds.

import (
	"os"
	"testing"
	"time"

	"github.com/pias-net/pias/overlay/overlaytest"
)

// rt26Skip skips a test that shows a finding, unless REDTEAM=1.
func rt26Skip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("REDTEAM") != "1" {
		t.Skip(why)
	}
}

// TestRedteam26SlowDeadNeverSeenBack: finding 1 (4733f04). A dead member
// keeps one probe number (deadSeq), and each probe of it (once a
// DeadProbeInterval, 1 s) overwrites it. When the round trip to it is
// longer than DeadProbeInterval, every answer comes after the next probe
// replaced its number and matches nothing: a member that is alive but
// held dead by a proxy it does not probe itself is never seen back by
// that proxy. (The window of 8 probes matched answers up to 8 s late.)
func TestRedteam26SlowDeadNeverSeenBack(t *testing.T) {
	rt26Skip(t, "finding 1: a dead member answering slower than DeadProbeInterval is never seen back")
	n, ms := newHealthNet(t, 10, 10, 10)
	n.run(time.Second)
	v := ms[0]
	w := rtUnwatched(t, n, v, ms[10:20]) // v never probes w
	x := ms[10]
	if x.Name == w.Name {
		x = ms[11]
	}
	// w alone holds v dead: a Fail from its own cluster is not passed on.
	// (A true death once, or a view that went wrong: deadTurnLocked is
	// what puts such a view right.)
	n.net.SetLink(v.Name, w.Name, overlaytest.Link{Delay: 600 * time.Millisecond})
	n.sendAs(x.Name, w.Name, failMsg(v.Name, 100))
	n.until(2*time.Second, w.Name+" holds "+v.Name+" dead", func() bool { return n.state(w.Name, v.Name) == StateDead })
	if k := rnHolding(n, ms, v.Name, StateDead); k != 1 {
		t.Fatalf("%d proxies hold %s dead, want %s alone", k, v.Name, w.Name)
	}
	count, stop := n.rtCount(TypeProbeAck, func(p overlaytest.Packet, m Msg) bool { return p.From == v.Name && p.To == w.Name })
	defer stop()
	n.run(10 * time.Second)
	if st := n.state(w.Name, v.Name); st == StateDead {
		t.Errorf("%s still holds %s dead after 10 s, with %d answers of it to its probes delivered (round trip 1.2 s, DeadProbeInterval 1 s)", w.Name, v.Name, count())
	}
}
