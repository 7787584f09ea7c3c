package router

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// IP protocol numbers the router understands.
const (
	ProtoICMP   = 1
	ProtoIPIP   = 4 // IPv4 in IP: the IAP→JAP encapsulation of IPv4 packets
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoIPv6   = 41 // IPv6 in IP: the IAP→JAP encapsulation of IPv6 packets
	ProtoICMPv6 = 58
)

// Group is an anycast transport address: ANYCAST_IP:PORT/PROTO.
//
// A group with Port 0 and Proto ProtoICMP (IPv4) or ProtoICMPv6 (IPv6) is the
// echo pseudo-group of an anycast IP: it is live while any group on that IP
// is, so an IAP can answer ping for the IP.
type Group struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8
}

// EchoGroup is the echo pseudo-group of the anycast IP a.
func EchoGroup(a netip.Addr) Group {
	if a.Is4() {
		return Group{Addr: a, Proto: ProtoICMP}
	}
	return Group{Addr: a, Proto: ProtoICMPv6}
}

// IsEcho reports whether g is the echo pseudo-group of its IP.
func (g Group) IsEcho() bool { return g.Proto == ProtoICMP || g.Proto == ProtoICMPv6 }

// ParseGroup parses "100.65.0.1:80/tcp" or "[fd65::1]:53/udp".
func ParseGroup(s string) (Group, error) {
	ap, proto, ok := strings.Cut(s, "/")
	if !ok {
		return Group{}, fmt.Errorf("group %q: want ADDRESS:PORT/tcp or ADDRESS:PORT/udp", s)
	}
	var g Group
	switch proto {
	case "tcp":
		g.Proto = ProtoTCP
	case "udp":
		g.Proto = ProtoUDP
	default:
		return Group{}, fmt.Errorf("group %q: protocol %q is not tcp or udp", s, proto)
	}
	addrPort, err := netip.ParseAddrPort(ap)
	if err != nil {
		return Group{}, fmt.Errorf("group %q: %v", s, err)
	}
	if addrPort.Port() == 0 {
		return Group{}, fmt.Errorf("group %q: port 0 is not a service port", s)
	}
	if addrPort.Addr().Zone() != "" {
		return Group{}, fmt.Errorf("group %q: zones are not allowed", s)
	}
	g.Addr = addrPort.Addr().Unmap()
	g.Port = addrPort.Port()
	return g, nil
}

// String formats g the way ParseGroup reads it.
func (g Group) String() string {
	return netip.AddrPortFrom(g.Addr, g.Port).String() + "/" + ProtoName(g.Proto)
}

// ProtoName names an IP protocol number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}
