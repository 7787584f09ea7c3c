package tunnel

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// These tests need root. Each one that makes interfaces or routes runs in a
// network namespace of its own, never in the host's.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// inNewNetns moves the calling test's goroutine, locked to its thread, into
// a fresh network namespace until the test ends, and returns a netlink
// handle on that namespace. Subtests run on goroutines of their own and must
// call it themselves.
func inNewNetns(t *testing.T) *netlink.Handle {
	t.Helper()
	needRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	runtime.LockOSThread()
	origin, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("current netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		origin.Close()
		runtime.UnlockOSThread()
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(origin); err != nil {
			// Keep the thread locked: it ends with this goroutine instead
			// of running anything else in the test namespace.
			t.Errorf("restore netns: %v", err)
		} else {
			runtime.UnlockOSThread()
		}
		origin.Close()
		ns.Close()
	})
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink: %v", err)
	}
	t.Cleanup(h.Close)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return h
}

var (
	edgeAddrs  = []netip.Addr{netip.MustParseAddr("100.64.1.1"), netip.MustParseAddr("fd64::1:1")}
	edgeRoutes = []netip.Prefix{
		netip.MustParsePrefix("100.65.0.0/16"), netip.MustParsePrefix("fd65::/64"),
		netip.MustParsePrefix("100.64.0.0/16"), netip.MustParsePrefix("fd64::/64"),
	}
)

func TestKernelTUN(t *testing.T) {
	for _, driver := range []string{DriverTUN, DriverWater} {
		t.Run(driver, func(t *testing.T) { testKernelTUN(t, driver) })
	}
}

func testKernelTUN(t *testing.T, driver string) {
	h := inNewNetns(t)
	const name = "pias-test0"
	host, err := NewKernelTUN(driver, name, edgeAddrs, edgeRoutes, 1400)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	if host.Net != nil || host.TUN == nil || host.Name != name {
		t.Fatalf("host %+v", host)
	}
	if n, err := host.TUN.Name(); err != nil || n != name {
		t.Errorf("TUN name %q, %v", n, err)
	}

	// The interface, its addresses and its routes are in place.
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if a := link.Attrs(); a.MTU != 1400 || a.Flags&net.FlagUp == 0 {
		t.Errorf("link mtu %d flags %v", a.MTU, a.Flags)
	}
	if got := linkAddrs(t, h, link); fmt.Sprint(got) != "[100.64.1.1/32 fd64::1:1/128]" {
		t.Errorf("addresses %v", got)
	}
	if got := linkRoutes(t, h, link); fmt.Sprint(got) != "[100.64.0.0/16 100.65.0.0/16 fd64::/64 fd65::/64]" {
		t.Errorf("routes %v", got)
	}

	// The kernel sends what it routes to an anycast address into the TUN.
	pkts := readTUN(host.TUN)
	for _, dst := range []string{"100.65.0.1:9", "[fd65::1]:9"} {
		to := netip.MustParseAddrPort(dst)
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		payload := "to " + dst
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
		wantSrc := edgeAddrs[0]
		if to.Addr().Is6() {
			wantSrc = edgeAddrs[1]
		}
		waitPacket(t, pkts, func(p udpPacket) bool {
			return p.dst == to && p.src.Addr() == wantSrc && p.payload == payload
		}, "UDP to "+dst)
	}

	// What the TUN is given reaches programs listening on overlay addresses.
	for _, tc := range []struct{ from, to string }{
		{"100.65.0.1:80", "100.64.1.1:5000"},
		{"[fd65::1]:80", "[fd64::1:1]:5000"},
		{"100.64.0.9:1234", "100.64.1.1:5001"},
	} {
		from, to := netip.MustParseAddrPort(tc.from), netip.MustParseAddrPort(tc.to)
		l, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(to))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		payload := "from " + tc.from
		pkt := buildUDP(from, to, []byte(payload))
		const offset = 16 // what wireguard-go uses; the tun driver needs room for its virtio header
		buf := append(make([]byte, offset), pkt...)
		if _, err := host.TUN.Write([][]byte{buf}, offset); err != nil { // (wireguard-go's tun counts bytes, not packets)
			t.Fatalf("Write: %v", err)
		}
		l.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 1500)
		n, src, err := l.ReadFromUDPAddrPort(b)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.to, err, nonzeroSNMP6())
		}
		if src != from || string(b[:n]) != payload {
			t.Errorf("got %q from %s, want %q from %s", b[:n], src, payload, from)
		}
	}

	// Unconfiguring removes exactly what was added; the link stays until
	// the TUN closes.
	ot := host.TUN.(*onceTUN)
	if err := ot.before(); err != nil {
		t.Fatal(err)
	}
	if got := linkAddrs(t, h, link); len(got) != 0 {
		t.Errorf("addresses left: %v", got)
	}
	if got := linkRoutes(t, h, link); len(got) != 0 {
		t.Errorf("routes left: %v", got)
	}
	if _, err := h.LinkByName(name); err != nil {
		t.Errorf("link gone before the TUN closed: %v", err)
	}
	// Close (whose unconfiguring has run already) closes the TUN: the
	// interface disappears. Every further Close is harmless.
	if err := host.TUN.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := host.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.LinkByName(name); err == nil {
		t.Error("interface still there after Close")
	}
	if got := allRoutes(t, h); len(got) != 0 {
		t.Errorf("routes left: %v", got)
	}
}

