package router

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// family bundles the addresses of one test world, IPv4 or IPv6.
type family struct {
	name            string
	client, client2 netip.AddrPort
	any, anyUDP     netip.AddrPort
	tgt, tgt2       netip.AddrPort
	self            netip.Addr // p1's overlay address of this family
	encProto        uint8
	mss             uint16 // the clamp for MTU 1420
}

var families = []family{
	{
		name: "ipv4", client: client, client2: netip.MustParseAddrPort("100.64.1.11:40001"),
		any: anyTCP, anyUDP: netip.MustParseAddrPort("100.65.0.1:53"),
		tgt: tgt, tgt2: tgt2, self: p1, encProto: ProtoIPIP, mss: 1360,
	},
	{
		name: "ipv6", client: client6, client2: netip.MustParseAddrPort("[fd64::1:11]:40001"),
		any: anyTCP6, anyUDP: netip.MustParseAddrPort("[fd65::1]:53"),
		tgt: tgt6, tgt2: netip.MustParseAddrPort("[fd64::2:21]:8080"), self: p1v6, encProto: ProtoIPv6, mss: 1340,
	},
}

func group(ap netip.AddrPort, proto uint8) Group {
	return Group{Addr: ap.Addr(), Port: ap.Port(), Proto: proto}
}

func selfP1() []netip.Addr { return []netip.Addr{p1, p1v6} }
func selfP2() []netip.Addr { return []netip.Addr{p2, p2v6} }
func selfP3() []netip.Addr { return []netip.Addr{p3} }

func TestNewValidates(t *testing.T) {
	ok := Config{Self: selfP1(), Anycast: anycasts, ControlPort: ctrlPort}
	for name, mod := range map[string]func(*Config){
		"no IPv4 self":     func(c *Config) { c.Self = []netip.Addr{p1v6} },
		"invalid self":     func(c *Config) { c.Self = []netip.Addr{{}} },
		"self in anycast":  func(c *Config) { c.Self = []netip.Addr{anyIP} },
		"no control port":  func(c *Config) { c.ControlPort = 0 },
		"no anycast":       func(c *Config) { c.Anycast = nil },
		"invalid prefix":   func(c *Config) { c.Anycast = []netip.Prefix{{}} },
		"tiny MTU":         func(c *Config) { c.MTU = 100 },
		"negative flows":   func(c *Config) { c.MaxFlows = -1 },
		"negative timeout": func(c *Config) { c.Timeouts.UDP = -time.Second },
	} {
		c := ok
		mod(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(ok); err != nil {
		t.Fatal(err)
	}
}

func TestIAPColdCacheQueuesThenResolves(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			r := newRouter(t, selfP1())
			g := group(f.any, ProtoTCP)
			first := tcp(f.client, f.any, tcpSYN)
			second := tcp(f.client2, f.any, tcpSYN)

			res, _ := route(r, first, 0)
			if res.Action != Queued || !res.Resolve || res.Group != g {
				t.Fatalf("first packet: %+v, want Queued with Resolve for %v", res, g)
			}
			res, _ = route(r, second, 1)
			if res.Action != Queued || res.Resolve || res.Group != g {
				t.Fatalf("second packet: %+v, want Queued without Resolve", res)
			}
			out := r.resolved(g, []JAP{{Addr: p2, Targets: 3}}, time.Minute, 2)
			if len(out) != 2 {
				t.Fatalf("Resolved returned %d packets, want 2", len(out))
			}
			for i, want := range [][]byte{first, second} {
				d := decode(t, out[i])
				if d.src.Addr() != p1 || d.dst.Addr() != p2 || d.proto != f.encProto || d.ttl != 64 {
					t.Errorf("packet %d: outer %v → %v proto %d ttl %d", i, d.src, d.dst, d.proto, d.ttl)
				}
				if !bytes.Equal(d.inner, want) {
					t.Errorf("packet %d: inner changed:\n% x\n% x", i, d.inner, want)
				}
			}
			// The flow now goes straight to its JAP.
			d := decode(t, mustForward(t, r, tcp(f.client, f.any, tcpACK), 3))
			if d.dst.Addr() != p2 {
				t.Errorf("established packet went to %v", d.dst)
			}
			st := r.Stats()
			if st.Queued != 2 || st.Forwarded != 3 || st.IAPFlows != 2 {
				t.Errorf("stats %+v", st)
			}
			flows := r.Flows()
			if len(flows) != 2 || flows[0].Kind != "iap" || flows[0].JAP != p2 || flows[0].Group != g {
				t.Errorf("flows %+v", flows)
			}
		})
	}
}

func TestJAPDecapsulatesAndNATs(t *testing.T) {
	for _, f := range families {
		for _, proto := range []uint8{ProtoTCP, ProtoUDP} {
			t.Run(f.name+"/"+ProtoName(proto), func(t *testing.T) {
				r := newRouter(t, selfP2())
				dst := f.any
				if proto == ProtoUDP {
					dst = f.anyUDP
				}
				r.addTarget(group(dst, proto), f.tgt)
				inner := pkt{src: f.client, dst: dst, proto: proto, payload: []byte("payload!")}.build()
				out := mustForward(t, r, encap(p1, p2, inner), 0)
				d := decode(t, out)
				if d.src != f.client || d.dst != f.tgt || string(d.payload) != "payload!" {
					t.Errorf("NATed to %v → %v %q", d.src, d.dst, d.payload)
				}
				fl := r.Flows()
				if len(fl) != 1 || fl[0].Kind != "jap" || fl[0].IAP != p1 || fl[0].Target != f.tgt ||
					fl[0].ClientPortOut != f.client.Port() || fl[0].Client != f.client {
					t.Errorf("flows %+v", fl)
				}
			})
		}
	}
}

