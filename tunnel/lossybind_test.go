package tunnel

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.zx2c4.com/wireguard/conn"
)

// lossyPair builds two netstacks joined directly by WireGuard, each device
// on its own LossyBind, and returns them with their binds and endpoints.
func lossyPair(t *testing.T) (a, b *Host, ba, bb *LossyBind, epA, epB netip.AddrPort) {
	t.Helper()
	ka, kb := newKeypair(t), newKeypair(t)
	a, b = netstackHost(t, "100.64.3.1"), netstackHost(t, "100.64.3.2")
	ba, bb = NewLossyBind(conn.NewStdNetBind()), NewLossyBind(conn.NewStdNetBind())
	da, db := startBare(t, a, ba, ka), startBare(t, b, bb, kb)
	epA, epB = loopback(t, da), loopback(t, db)
	if err := da.SetPeers([]Peer{{PublicKey: kb.pub, Endpoint: epB, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.3.2/32")}}}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetPeers([]Peer{{PublicKey: ka.pub, Endpoint: epA, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.3.1/32")}}}); err != nil {
		t.Fatal(err)
	}
	return
}

// startBare starts a device on h and bind with key k and no peers.
func startBare(t testing.TB, h *Host, bind conn.Bind, k keypair) *Device {
	t.Helper()
	d, err := NewDevice(h.TUN, bind, k.priv, 0, nil, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// ping sends one ICMP echo from h to dst and returns its round trip.
func ping(h *Host, src, dst string, seq int, timeout time.Duration) (time.Duration, error) {
	pc, err := h.Net.DialPingAddr(netip.MustParseAddr(src), netip.MustParseAddr(dst))
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 1234, Seq: seq, Data: []byte("pias")}}
	wb, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	pc.SetReadDeadline(time.Now().Add(timeout))
	sent := time.Now()
	if _, err := pc.Write(wb); err != nil {
		return 0, err
	}
	rb := make([]byte, 1500)
	for {
		n, err := pc.Read(rb)
		if err != nil {
			return 0, err
		}
		m, err := icmp.ParseMessage(1, rb[:n])
		if err != nil {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && m.Type == ipv4.ICMPTypeEchoReply && e.Seq == seq {
			return time.Since(sent), nil
		}
	}
}

// pingUntil pings until one answer comes or d passes.
func pingUntil(t *testing.T, h *Host, src, dst string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for seq := 1; time.Since(start) < d; seq++ {
		if rtt, err := ping(h, src, dst, seq, 300*time.Millisecond); err == nil {
			return rtt
		}
	}
	t.Fatalf("no ping answer from %s within %v", dst, d)
	return 0
}

func TestLossyBindDropThenClear(t *testing.T) {
	a, _, ba, bb, epA, epB := lossyPair(t)
	t.Logf("baseline rtt %v", pingUntil(t, a, "100.64.3.1", "100.64.3.2", 10*time.Second))

	ba.SetRule(epB, Rule{Drop: true})
	bb.SetRule(epA, Rule{Drop: true})
	for seq := 100; seq < 105; seq++ {
		if rtt, err := ping(a, "100.64.3.1", "100.64.3.2", seq, 200*time.Millisecond); err == nil {
			t.Fatalf("ping answered in %v across a partition", rtt)
		}
	}
	if d, _ := ba.Stats(); d == 0 {
		t.Fatal("no packet counted as dropped")
	}
	if got := ba.Rule(epB); !got.Drop {
		t.Fatalf("Rule(%v) = %+v", epB, got)
	}

	healed := time.Now()
	ba.Clear()
	bb.Clear()
	if len(ba.Rules()) != 0 {
		t.Fatalf("rules left after Clear: %v", ba.Rules())
	}
	pingUntil(t, a, "100.64.3.1", "100.64.3.2", 10*time.Second)
	t.Logf("traffic resumed %v after Clear", time.Since(healed))
}

func TestLossyBindOneWayDropIsAPartition(t *testing.T) {
	a, _, ba, _, _, epB := lossyPair(t)
	pingUntil(t, a, "100.64.3.1", "100.64.3.2", 10*time.Second)
	ba.SetRule(epB, Rule{Drop: true})
	if _, err := ping(a, "100.64.3.1", "100.64.3.2", 50, 300*time.Millisecond); err == nil {
		t.Fatal("ping answered though every request was dropped")
	}
	ba.SetRule(epB, Rule{}) // the zero rule removes it
	pingUntil(t, a, "100.64.3.1", "100.64.3.2", 10*time.Second)
}

func TestLossyBindDelay(t *testing.T) {
	a, _, ba, bb, epA, epB := lossyPair(t)
	pingUntil(t, a, "100.64.3.1", "100.64.3.2", 10*time.Second)
	base := minRTT(t, a, 5)
	const there, back = 60 * time.Millisecond, 40 * time.Millisecond
	ba.SetRule(epB, Rule{Delay: there})
	bb.SetRule(epA, Rule{Delay: back})
	delayed := minRTT(t, a, 5)
	t.Logf("rtt %v without delay, %v with %v+%v", base, delayed, there, back)
	if delayed < there+back {
		t.Fatalf("rtt %v with delays %v+%v", delayed, there, back)
	}
	if _, n := ba.Stats(); n == 0 {
		t.Fatal("no packet counted as delayed")
	}
	ba.Clear()
	bb.Clear()
	// The delays are gone: the best of five pings beats one delayed trip.
	if after := minRTT(t, a, 5); after >= there+back {
		t.Fatalf("rtt %v after Clear", after)
	}
}

func minRTT(t *testing.T, h *Host, n int) time.Duration {
	t.Helper()
	best := time.Hour
	lost := 0
	for i := 0; i < n; i++ {
		rtt, err := ping(h, "100.64.3.1", "100.64.3.2", 1000+i+lost*100, 2*time.Second)
		if err != nil {
			// netstack's ping socket can miss an early reply: try again,
			// a few times.
			if lost++; lost > 3 {
				t.Fatal(err)
			}
			i--
			continue
		}
		best = min(best, rtt)
	}
	return best
}

// recordBind is a conn.Bind that records what it is asked to send.
type recordBind struct {
	mu   sync.Mutex
	sent []byte // first byte of each packet
	at   []time.Time
}

func (r *recordBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) { return nil, 0, nil }
func (r *recordBind) Close() error                                    { return nil }
func (r *recordBind) SetMark(uint32) error                            { return nil }
func (r *recordBind) BatchSize() int                                  { return 128 }
func (r *recordBind) ParseEndpoint(string) (conn.Endpoint, error) {
	return nil, errors.New("not supported")
}
func (r *recordBind) Send(bufs [][]byte, _ conn.Endpoint) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range bufs {
		r.sent = append(r.sent, b[0])
		r.at = append(r.at, time.Now())
	}
	return nil
}