// Closing the Host removes its routes before the interface goes (the kernel
// drops IPv4 routes of a vanishing link silently, so a deletion notice for
// each route ahead of the link's shows that Close removed them itself).
func TestKernelTUNClose(t *testing.T) {
	for _, driver := range []string{DriverTUN, DriverWater} {
		t.Run(driver, func(t *testing.T) {
			h := inNewNetns(t)
			const name = "pias-test1"
			host, err := NewKernelTUN(driver, name, edgeAddrs, edgeRoutes, 1420)
			if err != nil {
				t.Fatal(err)
			}
			link, err := h.LinkByName(name)
			if err != nil {
				host.Close()
				t.Fatal(err)
			}
			index := int32(link.Attrs().Index)
			sock, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE)
			if err != nil {
				host.Close()
				t.Fatal(err)
			}
			defer sock.Close()
			sock.SetReceiveTimeout(&unix.Timeval{Sec: 5})
			if err := host.Close(); err != nil {
				t.Fatal(err)
			}
			if err := host.Close(); err != nil {
				t.Fatal(err)
			}
			deleted := map[string]bool{}
			for linkGone := false; !linkGone; {
				msgs, _, err := sock.Receive()
				if err != nil {
					t.Fatalf("waiting for the link to go (routes deleted: %v): %v", deleted, err)
				}
				for _, m := range msgs {
					switch m.Header.Type {
					case unix.RTM_DELLINK:
						if nl.DeserializeIfInfomsg(m.Data).Index == index {
							linkGone = true
						}
					case unix.RTM_DELROUTE:
						if !linkGone {
							if dst, ok := delRoute(m.Data, index); ok {
								deleted[dst] = true
							}
						}
					}
				}
			}
			for _, p := range edgeRoutes {
				if !deleted[p.String()] {
					t.Errorf("route %s not removed before the interface went (removed: %v)", p, deleted)
				}
			}
			if _, err := h.LinkByName(name); err == nil {
				t.Error("interface still there after Close")
			}
		})
	}
}

// delRoute is the destination prefix of a main-table route through oif.
func delRoute(b []byte, oif int32) (string, bool) {
	if len(b) < unix.SizeofRtMsg {
		return "", false
	}
	rt := nl.DeserializeRtMsg(b)
	if rt.Table != unix.RT_TABLE_MAIN {
		return "", false
	}
	attrs, err := nl.ParseRouteAttrAsMap(b[unix.SizeofRtMsg:])
	if err != nil {
		return "", false
	}
	o, okO := attrs[unix.RTA_OIF]
	d, okD := attrs[unix.RTA_DST]
	if !okO || !okD || len(o.Value) != 4 || int32(binary.NativeEndian.Uint32(o.Value)) != oif {
		return "", false
	}
	a, ok := netip.AddrFromSlice(d.Value)
	if !ok {
		return "", false
	}
	return netip.PrefixFrom(a, int(rt.Dst_len)).String(), true
}

