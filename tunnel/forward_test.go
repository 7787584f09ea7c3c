package tunnel

import (
	"bufio"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestForwardHostToHost relays a real host TCP and UDP service through both
// kinds of forwarder: host program → client forwarder → WireGuard → target
// netstack → host service.
func TestForwardHostToHost(t *testing.T) {
	client, server, _ := relayPair(t)

	// Real echo services on the host's loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				line, _ := r.ReadString('\n')
				c.Write([]byte("tcp " + line))
			}()
		}
	}()
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
	if err != nil {
		t.Skipf("UDP port %d taken on loopback: %v", port, err)
	}
	t.Cleanup(func() { uc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			uc.WriteTo(append([]byte("udp "), buf[:n]...), from)
		}
	}()

	at := netip.AddrPortFrom(netip.MustParseAddr("100.64.1.1"), port)
	from := netip.MustParseAddr("100.64.2.1")
	for _, udp := range []bool{false, true} {
		in, err := server.ServeFromHost(at, udp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		out, err := client.ForwardToOverlay(netip.MustParseAddrPort("127.0.0.1:0"), at, from, udp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { out.Close() })
		var local string
		if udp {
			local = out.closers[0].(net.PacketConn).LocalAddr().String()
		} else {
			local = out.closers[0].(net.Listener).Addr().String()
		}
		network := map[bool]string{false: "tcp", true: "udp"}[udp]
		c, err := net.Dial(network, local)
		if err != nil {
			t.Fatal(err)
		}
		want := network + " hello\n"
		got := make([]byte, 100)
		var n int
		for try := 0; try < 15; try++ { // UDP may be lost while the tunnel comes up
			c.SetDeadline(time.Now().Add(time.Second))
			c.Write([]byte("hello\n"))
			if n, err = c.Read(got); err == nil {
				break
			}
		}
		c.Close()
		if err != nil || string(got[:n]) != want {
			t.Fatalf("%s through forwarders: got %q, %v; want %q", network, got[:n], err, want)
		}
	}
}
