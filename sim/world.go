package sim

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/overlay/overlaytest"
	"github.com/pias-net/pias/router"
)

// The simulated world: proxies running the real overlay.Proxy, each a host
// of one overlaytest.Net on one overlaytest.Clock. Only time and the
// network are simulated; WireGuard, sockets and goroutines are left out.

// ControlPort is the control port of every simulated proxy.
const ControlPort = 51821

// Group is the anycast group of the fig6 event.
var Group = router.Group{Addr: netip.MustParseAddr("100.65.0.1"), Port: 80, Proto: router.ProtoTCP}

var anycastPrefix = netip.MustParsePrefix("100.65.0.0/16")

// ProxyName names proxy i so that names sort as indexes do.
func ProxyName(i int) string { return fmt.Sprintf("p%05d", i) }

// proxyIndex is the i of ProxyName(i).
func proxyIndex(name string) (int, bool) {
	if len(name) < 6 || name[0] != 'p' || name[1] < '0' || name[1] > '9' {
		return 0, false // no sign either
	}
	i, err := strconv.Atoi(name[1:])
	return i, err == nil
}

// proxyMember is proxy i: overlay address 100.64.0.0 + i + 1, in cluster
// i / clusterSize.
func proxyMember(i, clusterSize int) overlay.Member {
	a := uint32(i + 1)
	return overlay.Member{Name: ProxyName(i), Addr: netip.AddrFrom4([4]byte{100, 64 + byte(a>>16), byte(a >> 8), byte(a)}),
		Cluster:   fmt.Sprintf("c%04d", i/max(clusterSize, 1)),
		PublicKey: [32]byte{0xee, byte(i), byte(i >> 8), byte(i >> 16)}}
}

// edgeAddr is member slot s's address: 10.0.0.0 + s + 1.
func edgeAddr(s int) netip.Addr {
	a := uint32(0x0a000000) + uint32(s) + 1
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}

// world is the clock, the network and the proxies.
type world struct {
	clk     *overlaytest.Clock
	net     *overlaytest.Net
	proxies []*simProxy
	byName  map[string]int
	// sent counts control messages put on the network, by type; dropped
	// those the world kept off it on purpose (see simProxy.Send).
	sent, withheld [64]uint64
	// withhold, if set, says which types the world keeps off the network.
	withhold func(overlay.Type) bool
	// skipIdle: tickEvery skips a proxy until its Proxy.TickDue, kept in
	// due after each of its entry points. A skipped Tick would do nothing,
	// so the run is the same, minus most of its Ticks.
	skipIdle bool
	due      []int64
}

func newWorld(seed uint64, link overlaytest.Link) *world {
	clk := overlaytest.NewClock()
	// Zero times mean "never" in places: start an hour on.
	clk.Advance(time.Hour)
	w := &world{clk: clk, net: overlaytest.NewNet(clk, seed), byName: map[string]int{}}
	w.net.SetDefault(link)
	return w
}

// simProxy is a proxy and its host; it is the proxy's Transport.
type simProxy struct {
	w    *world
	idx  int
	m    overlay.Member
	p    *overlay.Proxy
	host *overlaytest.Host
}

// Send puts a control message on the simulated network, counting it by
// type, unless the world withholds its type.
func (s *simProxy) Send(src, dst netip.AddrPort, payload []byte) {
	if len(payload) < overlay.HeaderLen {
		return
	}
	t := overlay.Type(payload[3])
	if s.w.withhold != nil && s.w.withhold(t) {
		s.w.withheld[t&63]++
		return
	}
	s.w.sent[t&63]++
	s.w.net.Send(src, dst, payload)
}

func (s *simProxy) Forward(pkt []byte)                             {}
func (s *simProxy) SendUnderlay(to netip.AddrPort, pkt []byte)     {}
func (s *simProxy) AddPeer(m overlay.Member, keepalive bool) error { return nil }

// addProxy adds proxy m with cfg (Self, ControlPort, Router, Clock and
// Transport are filled in here).
func (w *world) addProxy(m overlay.Member, cfg overlay.ProxyConfig) (*simProxy, error) {
	s := &simProxy{w: w, idx: len(w.proxies), m: m}
	r, err := router.New(router.Config{Self: []netip.Addr{m.Addr}, Anycast: []netip.Prefix{anycastPrefix}, ControlPort: ControlPort})
	if err != nil {
		return nil, err
	}
	cfg.Self, cfg.ControlPort, cfg.Router, cfg.Clock, cfg.Transport = m, ControlPort, r, w.clk, s
	p, err := overlay.NewProxy(cfg)
	if err != nil {
		return nil, err
	}
	s.p = p
	s.host = w.net.AddHost(m.Name, m.Addr)
	s.host.Handle(func(src, dst netip.AddrPort, b []byte) { s.handle(src, dst, b) })
	w.proxies = append(w.proxies, s)
	w.due = append(w.due, 0)
	w.byName[m.Name] = s.idx
	return s, nil
}

// handle gives the proxy a control message, as if from the network.
func (s *simProxy) handle(src, dst netip.AddrPort, b []byte) {
	s.p.HandleControl(src, dst, b)
	s.noteDue()
}

// noteDue keeps the proxy's TickDue after one of its entry points ran.
func (s *simProxy) noteDue() {
	if s.w.skipIdle {
		s.w.due[s.idx] = s.p.TickDue()
	}
}

// tickEvery runs f for every up proxy every d, staggered over d so that
// the proxies do not all tick at one instant: in up to tickSlots slots,
// each one timer for its proxies (a timer per proxy made the clock's heap
// a tenth of a large run's cost).
func (w *world) tickEvery(d time.Duration, f func(*simProxy)) {
	n := len(w.proxies)
	slots := min(n, tickSlots)
	for k := range slots {
		ps := w.proxies[k*n/slots : (k+1)*n/slots]
		tick := func() {
			now := w.clk.Now()
			for _, s := range ps {
				if s.host.IsUp() && (!w.skipIdle || w.due[s.idx] <= now) {
					f(s)
					s.noteDue()
				}
			}
		}
		off := time.Duration(int64(d) * int64(k) / int64(slots))
		w.clk.AfterFunc(off, func() {
			tick()
			w.clk.Every(d, tick)
		})
	}
}

// tickSlots is how many instants a tick period is spread over.
const tickSlots = 1000

// totalSent is the number of control messages put on the network.
func (w *world) totalSent() uint64 {
	var n uint64
	for _, c := range w.sent {
		n += c
	}
	return n
}