// A failure part-way leaves nothing behind, and others' routes alone.
func TestKernelTUNUndo(t *testing.T) {
	h := inNewNetns(t)
	lo, _ := h.LinkByName("lo")
	taken := &netlink.Route{LinkIndex: lo.Attrs().Index, Dst: prefixNet(netip.MustParsePrefix("100.65.0.0/16")), Scope: netlink.SCOPE_LINK}
	if err := h.RouteAdd(taken); err != nil {
		t.Fatal(err)
	}
	routes := []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16"), netip.MustParsePrefix("fd65::/64"), netip.MustParsePrefix("100.65.0.0/16")}
	for _, driver := range []string{DriverTUN, DriverWater} {
		host, err := NewKernelTUN(driver, "pias-test2", edgeAddrs, routes, 1420)
		if err == nil {
			host.Close()
			t.Fatalf("%s: no error", driver)
		}
		t.Log(err)
		if msg := err.Error(); strings.ContainsAny(msg, "\r\n") || !strings.Contains(msg, "100.65.0.0/16") || !strings.Contains(msg, "exists") {
			t.Errorf("%s: error %q", driver, msg)
		}
		if _, err := h.LinkByName("pias-test2"); err == nil {
			t.Errorf("%s: interface left behind", driver)
		}
		if got := allRoutes(t, h); fmt.Sprint(got) != "[100.65.0.0/16]" {
			t.Errorf("%s: routes %v", driver, got)
		}
	}

	// The undo itself, on a link that stays: a TUN of our own.
	other, err := tun.CreateTUN("other0", 1420)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	link, err := h.LinkByName("other0")
	if err != nil {
		t.Fatal(err)
	}
	undo, err := configureLinux(h, "other0", edgeAddrs, routes, 1400)
	if err == nil || undo != nil {
		t.Fatalf("configureLinux = %v, %v", undo, err)
	}
	if got := linkAddrs(t, h, link); len(got) != 0 {
		t.Errorf("addresses left: %v", got)
	}
	if got := linkRoutes(t, h, link); len(got) != 0 {
		t.Errorf("routes left: %v", got)
	}

	// An existing interface of that name is refused, and left alone.
	for _, driver := range []string{DriverTUN, DriverWater} {
		if host, err := NewKernelTUN(driver, "other0", edgeAddrs, nil, 1420); err == nil || !strings.Contains(err.Error(), "already exists") {
			if host != nil {
				host.Close()
			}
			t.Fatalf("%s: existing name: %v", driver, err)
		}
	}
	if _, err := h.LinkByName("other0"); err != nil {
		t.Error(err)
	}

	// Close finds nothing to remove when the interface went already (ip link
	// del): that is no error.
	if err := h.RouteDel(taken); err != nil {
		t.Fatal(err)
	}
	host, err := NewKernelTUN(DriverTUN, "pias-test3", edgeAddrs, edgeRoutes, 1420)
	if err != nil {
		t.Fatal(err)
	}
	l3, err := h.LinkByName("pias-test3")
	if err != nil {
		host.Close()
		t.Fatal(err)
	}
	if err := h.LinkDel(l3); err != nil {
		host.Close()
		t.Fatal(err)
	}
	if err := host.Close(); err != nil {
		t.Errorf("Close after the link went: %v", err)
	}
}

func linkAddrs(t *testing.T, h *netlink.Handle, link netlink.Link) []string {
	t.Helper()
	as, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, a.IPNet.String())
	}
	return out
}

// linkRoutes lists the main-table routes through link, sorted.
func linkRoutes(t *testing.T, h *netlink.Handle, link netlink.Link) []string {
	t.Helper()
	return routesOf(t, h, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
}

// allRoutes lists the main-table routes of the namespace but link-local ones.
func allRoutes(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	return routesOf(t, h, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
}

func routesOf(t *testing.T, h *netlink.Handle, filter *netlink.Route, mask uint64) []string {
	t.Helper()
	rs, err := retryDump(func() ([]netlink.Route, error) { return h.RouteListFiltered(netlink.FAMILY_ALL, filter, mask) })
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Dst == nil || r.Protocol == unix.RTPROT_KERNEL || r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast() {
			continue
		}
		out = append(out, r.Dst.String())
	}
	sortStrings(out)
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func retryDump[T any](f func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		v, err := f()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < 10 {
			continue
		}
		return v, err
	}
}

// nonzeroSNMP6 is the namespace's IPv6 counters that are not zero: why a
// packet was dropped.
func nonzeroSNMP6() string {
	b, _ := os.ReadFile("/proc/thread-self/net/snmp6")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[1] != "0" {
			out = append(out, f[0]+"="+f[1])
		}
	}
	return strings.Join(out, " ")
}

type udpPacket struct {
	src, dst netip.AddrPort
	payload  string
}

// readTUN reads packets from dev until it closes and passes on the UDP ones.
func readTUN(dev tun.Device) <-chan udpPacket {
	ch := make(chan udpPacket, 64)
	go func() {
		const offset = 16
		bufs := make([][]byte, dev.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, offset+65535)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := dev.Read(bufs, sizes, offset)
			for i := 0; i < n; i++ {
				if p, ok := parseUDP(bufs[i][offset : offset+sizes[i]]); ok {
					select {
					case ch <- p:
					default:
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

func waitPacket(t *testing.T, ch <-chan udpPacket, match func(udpPacket) bool, what string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case p := <-ch:
			if match(p) {
				return
			}
			t.Logf("other packet %+v", p)
		case <-timeout:
			t.Fatalf("no %s came out of the TUN", what)
		}
	}
}

func parseUDP(b []byte) (udpPacket, bool) {
	var p udpPacket
	var l4 []byte
	var src, dst netip.Addr
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&15) * 4
		if b[9] != unix.IPPROTO_UDP || len(b) < ihl+8 {
			return p, false
		}
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:]
	case len(b) >= 48 && b[0]>>4 == 6:
		if b[6] != unix.IPPROTO_UDP {
			return p, false
		}
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40:]
	default:
		return p, false
	}
	p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	p.payload = string(l4[8:])
	return p, true
}