func TestLossyBindDelayKeepsOrderAndDoesNotBlock(t *testing.T) {
	rec := &recordBind{}
	b := NewLossyBind(rec)
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	other := netip.MustParseAddrPort("127.0.0.1:10")
	ep := &conn.StdNetEndpoint{AddrPort: dst}
	b.SetRule(dst, Rule{Delay: 80 * time.Millisecond})
	b.SetRule(other, Rule{Drop: true})
	start := time.Now()
	buf := []byte{0}
	for i := range 50 {
		buf[0] = byte(i)
		if err := b.Send([][]byte{buf}, ep); err != nil {
			t.Fatal(err)
		}
		if i == 25 {
			b.SetRule(dst, Rule{Delay: 10 * time.Millisecond}) // must not overtake
		}
	}
	// Blocking sends would take 50 × 80 ms = 4 s.
	if d := time.Since(start); d > time.Second {
		t.Fatalf("50 delayed sends took %v: Send blocks", d)
	}
	b.Send([][]byte{{99}}, &conn.StdNetEndpoint{AddrPort: other}) // dropped
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.sent)
		rec.mu.Unlock()
		if n >= 50 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := make([]byte, 50)
	for i := range want {
		want[i] = byte(i)
	}
	if !slices.Equal(rec.sent, want) {
		t.Fatalf("sent %v, want 0..49 in order and nothing else", rec.sent)
	}
	if first := rec.at[0].Sub(start); first < 80*time.Millisecond {
		t.Fatalf("first packet left after %v, delay 80ms", first)
	}
	if d, _ := b.Stats(); d != 1 {
		t.Fatalf("dropped %d, want 1", d)
	}
	b.Close()
	b.Send([][]byte{{7}}, ep) // after Close: discarded, no panic
}
