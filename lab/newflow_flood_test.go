package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// floodMaxFlows is the proxy's max_flows in TestNewFlowFlood: the
// smallest a file allows, so that a flood of a few seconds fills it.
const floodMaxFlows = 1024

// TestNewFlowFlood: one client sends TCP SYNs to a group, each from a new
// source port, as fast as one goroutine can hand them to its WireGuard,
// for at least 3 s. Meanwhile another client's established connection
// through the same proxy keeps exchanging lines, each echoed byte for byte
// by the target: the flood lasts until it has answered 3 of them (at most
// 60 s). Under the race detector the proxy is slower than the flooder, the
// kernel drops at its socket whatever does not fit, the flooder's and the
// connection's packets alike, and the connection's retransmissions back
// off past the flood: there it must answer after the flood. The proxy's flow tables stay within max_flows and the flooder
// within its share (a quarter of a table), evicting only its own flows.
func TestNewFlowFlood(t *testing.T) {
	shape := Options{Proxies: 1, Clusters: 1, Targets: 2, Clients: 2, Groups: 2}
	h, _ := startLabWith(t, shape, HarnessOptions{Generated: func(l *Lab) {
		path := l.Path("p1.toml")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b = append([]byte(fmt.Sprintf("max_flows = %d\n", floodMaxFlows)), b...)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	p1 := h.Proxies["p1"]
	tcpG, udpG := GroupN(0), GroupN(1)

	// The victim's connection, established before the flood.
	long, err := h.DialTCP(ctx, "cl1", tcpG)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	victim := localAddrPort(t, long.Conn().LocalAddr())
	targets := targetsOf(h, tcpG)
	// exchange sends 1200 random bytes as a line and checks that the
	// target echoed them.
	exchange := func() error {
		payload := make([]byte, 600)
		rand.Read(payload)
		line := hex.EncodeToString(payload)
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ans, err := long.Ask(actx, line)
		if err != nil {
			return err
		}
		for _, n := range targets {
			if ans == n+": "+line {
				return nil
			}
		}
		return fmt.Errorf("answer %.40q…, not the line echoed by one of %v", ans, targets)
	}
	quiet := 0 // its pace before the flood, for comparison
	for t0 := time.Now(); time.Since(t0) < time.Second; quiet++ {
		if err := exchange(); err != nil {
			t.Fatalf("exchange %d before the flood: %v", quiet, err)
		}
	}

	raw := startRawEdge(t, h, "cl2")
	raw.exchange(t, ctx, h, udpG, 40000, "raw hello") // its session is up
	src := addr4Of(t, h, "cl2")
	dst := netip.AddrPortFrom(tcpG.Addr, tcpG.Port)
	before := p1.Router.Stats()
	rcvbuf0 := udpRcvbufErrors()

	var sent atomic.Int64
	stop := make(chan struct{})
	floodDone := make(chan struct{})
	var once sync.Once
	end := func() { once.Do(func() { close(stop); <-floodDone }) }
	defer end() // a failure ends the test, and the flood with it
	go func() {
		defer close(floodDone)
		for i := uint32(0); ; i++ {
			// A new source port each time, over 1024..65535; a new
			// sequence number, so that a reused port is a new SYN.
			syn := tcpSYN(netip.AddrPortFrom(src, uint16(1024+i%64512)), dst, i)
			select {
			case raw.ch.Outbound <- syn:
				sent.Add(1)
			case <-stop:
				return
			}
		}
	}()
	// The established connection, on its own goroutine; the test reads
	// each exchange's outcome.
	results := make(chan error)
	stopAsking := make(chan struct{})
	asked := make(chan struct{})
	defer func() { close(stopAsking); long.Close(); <-asked }()
	go func() {
		defer close(asked)
		for {
			err := exchange()
			select {
			case results <- err:
			case <-stopAsking:
				return
			}
			if err != nil {
				return
			}
		}
	}()

	start := time.Now()
	var maxIAP, maxJAP, maxMine int
	sample := func() {
		st := p1.Router.Stats()
		maxIAP, maxJAP = max(maxIAP, st.IAPFlows), max(maxJAP, st.JAPFlows)
		mine := map[string]int{}
		for _, f := range p1.Router.Flows() {
			if f.Client.Addr() == src {
				mine[f.Kind]++
			}
		}
		for _, n := range mine {
			maxMine = max(maxMine, n)
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	during := 0
	for (during < 3 && !raceEnabled) || time.Since(start) < 3*time.Second {
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("exchange %d on the established connection during the flood: %v", during+1, err)
			}
			during++
		case <-tick.C:
			sample()
			if time.Since(start) > 60*time.Second {
				t.Fatalf("the established connection answered %d exchanges in 60 s of flood", during)
			}
		}
	}
	sample()
	end()
	secs := time.Since(start).Seconds()
	after := p1.Router.Stats()
	if err := <-results; err != nil { // the exchange under way when the flood stopped
		t.Fatalf("exchange after the flood: %v", err)
	}
	if rcvbuf0 >= 0 {
		t.Logf("the kernel dropped %d datagrams at full UDP receive buffers during the flood", udpRcvbufErrors()-rcvbuf0)
	}

	n := sent.Load()
	evicted, rated := after.Evicted-before.Evicted, after.Drops[router.DropFlowRate]-before.Drops[router.DropFlowRate]
	// What reached p1's router: a new IAP flow, or a SYN dropped for its
	// rate. On a busy host many of the SYNs sent are lost before it, in
	// WireGuard's queues and at the kernel's socket.
	arrived := after.IAP.New[router.FlowTCP] - before.IAP.New[router.FlowTCP] + rated
	t.Logf("flood: %d SYNs in %.1f s (%.0f a second), %d reached p1's router; p1 evicted %d flows and dropped %d new ones for their rate; its tables peaked at %d IAP and %d NAT flows, the flooder's share at %d; the established connection answered %.1f exchanges of 1200 bytes a second during the flood, %d in the second before it",
		n, secs, float64(n)/secs, arrived, evicted, rated, maxIAP, maxJAP, maxMine, float64(during)/secs, quiet)
	if n < 2*floodMaxFlows {
		t.Fatalf("the flood sent only %d SYNs: it cannot have filled a table of %d", n, floodMaxFlows)
	}
	if after.Evicted == before.Evicted {
		t.Errorf("no flow was evicted: the flood never reached the flooder's share")
	}
	if maxIAP > floodMaxFlows || maxJAP > floodMaxFlows {
		t.Errorf("flow tables reached %d IAP and %d NAT flows, more than max_flows %d", maxIAP, maxJAP, floodMaxFlows)
	}
	// The flooder, at its share, churns at most SourceChurn flows a
	// second in each of p1's two tables (IAP and NAT), plus a second's
	// burst; the rest of its SYNs are dropped before p1 forwards them.
	if most := uint64(2 * router.SourceChurn * (int(secs) + 2)); evicted > most {
		t.Errorf("p1 evicted %d flows in %.1f s, more than the churn limit allows (%d)", evicted, secs, most)
	}
	// A flood slower than the limit (a busy host, -race) is not held back.
	// What counts is what reached p1's router (arrived).
	if allowed := uint64(floodMaxFlows/4 + router.SourceChurn*(int(secs)+2)); arrived > allowed && rated == 0 {
		t.Errorf("no new flow was dropped for its rate though %d SYNs of the flood reached p1, more than the %d the limit allows", arrived, allowed)
	}
	if share := floodMaxFlows / 4; maxMine > share {
		t.Errorf("the flooder held %d flows in one table, more than its share %d", maxMine, share)
	}
	if _, ok := findFlow(p1, "iap", victim, tcpG); !ok {
		t.Errorf("the established connection's flow %s → %s is gone from p1", victim, tcpG)
	}
}

// udpRcvbufErrors is the host's count of UDP datagrams dropped for a full
// socket buffer (Linux; -1 elsewhere).
func udpRcvbufErrors() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return -1
	}
	var names []string
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, err := strconv.ParseInt(f[i], 10, 64)
				if err == nil {
					return v
				}
			}
		}
	}
	return -1
}

// tcpSYN is a valid IPv4 TCP SYN (checksums included) from src to dst.
func tcpSYN(src, dst netip.AddrPort, seq uint32) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	pkt := ipv4Packet(src.Addr(), dst.Addr(), router.ProtoTCP, tcp)
	var pseudo [12]byte
	copy(pseudo[0:4], pkt[12:16])
	copy(pseudo[4:8], pkt[16:20])
	pseudo[9] = router.ProtoTCP
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(tcp)))
	binary.BigEndian.PutUint16(pkt[20+16:], ^uint16(sum16(pkt[20:], sum16(pseudo[:], 0))))
	return pkt
}