func TestUDPZeroChecksumStaysZero(t *testing.T) {
	r := newRouter(t, selfP2())
	g := group(families[0].anyUDP, ProtoUDP)
	r.addTarget(g, tgt)
	inner := pkt{src: client, dst: families[0].anyUDP, proto: ProtoUDP, payload: []byte("x"), udpZero: true}.build()
	out := mustForward(t, r, encap(p1, p2, inner), 0)
	if cs := out[20+6 : 20+8]; cs[0] != 0 || cs[1] != 0 {
		t.Errorf("UDP checksum %x, want 0", cs)
	}
	decode(t, out)
}

// world is an IAP (p1), a JAP (p2) and another IAP (p3), resolved.
type world struct {
	iap, jap, iap3 *Router
}

func newWorld(t *testing.T, f family, g Group) world {
	w := world{iap: newRouter(t, selfP1()), jap: newRouter(t, selfP2()), iap3: newRouter(t, selfP3())}
	w.jap.addTarget(g, f.tgt)
	w.iap.resolved(g, []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
	w.iap3.resolved(g, []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
	return w
}

// send carries a client packet client → IAP → JAP → target.
func (w world) send(t *testing.T, iap *Router, b []byte, now int64) decoded {
	t.Helper()
	enc := mustForward(t, iap, b, now)
	return decode(t, mustForward(t, w.jap, enc, now))
}

// answer carries a target's packet target → JAP → IAP → client and checks
// which IAP it went to.
func (w world) answer(t *testing.T, iap *Router, iapAddr netip.Addr, b []byte, now int64) decoded {
	t.Helper()
	enc := mustForward(t, w.jap, b, now)
	if d := decode(t, enc); d.src.Addr() != p2 || d.dst.Addr() != iapAddr {
		t.Fatalf("reply encapsulated %v → %v, want %v → %v", d.src.Addr(), d.dst.Addr(), p2, iapAddr)
	}
	return decode(t, mustForward(t, iap, enc, now))
}

func TestReplyPathRestoresAnycastAddress(t *testing.T) {
	for _, f := range families {
		for _, proto := range []uint8{ProtoTCP, ProtoUDP} {
			t.Run(f.name+"/"+ProtoName(proto), func(t *testing.T) {
				dst := f.any
				if proto == ProtoUDP {
					dst = f.anyUDP
				}
				w := newWorld(t, f, group(dst, proto))
				d := w.send(t, w.iap, pkt{src: f.client, dst: dst, proto: proto, flags: tcpSYN, payload: []byte("q")}.build(), 0)
				if d.dst != f.tgt || d.src != f.client {
					t.Fatalf("target got %v → %v", d.src, d.dst)
				}
				rep := pkt{src: f.tgt, dst: f.client, proto: proto, flags: tcpSYN | tcpACK, payload: []byte("answer")}.build()
				d = w.answer(t, w.iap, p1, rep, 1)
				if d.src != dst || d.dst != f.client || string(d.payload) != "answer" {
					t.Errorf("client got %v → %v %q", d.src, d.dst, d.payload)
				}
			})
		}
	}
}

func TestLocalIAPIsJAP(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			r := newRouter(t, selfP1())
			g := group(f.any, ProtoTCP)
			r.addTarget(g, f.tgt)
			// No resolve needed: the target is local.
			d := decode(t, mustForward(t, r, tcp(f.client, f.any, tcpSYN), 0))
			if d.src != f.client || d.dst != f.tgt {
				t.Fatalf("local delivery %v → %v", d.src, d.dst)
			}
			d = decode(t, mustForward(t, r, tcp(f.tgt, f.client, tcpSYN|tcpACK), 1))
			if d.src != f.any || d.dst != f.client {
				t.Fatalf("local reply %v → %v", d.src, d.dst)
			}
			kinds := map[string]Flow{}
			for _, fl := range r.Flows() {
				kinds[fl.Kind] = fl
			}
			if kinds["iap"].JAP != p1 || kinds["jap"].IAP != p1 {
				t.Errorf("flows %+v", r.Flows())
			}
			// Both tables saw both directions.
			mustForward(t, r, tcp(f.client, f.any, tcpACK), 2)
			for _, fl := range r.Flows() {
				if fl.State != "established" {
					t.Errorf("%s flow state %q", fl.Kind, fl.State)
				}
			}
		})
	}
}

func TestNeverTheSender(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			g := group(f.any, ProtoTCP)
			sender := netip.AddrPortFrom(f.tgt.Addr(), 50000) // a target calling its own group

			// At the JAP: its only target is the sender.
			jap := newRouter(t, selfP2())
			jap.addTarget(g, f.tgt)
			mustDrop(t, jap, encap(p1, p2, tcp(sender, f.any, tcpSYN)), 0, DropNoTarget)
			// With a second target the sender gets that one, every time.
			jap.addTarget(g, f.tgt2)
			for i := range 4 {
				s := netip.AddrPortFrom(sender.Addr(), uint16(50001+i))
				d := decode(t, mustForward(t, jap, encap(p1, p2, tcp(s, f.any, tcpSYN)), 0))
				if d.dst != f.tgt2 {
					t.Fatalf("sender sent to %v", d.dst)
				}
			}

			// At an IAP whose only local target is the sender: a remote JAP.
			iap := newRouter(t, selfP1())
			iap.addTarget(g, f.tgt)
			iap.resolved(g, []JAP{{Addr: p1, Targets: 1}, {Addr: p2, Targets: 1}}, time.Hour, 0)
			d := decode(t, mustForward(t, iap, tcp(sender, f.any, tcpSYN), 0))
			if d.dst.Addr() != p2 {
				t.Fatalf("sender's flow went to %v, want JAP %v", d.dst, p2)
			}
			// Only this proxy serves the group: nowhere to go.
			iap.resolved(g, []JAP{{Addr: p1, Targets: 1}}, time.Hour, 0)
			mustDrop(t, iap, tcp(netip.AddrPortFrom(sender.Addr(), 50009), f.any, tcpSYN), 0, DropNoTarget)
			// Other clients are served locally.
			d = decode(t, mustForward(t, iap, tcp(f.client, f.any, tcpSYN), 0))
			if d.dst != f.tgt {
				t.Fatalf("client went to %v", d.dst)
			}
		})
	}
}

