package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// A Host is one line of a hosts file: a node's name and the public address
// of the machine it runs on, where the other nodes reach its WireGuard port.
type Host struct {
	Name string
	Addr netip.Addr
	Line int
}

// ParseHosts reads a hosts file (file names it in errors): one node a
// line, "NAME ADDRESS", blank lines and # comments allowed. Each name once;
// each address a plain unicast IPv4 or IPv6 address without a port (the
// lab's ports are BasePort on). Which names the lab has is Generate's to
// check.
func ParseHosts(file string, data []byte) ([]Host, error) {
	var hosts []Host
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("%s:%d: %q: want NAME ADDRESS", file, n, strings.TrimSpace(line))
		}
		name, s := f[0], f[1]
		if l, dup := seen[name]; dup {
			return nil, fmt.Errorf("%s:%d: node %q again (first at line %d)", file, n, name, l)
		}
		seen[name] = n
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%s:%d: %s: %q is not an IP address (no port: the lab's ports start at --base-port)", file, n, name, s)
		case a.Zone() != "" || a.Is4In6():
			return nil, fmt.Errorf("%s:%d: %s: %s: want a plain IPv4 or IPv6 address", file, n, name, a)
		case a.IsUnspecified() || a.IsMulticast():
			return nil, fmt.Errorf("%s:%d: %s: %s is not a host's address", file, n, name, a)
		}
		hosts = append(hosts, Host{Name: name, Addr: a, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("%s: no hosts (want a line NAME ADDRESS for every node)", file)
	}
	return hosts, nil
}

// names are the lab's node names, in lab.json order.
func (o *Options) names() []string {
	var out []string
	for i := range o.Proxies {
		out = append(out, "p"+strconv.Itoa(i+1))
	}
	for j := range o.Targets {
		out = append(out, "t"+strconv.Itoa(j+1))
	}
	for j := range o.Clients {
		out = append(out, "cl"+strconv.Itoa(j+1))
	}
	return out
}

// validateHosts checks that Hosts names every node once and no other, and
// that the nodes sharing a host have ports enough.
func (o *Options) validateHosts() error {
	if o.Underlay.IsValid() {
		return fmt.Errorf("lab: hosts and an underlay: give one (hosts set every node's address)")
	}
	byName := map[string]Host{}
	for _, h := range o.Hosts {
		if prev, dup := byName[h.Name]; dup {
			return fmt.Errorf("lab: %s:%d: node %q again (first at line %d)", o.HostsFile, h.Line, h.Name, prev.Line)
		}
		byName[h.Name] = h
	}
	names := o.names()
	inLab := map[string]bool{}
	var missing []string
	perAddr := map[netip.Addr]int{}
	for _, n := range names {
		inLab[n] = true
		h, ok := byName[n]
		if !ok {
			missing = append(missing, n)
			continue
		}
		perAddr[h.Addr]++
		if last := int(o.BasePort) + perAddr[h.Addr] - 1; last > 65535 {
			return fmt.Errorf("lab: %s:%d: %d nodes on %s from port %d need ports up to %d (max 65535)", o.HostsFile, h.Line, perAddr[h.Addr], h.Addr, o.BasePort, last)
		}
	}
	for _, h := range o.Hosts {
		if !inLab[h.Name] {
			return fmt.Errorf("lab: %s:%d: no node %q in this lab (its nodes: %s)", o.HostsFile, h.Line, h.Name, strings.Join(names, " "))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("lab: %s gives no address for %s (want a line NAME ADDRESS for every node)", o.HostsFile, strings.Join(missing, ", "))
	}
	return nil
}

// hostEndpoint is where the node called name listens: its host's address,
// BasePort plus the number of nodes before it on that host.
func (o *Options) hostEndpoint(name string) netip.AddrPort {
	var addr netip.Addr
	for _, h := range o.Hosts {
		if h.Name == name {
			addr = h.Addr
		}
	}
	port := o.BasePort
	for _, n := range o.names() {
		if n == name {
			break
		}
		for _, h := range o.Hosts {
			if h.Name == n && h.Addr == addr {
				port++
			}
		}
	}
	return netip.AddrPortFrom(addr, port)
}
