package cert

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pias-net/pias/router"
)

// GroupRight is the right to join anycast groups: every group whose
// address is in Prefix, whose protocol is Proto (router.ProtoTCP or
// router.ProtoUDP), and whose port is Port, or any port if Port is 0.
//
// Its text form is "100.65.0.1:53/udp" (one group), "100.65.1.0/24:*/udp"
// (any port of the addresses of a prefix), and for IPv6
// "[fd65::1]:53/udp" or "[fd65:1::/64]:*/udp".
type GroupRight struct {
	Prefix netip.Prefix
	Port   uint16 // 0: any port
	Proto  uint8
}

// ParseGroupRight parses the text form of a group right.
func ParseGroupRight(s string) (GroupRight, error) {
	bad := func(why string) (GroupRight, error) {
		return GroupRight{}, fmt.Errorf("group %q: %s", s, why)
	}
	rest, proto, ok := cutLast(s, "/")
	if !ok {
		return bad("want ADDRESS:PORT/PROTO or PREFIX:*/PROTO")
	}
	var r GroupRight
	switch proto {
	case "tcp":
		r.Proto = router.ProtoTCP
	case "udp":
		r.Proto = router.ProtoUDP
	default:
		return bad(fmt.Sprintf("protocol %q is not tcp or udp", proto))
	}
	host, port, ok := cutLast(rest, ":")
	if !ok {
		return bad("want ADDRESS:PORT/PROTO or PREFIX:*/PROTO")
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
		if !strings.Contains(host, ":") {
			return bad("brackets are for IPv6 only")
		}
	} else if strings.Contains(host, ":") {
		return bad("an IPv6 address or prefix goes in brackets, like [fd65::1]:53/udp")
	}
	if port != "*" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || port[0] == '0' || port[0] == '+' {
			return bad(fmt.Sprintf("port %q is not 1..65535 or *", port))
		}
		r.Port = uint16(n)
	}
	if strings.Contains(host, "/") {
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return bad(fmt.Sprintf("%q is not a prefix", host))
		}
		r.Prefix = p
	} else {
		a, err := netip.ParseAddr(host)
		if err != nil || a.Zone() != "" {
			return bad(fmt.Sprintf("%q is not an address without a zone", host))
		}
		r.Prefix = netip.PrefixFrom(a, a.BitLen())
	}
	if err := r.validate(); err != nil {
		return bad(err.Error())
	}
	return r, nil
}

// ParseGroupRights parses a comma-separated list of group rights ("" is
// none) and returns them sorted, without duplicates.
func ParseGroupRights(s string) ([]GroupRight, error) {
	var rs []GroupRight
	if s == "" {
		return nil, nil
	}
	for _, f := range strings.Split(s, ",") {
		r, err := ParseGroupRight(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return SortGroupRights(rs), nil
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

func (r GroupRight) validate() error {
	if err := checkPrefix(r.Prefix); err != nil {
		return err
	}
	if a := r.Prefix.Addr(); a.IsUnspecified() && r.Prefix.Bits() == a.BitLen() {
		return fmt.Errorf("%s is not a group address", a)
	}
	if r.Proto != router.ProtoTCP && r.Proto != router.ProtoUDP {
		return fmt.Errorf("protocol %d is not tcp or udp", r.Proto)
	}
	return nil
}

// String is the text form ParseGroupRight reads.
func (r GroupRight) String() string {
	a := r.Prefix.Addr()
	host := a.String()
	if r.Prefix.Bits() != a.BitLen() {
		host = r.Prefix.String()
	}
	if a.Is6() {
		host = "[" + host + "]"
	}
	port := "*"
	if r.Port != 0 {
		port = strconv.Itoa(int(r.Port))
	}
	return host + ":" + port + "/" + router.ProtoName(r.Proto)
}

// Allows reports whether r grants group g.
func (r GroupRight) Allows(g router.Group) bool {
	return g.Proto == r.Proto && (r.Port == 0 || r.Port == g.Port) && r.Prefix.Contains(g.Addr)
}

// covers reports whether every group that s grants, r grants too.
func (r GroupRight) covers(s GroupRight) bool {
	return r.Proto == s.Proto && (r.Port == 0 || r.Port == s.Port) &&
		r.Prefix.Bits() <= s.Prefix.Bits() && r.Prefix.Contains(s.Prefix.Addr())
}

func compareRight(a, b GroupRight) int {
	if c := comparePrefix(a.Prefix, b.Prefix); c != 0 {
		return c
	}
	if a.Proto != b.Proto {
		return int(a.Proto) - int(b.Proto)
	}
	return int(a.Port) - int(b.Port)
}

// SortGroupRights sorts rs into the canonical order and drops duplicates.
func SortGroupRights(rs []GroupRight) []GroupRight {
	return sortUnique(rs, compareRight)
}

// AllowsGroup reports whether any of rs grants g.
func AllowsGroup(rs []GroupRight, g router.Group) bool {
	for _, r := range rs {
		if r.Allows(g) {
			return true
		}
	}
	return false
}