func TestPortClashRemapsClientPort(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			jap := newRouter(t, selfP2())
			a1 := f.any
			a2 := netip.AddrPortFrom(f.any.Addr().Next(), f.any.Port()) // another anycast IP
			jap.addTarget(group(a1, ProtoTCP), f.tgt)
			jap.addTarget(group(a2, ProtoTCP), f.tgt) // the same service behind both

			d1 := decode(t, mustForward(t, jap, encap(p1, p2, tcp(f.client, a1, tcpSYN)), 0))
			d2 := decode(t, mustForward(t, jap, encap(p1, p2, tcp(f.client, a2, tcpSYN)), 0))
			if d1.src != f.client || d1.dst != f.tgt {
				t.Fatalf("first flow %v → %v", d1.src, d1.dst)
			}
			if d2.src.Addr() != f.client.Addr() || d2.dst != f.tgt || d2.src.Port() == f.client.Port() || d2.src.Port() < 1024 {
				t.Fatalf("second flow %v → %v: want a remapped source port", d2.src, d2.dst)
			}
			// Replies go back to the right group with the client's own port.
			for _, c := range []struct {
				port uint16
				any  netip.AddrPort
			}{{d1.src.Port(), a1}, {d2.src.Port(), a2}} {
				enc := mustForward(t, jap, tcp(f.tgt, netip.AddrPortFrom(f.client.Addr(), c.port), tcpACK), 1)
				d := decode(t, decode(t, enc).inner)
				if d.src != c.any || d.dst != f.client {
					t.Errorf("reply to port %d: %v → %v, want %v → %v", c.port, d.src, d.dst, c.any, f.client)
				}
			}
			// Packets of the remapped flow keep their port.
			d := decode(t, mustForward(t, jap, encap(p1, p2, tcp(f.client, a2, tcpACK)), 2))
			if d.src != d2.src {
				t.Errorf("remapped port changed: %v then %v", d2.src, d.src)
			}
		})
	}
}

// TestFlowSticksToTarget: a flow keeps its target while new flows go to
// others (under load, which alternates between equal targets; proximity
// would give this client's flows all one target).
func TestFlowSticksToTarget(t *testing.T) {
	jap := newRouter(t, selfP2())
	g := gUDP
	jap.SetPolicy(g, Policy{Select: SelectLoad})
	ap := netip.AddrPortFrom(g.Addr, g.Port)
	jap.addTarget(g, tgt)
	jap.addTarget(g, tgt2)
	seen := map[netip.AddrPort]int{}
	first := map[uint16]netip.AddrPort{}
	for round := range 3 {
		for port := uint16(1000); port < 1010; port++ {
			c := netip.AddrPortFrom(client.Addr(), port)
			d := decode(t, mustForward(t, jap, encap(p1, p2, udp(c, ap, "x")), int64(round)))
			if round == 0 {
				first[port] = d.dst
				seen[d.dst]++
			} else if first[port] != d.dst {
				t.Fatalf("flow from port %d moved from %v to %v", port, first[port], d.dst)
			}
		}
	}
	if seen[tgt] != 5 || seen[tgt2] != 5 {
		t.Errorf("equal targets under load: spread %v", seen)
	}
}

func TestClientMovesToAnotherIAP(t *testing.T) {
	f := families[0]
	g := group(f.any, ProtoTCP)
	w := newWorld(t, f, g)
	w.send(t, w.iap, tcp(f.client, f.any, tcpSYN), 0)
	w.answer(t, w.iap, p1, tcp(f.tgt, f.client, tcpSYN|tcpACK), 1)
	// The client's anycast route moves to p3; the flow's replies follow.
	d := w.send(t, w.iap3, tcp(f.client, f.any, tcpACK), 2)
	if d.dst != f.tgt {
		t.Fatalf("moved flow went to %v", d.dst)
	}
	d = w.answer(t, w.iap3, p3, tcp(f.tgt, f.client, tcpACK), 3)
	if d.src != f.any || d.dst != f.client {
		t.Errorf("reply via p3: %v → %v", d.src, d.dst)
	}
	if fl := w.jap.Flows(); len(fl) != 1 || fl[0].IAP != p3 {
		t.Errorf("JAP flows %+v", fl)
	}
}

func TestMSSClamp(t *testing.T) {
	for _, f := range families {
		for _, nop := range []bool{false, true} {
			name := f.name
			if nop {
				name += "/odd-offset"
			}
			t.Run(name, func(t *testing.T) {
				g := group(f.any, ProtoTCP)
				w := newWorld(t, f, g)
				syn := pkt{src: f.client, dst: f.any, proto: ProtoTCP, flags: tcpSYN, mss: 1460, nopMSS: nop}.build()
				enc := mustForward(t, w.iap, syn, 0)
				if d := decode(t, decode(t, enc).inner); d.mss != f.mss {
					t.Errorf("client SYN MSS %d at the IAP, want %d", d.mss, f.mss)
				}
				if d := decode(t, mustForward(t, w.jap, enc, 0)); d.mss != f.mss {
					t.Errorf("target got MSS %d", d.mss)
				}
				synack := pkt{src: f.tgt, dst: f.client, proto: ProtoTCP, flags: tcpSYN | tcpACK, mss: 9000, nopMSS: nop}.build()
				enc = mustForward(t, w.jap, synack, 1)
				if d := decode(t, decode(t, enc).inner); d.mss != f.mss {
					t.Errorf("target SYN-ACK MSS %d at the JAP, want %d", d.mss, f.mss)
				}
				// A small MSS and non-SYN packets are left alone.
				small := pkt{src: f.client2, dst: f.any, proto: ProtoTCP, flags: tcpSYN, mss: 536, nopMSS: nop}.build()
				if d := decode(t, decode(t, mustForward(t, w.iap, small, 2)).inner); d.mss != 536 {
					t.Errorf("small MSS became %d", d.mss)
				}
				ack := pkt{src: f.client, dst: f.any, proto: ProtoTCP, flags: tcpACK, mss: 1460, nopMSS: nop}.build()
				if d := decode(t, decode(t, mustForward(t, w.iap, ack, 3)).inner); d.mss != 1460 {
					t.Errorf("non-SYN MSS became %d", d.mss)
				}
			})
		}
	}
}

