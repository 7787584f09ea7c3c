package router

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// fuzzSeeds are valid packets of every kind the router tells apart, as they
// arrive at p2 (a JAP for the test groups, and an IAP).
func fuzzSeeds() map[string][]byte {
	ap53 := netip.AddrPortFrom(anyIP, 53)
	ap53v6 := netip.AddrPortFrom(anyIP6, 53)
	frag := udp(client, ap53, "frag")
	frag[6] |= 0x20
	replica := encap(p1, p2, udp(client, netip.AddrPortFrom(anyIP, 5353), "replicate"))
	replica[4], replica[5] = replicaMark>>8, 3 // outer checksum not fixed: not checked
	return map[string][]byte{
		"iap-tcp4-syn":     pkt{src: client, dst: anyTCP, proto: ProtoTCP, flags: tcpSYN, mss: 1460}.build(),
		"iap-tcp6-syn":     pkt{src: client6, dst: anyTCP6, proto: ProtoTCP, flags: tcpSYN, mss: 1460, nopMSS: true}.build(),
		"iap-udp4":         udp(client, ap53, "query"),
		"iap-udp6":         udp(client6, ap53v6, "query"),
		"jap-tcp4":         encap(p1, p2, tcp(client, anyTCP, tcpSYN)),
		"jap-udp6":         encap(p1, p2, udp(client6, ap53v6, "q")),
		"reply-tcp4":       pkt{src: tgt, dst: client, proto: ProtoTCP, flags: tcpSYN | tcpACK, mss: 9000}.build(),
		"reply-udp6":       udp(tgt6, client6, "answer"),
		"iap-reply-udp4":   encap(p1, p2, udp(ap53, client, "answer")),
		"iap-reply-tcp6":   encap(p1, p2, tcp(anyTCP6, client6, tcpACK)),
		"control4":         udp(client, netip.AddrPortFrom(p2, ctrlPort), "JOIN"),
		"control6-anycast": udp(client6, netip.AddrPortFrom(anyIP6, ctrlPort), "JOIN"),
		"echo4-self":       echo(client.Addr(), p2, 8),
		"echo6-self":       echoTo(client6.Addr(), p2v6),
		"echo4-anycast":    echo(client.Addr(), anyIP, 8),
		"echo6-anycast":    echoTo(client6.Addr(), anyIP6),
		"fragment4":        frag,
		"jap-udp4-replica": replica,
		"iap-udp4-replica": udp(client, netip.AddrPortFrom(anyIP.Next(), 53), "replicate"),
		"encap-not-proxy":  encap(client.Addr(), p2, tcp(client, anyTCP, tcpSYN)),
	}
}

// TestWriteFuzzCorpus refreshes testdata/fuzz/FuzzRoute from fuzzSeeds
// when PIAS_WRITE_CORPUS is set.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("PIAS_WRITE_CORPUS") == "" {
		t.Skip("set PIAS_WRITE_CORPUS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzRoute")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range fuzzSeeds() {
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func fuzzRouter(t testing.TB) *Router {
	r := newRouter(t, []netip.Addr{p2, p2v6}, func(c *Config) { c.MaxFlows = 64; c.QueueLimit = 4 })
	for _, g := range []Group{gTCP, gUDP} {
		r.addTarget(g, tgt)
	}
	for _, g := range []Group{gTCP6, gUDP6} {
		r.addTarget(g, tgt6)
	}
	other := Group{Addr: anyIP.Next(), Port: 80, Proto: ProtoTCP}
	r.resolved(other, []JAP{{Addr: p3, Targets: 1}}, time.Hour, 0)
	// Replicated groups: served here (p2), and elsewhere.
	rep := Policy{Select: SelectAffinity, Replicate: 3}
	here := Group{Addr: anyIP, Port: 5353, Proto: ProtoUDP}
	r.SetPolicy(here, rep)
	r.AddTargetWeight(here, tgt, 2)
	r.addTarget(here, tgt2)
	r.ResolvedPolicy(Group{Addr: anyIP.Next(), Port: 53, Proto: ProtoUDP}, Policy{Select: SelectLoad, Replicate: 3},
		[]JAP{{Addr: p1, Targets: 1}, {Addr: p3, Targets: 2}}, time.Hour, 0)
	return r
}

func FuzzRoute(f *testing.F) {
	for _, b := range fuzzSeeds() {
		f.Add(b)
	}
	r := fuzzRouter(f)
	var now int64
	f.Fuzz(func(t *testing.T, data []byte) {
		now += int64(time.Second)
		buf := make([]byte, Headroom+len(data)+3)
		copy(buf[Headroom:], data)
		res := r.Route(buf, Headroom, Headroom+len(data), now)
		if res.Start < 0 || res.Start > res.End || res.End > len(buf) {
			t.Fatalf("result %+v out of bounds of a %d-byte buffer", res, len(buf))
		}
		switch res.Action {
		case Drop:
			if res.Reason == DropNone || res.Reason >= NumDropReasons {
				t.Fatalf("drop without a reason: %+v", res)
			}
		case Forward:
			// What goes out must parse again (as the next hop sees it).
			out := append([]byte(nil), buf[res.Start:res.End]...)
			var p parsed
			if reason := p.parse(out, 0, len(out)); reason != DropNone {
				t.Fatalf("forwarded a packet that does not parse (%v): % x", reason, out)
			}
			for i := range res.Copies {
				c := make([]byte, res.End-res.Start)
				start, end, ok := r.Copy(&res, i, c)
				if !ok {
					t.Fatalf("Copy %d of %+v failed", i, res)
				}
				if reason := p.parse(c, start, end); reason != DropNone {
					t.Fatalf("copy %d does not parse (%v): % x", i, reason, c[start:end])
				}
			}
		case Control:
			if res.Start < Headroom {
				t.Fatalf("control payload %+v before the packet", res)
			}
		case Queued:
			if res.Resolve && len(data)%2 == 0 {
				for _, p := range r.resolved(res.Group, []JAP{{Addr: p3, Targets: 1}}, time.Second, now) {
					var pp parsed
					if reason := pp.parse(p, 0, len(p)); reason != DropNone {
						t.Fatalf("Resolved forwarded a packet that does not parse: % x", p)
					}
				}
			}
		}
		if len(data)%7 == 0 {
			r.Expire(now)
		}
		// Targets move and leave, dropping their flows through the
		// indexes; the per-source counts and the indexes stay exact.
		switch len(data) % 11 {
		case 3:
			r.addTarget(gUDP, netip.AddrPortFrom(tgt.Addr(), tgt.Port()+uint16(now/int64(time.Second))%2))
		case 5:
			r.RemoveTarget(gTCP, tgt.Addr())
		case 6:
			r.addTarget(gTCP, tgt)
		}
		checkTables(t, r)
	})
}