// buildUDP makes an IPv4 or IPv6 UDP packet with correct checksums.
func buildUDP(src, dst netip.AddrPort, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	s, d := src.Addr().AsSlice(), dst.Addr().AsSlice()
	var pseudo []byte
	pseudo = append(pseudo, s...)
	pseudo = append(pseudo, d...)
	pseudo = append(pseudo, 0, unix.IPPROTO_UDP, byte(len(udp)>>8), byte(len(udp)))
	c := ^checksum(append(pseudo, udp...))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	if src.Addr().Is4() {
		ip := make([]byte, 20, 20+len(udp))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		ip[8] = 64
		ip[9] = unix.IPPROTO_UDP
		copy(ip[12:], s)
		copy(ip[16:], d)
		binary.BigEndian.PutUint16(ip[10:], ^checksum(ip))
		return append(ip, udp...)
	}
	ip := make([]byte, 40, 40+len(udp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
	ip[6] = unix.IPPROTO_UDP
	ip[7] = 64
	copy(ip[8:], s)
	copy(ip[24:], d)
	return append(ip, udp...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// TestUAPI serves a device's UAPI under a random name and reads it with the
// protocol `wg` speaks (and with `wg show` when it is installed). It touches
// only /var/run/wireguard/NAME.sock.
func TestUAPI(t *testing.T) {
	needRoot(t)
	var rnd [5]byte
	rand.Read(rnd[:])
	name := "piast" + hex.EncodeToString(rnd[:])
	path := UAPISocketPath(name)

	k, peer := newKeypair(t), newKeypair(t)
	peers := []Peer{{PublicKey: peer.pub, Endpoint: netip.MustParseAddrPort("127.0.0.1:9"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.65.0.0/16")}}}
	drop := func(buf []byte, start, end int, _ int64) (int, int, bool) { return 0, 0, false }
	d := startDevice(t, &Host{TUN: NewMemTUN(name, 1420, nil, drop)}, k, peers)

	c, err := d.ListenUAPI(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket: %v %v", fi, err)
	}

	got := uapiGet(t, path)
	for _, want := range []string{"private_key=" + hex.EncodeToString(k.priv[:]), "public_key=" + hex.EncodeToString(peer.pub[:]), "allowed_ip=100.65.0.0/16", "endpoint=127.0.0.1:9", "errno=0"} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("get=1 lacks %q:\n%s", want, got)
		}
	}
	if _, err := exec.LookPath("wg"); err == nil {
		out, err := exec.Command("wg", "show", name).CombinedOutput()
		if err != nil {
			t.Fatalf("wg show: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), base64.StdEncoding.EncodeToString(peer.pub[:])) {
			t.Errorf("wg show %s lacks the peer:\n%s", name, out)
		}
	} else {
		t.Log("no wg binary: skipping wg show")
	}

	// A second node under the same name is refused while this one lives.
	d2 := startDevice(t, &Host{TUN: NewMemTUN(name, 1420, nil, drop)}, peer, nil)
	if c2, err := d2.ListenUAPI(name); err == nil {
		c2.Close()
		t.Fatal("second ListenUAPI under the same name succeeded")
	} else if !strings.Contains(err.Error(), "is taken") || strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("error %q", err)
	}
	if _, err := d2.ListenUAPI("bad/name"); err == nil {
		t.Error("bad name accepted")
	}

	// Close ends open connections, removes the socket, and is idempotent.
	// (The connection is served once first: one still in the listen queue
	// lingers, as wireguard-go's ipc.UAPIOpen keeps a copy of the socket.)
	idle, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Write([]byte("get=1\n\n")); err != nil {
		t.Fatal(err)
	}
	idleR := bufio.NewReader(idle)
	for {
		line, err := idleR.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\n" {
			break
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	if _, err := idleR.ReadByte(); err == nil || os.IsTimeout(err) {
		t.Errorf("open connection not ended: %v", err)
	}

	// A stale socket (nobody answers) is replaced.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatal(err)
	}
	c3, err := d2.ListenUAPI(name)
	if err != nil {
		os.Remove(path)
		t.Fatal(err)
	}
	if got := uapiGet(t, path); !strings.Contains(got, "private_key="+hex.EncodeToString(peer.priv[:])+"\n") {
		t.Errorf("get=1 after replacing a stale socket:\n%s", got)
	}
	if err := c3.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// uapiGet asks for the configuration the way wg does.
func uapiGet(t *testing.T, path string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, b.String())
		}
		if line == "\n" {
			return b.String()
		}
		b.WriteString(line)
	}
}