func TestMSSClampFollowsMTU(t *testing.T) {
	r := newRouter(t, selfP1(), func(c *Config) { c.MTU = 1280 })
	r.addTarget(gTCP, tgt)
	d := decode(t, mustForward(t, r, pkt{src: client, dst: anyTCP, proto: ProtoTCP, flags: tcpSYN, mss: 1460}.build(), 0))
	if d.mss != 1280-20-40 {
		t.Errorf("MSS %d", d.mss)
	}
}

func TestEchoSelf(t *testing.T) {
	r := newRouter(t, selfP1())
	for _, c := range []struct{ from, to netip.Addr }{{client.Addr(), p1}, {client6.Addr(), p1v6}} {
		req := echo(c.from, c.to, 8)
		if c.to.Is6() {
			req = pkt{src: netip.AddrPortFrom(c.from, 0), dst: netip.AddrPortFrom(c.to, 0), proto: ProtoICMPv6, icmpType: 128, payload: []byte("ping")}.build()
		}
		d := decode(t, mustForward(t, r, req, 0))
		want := uint8(0)
		if c.to.Is6() {
			want = 129
		}
		if d.src.Addr() != c.to || d.dst.Addr() != c.from || d.icmpType != want || d.ttl != 64 || string(d.payload) != "ping" {
			t.Errorf("echo reply %+v", d)
		}
	}
	mustDrop(t, r, echo(client.Addr(), p1, 13), 0, DropICMPUnsupported) // timestamp
	mustDrop(t, r, echo(client.Addr(), p1, 0), 0, DropICMPUnsupported)  // an echo reply
}

func echoTo(src, dst netip.Addr) []byte {
	if dst.Is4() {
		return echo(src, dst, 8)
	}
	return pkt{src: netip.AddrPortFrom(src, 0), dst: netip.AddrPortFrom(dst, 0), proto: ProtoICMPv6, icmpType: 128, payload: []byte("ping")}.build()
}

func TestEchoAnycast(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			a := f.any.Addr()
			eg := EchoGroup(a)
			r := newRouter(t, selfP1())

			// Unknown: queued while the echo group is resolved.
			res, _ := route(r, echoTo(f.client.Addr(), a), 0)
			if res.Action != Queued || !res.Resolve || res.Group != eg {
				t.Fatalf("echo to unresolved anycast: %+v", res)
			}
			out := r.resolved(eg, []JAP{{Addr: p2, Targets: 1}}, time.Minute, 1)
			if len(out) != 1 {
				t.Fatalf("resolved echo: %d packets", len(out))
			}
			if d := decode(t, out[0]); d.src.Addr() != a || d.dst.Addr() != f.client.Addr() {
				t.Errorf("echo reply %v → %v", d.src, d.dst)
			}
			// Live in the cache: answered at once.
			if d := decode(t, mustForward(t, r, echoTo(f.client.Addr(), a), 2)); d.src.Addr() != a {
				t.Errorf("echo reply from %v", d.src)
			}
			// Another IP on which no group lives.
			b := a.Next()
			route(r, echoTo(f.client.Addr(), b), 3)
			if out := r.resolved(EchoGroup(b), nil, time.Minute, 4); len(out) != 0 {
				t.Errorf("echo to a dead IP answered")
			}
			if st := r.Stats(); st.Drops[DropNoGroup] != 1 {
				t.Errorf("no-group drops %d", st.Drops[DropNoGroup])
			}
			mustDrop(t, r, echoTo(f.client.Addr(), b), 5, DropNoGroup)
			// A local target on the IP makes it live without any cache.
			c := a.Next().Next()
			r.addTarget(Group{Addr: c, Port: 7, Proto: ProtoUDP}, f.tgt)
			mustForward(t, r, echoTo(f.client.Addr(), c), 6)
		})
	}
}

func TestControl(t *testing.T) {
	r := newRouter(t, selfP1())
	for _, dst := range []netip.AddrPort{
		netip.AddrPortFrom(p1, ctrlPort), netip.AddrPortFrom(p1v6, ctrlPort),
		netip.AddrPortFrom(anyIP, ctrlPort), netip.AddrPortFrom(anyIP6, ctrlPort),
	} {
		src := client
		if dst.Addr().Is6() {
			src = client6
		}
		res, out := route(r, udp(src, dst, "JOIN me"), 0)
		if res.Action != Control || string(out) != "JOIN me" || res.Src != src || res.Dst != dst {
			t.Errorf("to %v: %+v %q", dst, res, out)
		}
	}
	if got := r.Stats().Control; got != 4 {
		t.Errorf("control count %d", got)
	}
	if len(r.Flows()) != 0 {
		t.Errorf("control made flows")
	}
	mustDrop(t, r, udp(client, netip.AddrPortFrom(p1, 9999), "x"), 0, DropNotForUs)
	mustDrop(t, r, tcp(client, netip.AddrPortFrom(p1, ctrlPort), tcpSYN), 0, DropNotForUs)
}

