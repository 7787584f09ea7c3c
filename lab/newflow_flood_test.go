package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
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
// for 3 s. Meanwhile another client's established connection through the
// same proxy keeps exchanging lines, each echoed byte for byte by the
// target; the proxy's flow tables stay within max_flows and the flooder
// within its share (a quarter of a table), evicting only its own flows.
func TestNewFlowFlood(t *testing.T) {
	shape := Options{Proxies: 1, Clusters: 1, Targets: 2, Clients: 2, Groups: 2}
	h, _ := startLabWith(t, shape, HarnessOptions{Generated: func(l *Lab) {
		path := l.Path("p1.toml")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b = append([]byte("max_flows = 1024\n"), b...)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
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
	ask := func(i int) {
		t.Helper()
		payload := make([]byte, 600)
		rand.Read(payload)
		line := hex.EncodeToString(payload) // 1200 bytes, no newline
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ans, err := long.Ask(actx, line)
		if err != nil {
			t.Fatalf("exchange %d on the established connection: %v", i, err)
		}
		answeredBy(t, ans, line, targetsOf(h, tcpG))
	}
	ask(0)
	// Its pace before the flood, for comparison.
	quiet := 0
	for t0 := time.Now(); time.Since(t0) < time.Second; {
		quiet++
		ask(quiet)
	}

	raw := startRawEdge(t, h, "cl2")
	raw.exchange(t, ctx, h, udpG, 40000, "raw hello") // its session is up
	src := addr4Of(t, h, "cl2")
	dst := netip.AddrPortFrom(tcpG.Addr, tcpG.Port)
	before := p1.Router.Stats()

	var sent atomic.Int64
	stop := make(chan struct{})
	floodDone := make(chan struct{})
	var once sync.Once
	end := func() { once.Do(func() { close(stop); <-floodDone }) }
	defer end() // a failed exchange ends the test, and the flood with it
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
	start := time.Now()
	var maxIAP, maxJAP, maxMine int
	exchanges := 0
	for time.Since(start) < 3*time.Second {
		exchanges++
		ask(exchanges)
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
	end()
	secs := time.Since(start).Seconds()
	after := p1.Router.Stats()
	ask(exchanges + 1)

	n := sent.Load()
	t.Logf("flood: %d SYNs in %.1f s (%.0f a second); p1 evicted %d flows; its tables peaked at %d IAP and %d NAT flows, the flooder's share at %d; the established connection answered %.0f exchanges of 1200 bytes a second during the flood, %d before it",
		n, secs, float64(n)/secs, after.Evicted-before.Evicted, maxIAP, maxJAP, maxMine, float64(exchanges)/secs, quiet)
	if n < 2*floodMaxFlows {
		t.Fatalf("the flood sent only %d SYNs: it cannot have filled a table of %d", n, floodMaxFlows)
	}
	if after.Evicted == before.Evicted {
		t.Errorf("no flow was evicted: the flood never reached the flooder's share")
	}
	if maxIAP > floodMaxFlows || maxJAP > floodMaxFlows {
		t.Errorf("flow tables reached %d IAP and %d NAT flows, more than max_flows %d", maxIAP, maxJAP, floodMaxFlows)
	}
	if share := floodMaxFlows / 4; maxMine > share {
		t.Errorf("the flooder held %d flows in one table, more than its share %d", maxMine, share)
	}
	if exchanges < 3 {
		t.Errorf("only %d exchanges on the established connection in %.1f s of flood", exchanges, secs)
	}
	if _, ok := findFlow(p1, "iap", victim, tcpG); !ok {
		t.Errorf("the established connection's flow %s → %s is gone from p1", victim, tcpG)
	}
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