func TestBuildUDP(t *testing.T) {
	r := newRouter(t, selfP1())
	buf := make([]byte, 200)
	for _, c := range []struct{ src, dst netip.AddrPort }{
		{netip.AddrPortFrom(p2, 1234), netip.AddrPortFrom(p1, ctrlPort)},
		{netip.AddrPortFrom(p2v6, 1234), netip.AddrPortFrom(p1v6, ctrlPort)},
	} {
		n, err := BuildUDP(buf, c.src, c.dst, []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		d := decode(t, buf[:n])
		if d.src != c.src || d.dst != c.dst || string(d.payload) != "hello" || d.ttl != 64 {
			t.Errorf("built %+v", d)
		}
		if res, out := route(r, buf[:n], 0); res.Action != Control || string(out) != "hello" {
			t.Errorf("built packet routed %+v", res)
		}
	}
	if _, err := BuildUDP(buf, netip.AddrPortFrom(p1, 1), netip.AddrPortFrom(p1v6, 1), nil); err == nil {
		t.Error("mixed families accepted")
	}
	if _, err := BuildUDP(buf[:30], netip.AddrPortFrom(p1, 1), netip.AddrPortFrom(p2, 1), []byte("hello")); err == nil {
		t.Error("small buffer accepted")
	}
}

func TestEncapsulatedFromNonProxyDropped(t *testing.T) {
	r := newRouter(t, selfP2())
	r.addTarget(gTCP, tgt)
	// A client (or anything but a proxy) may not inject packets as an IAP.
	mustDrop(t, r, encap(client.Addr(), p2, tcp(client, anyTCP, tcpSYN)), 0, DropNotFromProxy)
	r.SetProxies([]netip.Addr{p2})
	mustDrop(t, r, encap(p1, p2, tcp(client, anyTCP, tcpSYN)), 0, DropNotFromProxy)
}

func TestNoFlowAndNotForUs(t *testing.T) {
	r := newRouter(t, selfP2())
	mustDrop(t, r, tcp(tgt, client, tcpACK), 0, DropNoFlow)
	mustDrop(t, r, tcp(netip.AddrPortFrom(p3, 5), client, tcpACK), 0, DropNotForUs)
	mustDrop(t, r, tcp(netip.AddrPortFrom(p3, 5), anyTCP, tcpSYN), 0, DropNotForUs) // a proxy is no client
	mustDrop(t, r, encap(p1, p2, tcp(client, tgt, tcpSYN)), 0, DropNotForUs)
	mustDrop(t, r, echo(client.Addr(), tgt.Addr(), 8), 0, DropICMPUnsupported)
	mustDrop(t, r, ipWrap(client.Addr(), anyIP, 47, []byte("gre gre gre")), 0, DropUnsupported)
	mustDrop(t, r, ipWrap(client.Addr(), anyIP, ProtoIPIP, tcp(client, anyTCP, 0)), 0, DropUnsupported)
}

func TestFragmentsDropped(t *testing.T) {
	r := newRouter(t, selfP1())
	r.addTarget(gUDP, tgt)
	ap := netip.AddrPortFrom(gUDP.Addr, gUDP.Port)
	mf := udp(client, ap, "first")
	mf[6] |= 0x20 // more fragments
	mustDrop(t, r, mf, 0, DropFragment)
	off := udp(client, ap, "later")
	off[6], off[7] = 0, 10 // offset 80
	mustDrop(t, r, off, 0, DropFragment)
	v6 := ipWrap(client6.Addr(), anyIP6, ipv6Fragment, []byte{ProtoUDP, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	mustDrop(t, r, v6, 0, DropFragment)
	inner := udp(client, ap, "inner")
	inner[6] |= 0x20
	mustDrop(t, r, encap(p2, p1, inner), 0, DropFragment)
}

func TestMalformed(t *testing.T) {
	good := tcp(client, anyTCP, tcpSYN)
	good6 := tcp(client6, anyTCP6, tcpSYN)
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	cases := map[string][]byte{
		"one byte":         {0x45},
		"version 5":        mod(good, func(b []byte) []byte { b[0] = 0x55; return b }),
		"IHL 4":            mod(good, func(b []byte) []byte { b[0] = 0x44; return b }),
		"IHL past length":  mod(good, func(b []byte) []byte { b[0] = 0x4f; return b[:40] }),
		"total > buffer":   mod(good, func(b []byte) []byte { return b[:len(b)-1] }),
		"short TCP":        ipWrap(client.Addr(), anyIP, ProtoTCP, make([]byte, 19)),
		"TCP offset big":   mod(good, func(b []byte) []byte { b[32] = 0xf0; return b }),
		"TCP offset small": mod(good, func(b []byte) []byte { b[32] = 0x40; return b }),
		"short UDP":        ipWrap(client.Addr(), anyIP, ProtoUDP, make([]byte, 7)),
		"UDP len big":      mod(udp(client, anyTCP, "x"), func(b []byte) []byte { b[25] = 200; return b }),
		"short ICMP":       ipWrap(client.Addr(), p1, ProtoICMP, make([]byte, 4)),
		"short IPv6":       good6[:39],
		"IPv6 len":         mod(good6, func(b []byte) []byte { b[5]++; return b }),
	}
	// An IPv4 packet announced as IPv6-in-IPv4.
	wrong := encap(p2, p1, good)
	wrong[9] = ProtoIPv6
	wrong[10], wrong[11] = 0, 0
	cases["inner family"] = wrong
	r := newRouter(t, selfP1())
	for name, b := range cases {
		t.Run(name, func(t *testing.T) { mustDrop(t, r, b, 0, DropMalformed) })
	}
	// Bad bounds from the caller.
	if res := r.Route(good, 10, 5, 0); res.Action != Drop || res.Reason != DropMalformed {
		t.Errorf("start > end: %+v", res)
	}
	if res := r.Route(good, 0, len(good)+1, 0); res.Action != Drop {
		t.Errorf("end past buffer: %+v", res)
	}
	// No headroom: nothing is written before the buffer.
	r.resolved(gTCP, []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
	if res := r.Route(append([]byte(nil), good...), 0, len(good), 0); res.Action != Drop || res.Reason != DropMalformed {
		t.Errorf("no headroom: %+v", res)
	}
}

func TestTimeouts(t *testing.T) {
	to := Timeouts{TCPSyn: 5 * time.Second, TCPEstablished: 100 * time.Second, TCPClosing: 2 * time.Second, UDP: 10 * time.Second}
	for _, c := range []struct {
		name  string
		flows func(t *testing.T, r *Router)
		alive float64 // still there just before
		gone  float64 // gone just after
	}{
		{"udp", func(t *testing.T, r *Router) {
			mustForward(t, r, udp(client, netip.AddrPortFrom(anyIP, 53), "x"), 0)
		}, 9.9, 10.1},
		{"tcp-syn", func(t *testing.T, r *Router) {
			mustForward(t, r, tcp(client, anyTCP, tcpSYN), 0)
		}, 4.9, 5.1},
		{"tcp-established", func(t *testing.T, r *Router) {
			mustForward(t, r, tcp(client, anyTCP, tcpSYN), 0)
			mustForward(t, r, tcp(tgt, client, tcpSYN|tcpACK), 0)
			mustForward(t, r, tcp(client, anyTCP, tcpACK), 0)
		}, 99, 101},
		{"tcp-fin-both", func(t *testing.T, r *Router) {
			mustForward(t, r, tcp(client, anyTCP, tcpSYN), 0)
			mustForward(t, r, tcp(tgt, client, tcpSYN|tcpACK), 0)
			mustForward(t, r, tcp(client, anyTCP, tcpACK), 0)
			mustForward(t, r, tcp(client, anyTCP, tcpFIN|tcpACK), 0)
			mustForward(t, r, tcp(tgt, client, tcpFIN|tcpACK), 0)
		}, 1.9, 2.1},
		{"tcp-rst", func(t *testing.T, r *Router) {
			mustForward(t, r, tcp(client, anyTCP, tcpSYN), 0)
			mustForward(t, r, tcp(tgt, client, tcpSYN|tcpACK), 0)
			mustForward(t, r, tcp(client, anyTCP, tcpACK), 0)
			mustForward(t, r, tcp(tgt, client, tcpRST), 0)
		}, 1.9, 2.1},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRouter(t, selfP1(), func(cfg *Config) { cfg.Timeouts = to })
			r.addTarget(gTCP, tgt)
			r.addTarget(gUDP, tgt)
			c.flows(t, r)
			r.Expire(sec(c.alive))
			if st := r.Stats(); st.IAPFlows != 1 || st.JAPFlows != 1 {
				t.Fatalf("at %vs: %d IAP, %d JAP flows, want 1 and 1", c.alive, st.IAPFlows, st.JAPFlows)
			}
			r.Expire(sec(c.gone))
			if st := r.Stats(); st.IAPFlows != 0 || st.JAPFlows != 0 {
				t.Fatalf("at %vs: %d IAP, %d JAP flows, want none", c.gone, st.IAPFlows, st.JAPFlows)
			}
			// The reply index went with the flow.
			mustDrop(t, r, tcp(tgt, client, tcpACK), sec(c.gone), DropNoFlow)
		})
	}
}

func TestFlowActivityKeepsItAlive(t *testing.T) {
	r := newRouter(t, selfP1())
	r.addTarget(gUDP, tgt)
	ap := netip.AddrPortFrom(anyIP, 53)
	for s := 0.0; s < 300; s += 30 {
		mustForward(t, r, udp(client, ap, "x"), sec(s))
		r.Expire(sec(s + 1))
	}
	if st := r.Stats(); st.IAPFlows != 1 || st.JAPFlows != 1 {
		t.Fatalf("active flow expired: %+v", st)
	}
}

func TestNewSYNReopensClosedFlow(t *testing.T) {
	r := newRouter(t, selfP1())
	r.addTarget(gTCP, tgt)
	mustForward(t, r, tcp(client, anyTCP, tcpSYN), 0)
	mustForward(t, r, tcp(tgt, client, tcpRST|tcpACK), 0)
	if fl := r.Flows(); fl[0].State != "closing" {
		t.Fatalf("state %q", fl[0].State)
	}
	mustForward(t, r, tcp(client, anyTCP, tcpSYN), 1)
	for _, fl := range r.Flows() {
		if fl.State != "syn" {
			t.Errorf("%s state after a new SYN: %q", fl.Kind, fl.State)
		}
	}
}

func TestEvictionAtCap(t *testing.T) {
	r := newRouter(t, selfP1(), func(c *Config) { c.MaxFlows = 4 })
	r.resolved(gUDP, []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
	ap := netip.AddrPortFrom(anyIP, 53)
	for i := range 10 { // ten clients, a flow each
		mustForward(t, r, udp(clientN(true, i, 1000), ap, "x"), sec(float64(i)))
	}
	st := r.Stats()
	if st.IAPFlows != 4 || st.Evicted != 6 {
		t.Fatalf("%d flows, %d evicted; want 4 and 6", st.IAPFlows, st.Evicted)
	}
	// With 4 flows the sample sees them all: the newest four survive.
	var clients []netip.Addr
	for _, f := range r.Flows() {
		clients = append(clients, f.Client.Addr())
	}
	slices.SortFunc(clients, netip.Addr.Compare)
	want := []netip.Addr{clientN(true, 6, 0).Addr(), clientN(true, 7, 0).Addr(), clientN(true, 8, 0).Addr(), clientN(true, 9, 0).Addr()}
	if !slices.Equal(clients, want) {
		t.Errorf("survivors %v", clients)
	}
}

// TestEvictionHeaviestSourceFirst: a full table evicts from the source
// with the most flows, however fresh they are; a source at its share (a
// quarter of the table) evicts its own stalest flow.
func TestEvictionHeaviestSourceFirst(t *testing.T) {
	r := newRouter(t, selfP1(), func(c *Config) { c.MaxFlows = 8 }) // 2 per source
	r.resolved(gUDP, []JAP{{Addr: p2, Targets: 1}}, time.Hour, 0)
	ap := netip.AddrPortFrom(anyIP, 53)
	for i := range 6 { // six light sources, the oldest flows
		mustForward(t, r, udp(clientN(true, i, 1000), ap, "x"), sec(float64(i)))
	}
	heavy := clientN(true, 100, 0).Addr()
	for i := range 5 { // the heavy one holds 2: its two newest
		mustForward(t, r, udp(netip.AddrPortFrom(heavy, uint16(2000+i)), ap, "x"), sec(float64(10+i)))
	}
	count := func() map[netip.Addr][]uint16 {
		m := map[netip.Addr][]uint16{}
		for _, f := range r.Flows() {
			m[f.Client.Addr()] = append(m[f.Client.Addr()], f.Client.Port())
		}
		for _, ps := range m {
			slices.Sort(ps)
		}
		return m
	}
	if m := count(); len(m) != 7 || !slices.Equal(m[heavy], []uint16{2003, 2004}) {
		t.Fatalf("flows %v", m)
	}
	// The table is full. A new light source takes its room from the heavy
	// source, though the light sources' flows are older.
	mustForward(t, r, udp(clientN(true, 6, 1000), ap, "x"), sec(20))
	m := count()
	if len(m) != 8 || len(m[heavy]) != 1 {
		t.Fatalf("flows %v", m)
	}
	for i := range 7 {
		if c := clientN(true, i, 1000); !slices.Equal(m[c.Addr()], []uint16{1000}) {
			t.Errorf("client %v lost its flow: %v", c, m)
		}
	}
	if st := r.Stats(); st.IAPFlows != 8 || st.Evicted != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestEvictionJAPFreesReplyIndex(t *testing.T) {
	r := newRouter(t, selfP2(), func(c *Config) { c.MaxFlows = 2 })
	r.addTarget(gUDP, tgt)
	ap := netip.AddrPortFrom(anyIP, 53)
	for i := range 5 {
		mustForward(t, r, encap(p1, p2, udp(netip.AddrPortFrom(client.Addr(), uint16(1000+i)), ap, "x")), sec(float64(i)))
	}
	// One source may hold a quarter of a table, and at least one flow: each
	// flow evicted the one before.
	mustDrop(t, r, udp(tgt, netip.AddrPortFrom(client.Addr(), 1000), "x"), sec(5), DropNoFlow)
	mustDrop(t, r, udp(tgt, netip.AddrPortFrom(client.Addr(), 1003), "x"), sec(5), DropNoFlow)
	mustForward(t, r, udp(tgt, netip.AddrPortFrom(client.Addr(), 1004), "x"), sec(5))
	if st := r.Stats(); st.JAPFlows != 1 || st.Evicted != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestStaleQueueExpires(t *testing.T) {
	r := newRouter(t, selfP1(), func(c *Config) { c.QueueLimit = 2 })
	syn := tcp(client, anyTCP, tcpSYN)
	if res, _ := route(r, syn, 0); !res.Resolve {
		t.Fatal("no resolve asked")
	}
	route(r, syn, 1)
	mustDrop(t, r, syn, 2, DropQueueFull)
	r.Expire(sec(2.9))
	if res, _ := route(r, syn, sec(2.95)); res.Action != Drop || res.Reason != DropQueueFull {
		t.Fatalf("queue gone too early: %+v", res)
	}
	r.Expire(sec(3.1))
	if st := r.Stats(); st.Drops[DropResolveTimeout] != 2 {
		t.Errorf("resolve-timeout drops %d, want 2", st.Drops[DropResolveTimeout])
	}
	if res, _ := route(r, syn, sec(3.2)); res.Action != Queued || !res.Resolve {
		t.Errorf("after expiry: %+v, want a new resolve", res)
	}
	// A late answer to the first resolve finds nothing queued beyond the new packet.
	if out := r.resolved(gTCP, []JAP{{Addr: p2, Targets: 1}}, time.Minute, sec(3.3)); len(out) != 1 {
		t.Errorf("Resolved returned %d packets", len(out))
	}
}

func TestStaleQueueWithoutExpire(t *testing.T) {
	r := newRouter(t, selfP1())
	syn := tcp(client, anyTCP, tcpSYN)
	route(r, syn, 0)
	if res, _ := route(r, syn, sec(3.5)); res.Action != Queued || !res.Resolve {
		t.Errorf("a resolve older than 3 s is asked again: %+v", res)
	}
	if st := r.Stats(); st.Drops[DropResolveTimeout] != 1 {
		t.Errorf("resolve-timeout drops %d", st.Drops[DropResolveTimeout])
	}
}

func TestNegativeCache(t *testing.T) {
	r := newRouter(t, selfP1(), func(c *Config) { c.NegativeTTL = 2 * time.Second })
	route(r, tcp(client, anyTCP, tcpSYN), 0)
	if out := r.resolved(gTCP, nil, time.Hour, 0); len(out) != 0 {
		t.Fatalf("unknown group forwarded")
	}
	mustDrop(t, r, tcp(client, anyTCP, tcpSYN), sec(1), DropNoGroup)
	if res, _ := route(r, tcp(client, anyTCP, tcpSYN), sec(2.1)); res.Action != Queued || !res.Resolve {
		t.Errorf("after NegativeTTL: %+v", res)
	}
	// JAPs without targets: the group exists, but there is nowhere to go.
	r.resolved(gTCP, []JAP{{Addr: p2}}, time.Hour, sec(3))
	mustDrop(t, r, tcp(client, anyTCP, tcpSYN), sec(3), DropNoTarget)
	// Expired positive entries are resolved again; Invalidate forgets at once.
	r.resolved(gTCP, []JAP{{Addr: p2, Targets: 1}}, time.Second, sec(4))
	mustForward(t, r, tcp(client2(), anyTCP, tcpSYN), sec(4.5))
	if res, _ := route(r, tcp(client2Port(2), anyTCP, tcpSYN), sec(5.5)); res.Action != Queued {
		t.Errorf("expired entry used: %+v", res)
	}
	r.resolved(gTCP, []JAP{{Addr: p2, Targets: 1}}, time.Hour, sec(6))
	r.Invalidate(gTCP)
	if res, _ := route(r, tcp(client2Port(3), anyTCP, tcpSYN), sec(6)); res.Action != Queued || !res.Resolve {
		t.Errorf("after Invalidate: %+v", res)
	}
}

func client2() netip.AddrPort { return client2Port(1) }
func client2Port(i uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("100.64.1.99"), 30000+i)
}

func TestJAPChoiceByHash(t *testing.T) {
	// Under SelectLoad, two IAPs with the same JAPs (in any order) send a
	// flow to the same JAP, and flows spread over the JAPs by weight.
	a, b := newRouter(t, selfP1()), newRouter(t, selfP3())
	load := Policy{Select: SelectLoad}
	a.ResolvedPolicy(gUDP, load, []JAP{{Addr: p2, Targets: 1}, {Addr: p3, Targets: 4, Weight: 1}}, time.Hour, 0)
	b.ResolvedPolicy(gUDP, load, []JAP{{Addr: p1, Targets: 1}, {Addr: p2, Targets: 4, Weight: 1}, {Addr: p3, Targets: 0}}, time.Hour, 0)
	ap := netip.AddrPortFrom(anyIP, 53)
	seen := map[netip.Addr]int{}
	for i := range 200 {
		c := netip.AddrPortFrom(client.Addr(), uint16(2000+i))
		da := decode(t, mustForward(t, a, udp(c, ap, "x"), 0))
		seen[da.dst.Addr()]++
		// b has p1 and p2 (p3 has no targets); a has p2 and p3.
		if da.dst.Addr() == p2 {
			if db := decode(t, mustForward(t, b, udp(c, ap, "x"), 0)); db.dst.Addr() != p2 && db.dst.Addr() != p1 {
				t.Fatalf("b chose %v", db.dst)
			}
		}
	}
	if seen[p2] < 60 || seen[p3] < 60 {
		t.Errorf("spread %v", seen)
	}
	// Same list, different order: same choices.
	c2 := newRouter(t, selfP3())
	c2.ResolvedPolicy(gUDP, load, []JAP{{Addr: p2, Targets: 1}, {Addr: p1, Targets: 1}}, time.Hour, 0)
	for i := range 50 {
		c := netip.AddrPortFrom(client.Addr(), uint16(3000+i))
		x := decode(t, mustForward(t, b, udp(c, ap, "x"), 0)).dst.Addr()
		y := decode(t, mustForward(t, c2, udp(c, ap, "x"), 0)).dst.Addr()
		if x != y {
			t.Fatalf("same JAP list, different choice: %v and %v", x, y)
		}
	}
}

func TestRemoveTargetDropsFlows(t *testing.T) {
	r := newRouter(t, selfP2())
	if !r.addTarget(gUDP, tgt) || !r.addTarget(gUDP, tgt2) {
		t.Fatal("addTarget of new targets returned false")
	}
	if r.addTarget(gUDP, netip.AddrPortFrom(tgt.Addr(), 9090)) {
		t.Error("addTarget of a present target returned true")
	}
	if got := r.Targets(gUDP); len(got) != 2 || got[0].Port() != 9090 {
		t.Errorf("targets %v", got)
	}
	if r.addTarget(gUDP, tgt6) {
		t.Error("an IPv6 target joined an IPv4 group")
	}
	ap := netip.AddrPortFrom(anyIP, 53)
	d := decode(t, mustForward(t, r, encap(p1, p2, udp(client, ap, "x")), 0))
	if !r.RemoveTarget(gUDP, d.dst.Addr()) || r.RemoveTarget(gUDP, d.dst.Addr()) {
		t.Fatal("RemoveTarget results wrong")
	}
	if st := r.Stats(); st.JAPFlows != 0 {
		t.Fatalf("flow to a removed target kept")
	}
	d2 := decode(t, mustForward(t, r, encap(p1, p2, udp(client, ap, "x")), 1))
	if d2.dst.Addr() == d.dst.Addr() {
		t.Errorf("flow still goes to the removed target")
	}
	r.RemoveTarget(gUDP, d2.dst.Addr())
	mustDrop(t, r, encap(p1, p2, udp(client, ap, "x")), 2, DropNoTarget)
	if len(r.Targets(gUDP)) != 0 {
		t.Errorf("targets left")
	}
}

func TestSetProxiesDropsFlowsToGoneJAP(t *testing.T) {
	r := newRouter(t, selfP1())
	r.resolved(gUDP, []JAP{{Addr: p2, Targets: 1}, {Addr: p3, Targets: 1}}, time.Hour, 0)
	ap := netip.AddrPortFrom(anyIP, 53)
	for i := range 20 {
		mustForward(t, r, udp(netip.AddrPortFrom(client.Addr(), uint16(1000+i)), ap, "x"), 0)
	}
	r.SetProxies([]netip.Addr{p1, p2})
	for _, f := range r.Flows() {
		if f.JAP != p2 {
			t.Fatalf("flow to gone proxy %v kept", f.JAP)
		}
	}
	for i := range 20 {
		d := decode(t, mustForward(t, r, udp(netip.AddrPortFrom(client.Addr(), uint16(1000+i)), ap, "x"), 1))
		if d.dst.Addr() != p2 {
			t.Fatalf("new flow to %v", d.dst)
		}
	}
}

func TestDropReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for d := DropReason(0); d < NumDropReasons; d++ {
		s := d.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("reason %d named %q", d, s)
		}
		seen[s] = true
	}
	for _, want := range []string{"malformed", "fragment", "unsupported", "not-for-us", "no-flow", "no-group",
		"no-target", "queue-full", "resolve-timeout", "not-from-proxy", "icmp-unsupported", "no-port", "resolve-limit", "queue-bytes", "flow-rate"} {
		if !seen[want] {
			t.Errorf("no reason %q", want)
		}
	}
}
