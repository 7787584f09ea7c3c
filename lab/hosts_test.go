package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pias-net/pias/config"
)

// TestGenerateHosts: a lab of 2 proxies, 1 target and 1 client from hosts
// files, good and bad. A good one puts every node's endpoint at its host's
// address, in lab.json and in every file that names it.
func TestGenerateHosts(t *testing.T) {
	shape := Options{Proxies: 2, Clusters: 1, Targets: 1, Clients: 1, Groups: 1}
	tests := []struct {
		name, hosts string
		base        uint16
		want        map[string]string // node → endpoint
		err         string
	}{
		{name: "one VM each", hosts: "p1 192.0.2.1\np2 192.0.2.2\nt1 192.0.2.3\ncl1 192.0.2.4\n",
			want: map[string]string{"p1": "192.0.2.1:51820", "p2": "192.0.2.2:51820", "t1": "192.0.2.3:51820", "cl1": "192.0.2.4:51820"}},
		{name: "comments, blanks, any order, IPv6", hosts: "# the VMs\n\ncl1   2001:db8::4  # a laptop\n\tt1 192.0.2.3\np2 192.0.2.2\np1 192.0.2.1\n",
			want: map[string]string{"p1": "192.0.2.1:51820", "p2": "192.0.2.2:51820", "t1": "192.0.2.3:51820", "cl1": "[2001:db8::4]:51820"}},
		{name: "shared hosts take the next ports", hosts: "p1 192.0.2.1\np2 192.0.2.2\nt1 192.0.2.1\ncl1 192.0.2.1\n", base: 4000,
			want: map[string]string{"p1": "192.0.2.1:4000", "p2": "192.0.2.2:4000", "t1": "192.0.2.1:4001", "cl1": "192.0.2.1:4002"}},
		{name: "loopback", hosts: "p1 127.0.0.1\np2 127.0.0.1\nt1 127.0.0.1\ncl1 127.0.0.1\n",
			want: map[string]string{"p1": "127.0.0.1:51820", "p2": "127.0.0.1:51821", "t1": "127.0.0.1:51822", "cl1": "127.0.0.1:51823"}},

		{name: "unknown node", hosts: "p1 192.0.2.1\np2 192.0.2.2\nt1 192.0.2.3\ncl1 192.0.2.4\np3 192.0.2.5\n", err: `lab: hosts.txt:5: no node "p3" in this lab (its nodes: p1 p2 t1 cl1)`},
		{name: "missing nodes", hosts: "p1 192.0.2.1\nt1 192.0.2.3\n", err: "lab: hosts.txt gives no address for p2, cl1 (want a line NAME ADDRESS for every node)"},
		{name: "duplicate", hosts: "p1 192.0.2.1\np2 192.0.2.2\nt1 192.0.2.3\ncl1 192.0.2.4\np1 192.0.2.9\n", err: `hosts.txt:5: node "p1" again (first at line 1)`},
		{name: "not an address", hosts: "p1 vm1.example.com\n", err: `hosts.txt:1: p1: "vm1.example.com" is not an IP address`},
		{name: "address with a port", hosts: "p1 192.0.2.1:51820\n", err: `hosts.txt:1: p1: "192.0.2.1:51820" is not an IP address`},
		{name: "unspecified", hosts: "p1 0.0.0.0\n", err: "hosts.txt:1: p1: 0.0.0.0 is not a host's address"},
		{name: "multicast", hosts: "p1 ff02::1\n", err: "hosts.txt:1: p1: ff02::1 is not a host's address"},
		{name: "zone", hosts: "p1 fe80::1%eth0\n", err: "hosts.txt:1: p1: fe80::1%eth0: want a plain IPv4 or IPv6 address"},
		{name: "4in6", hosts: "p1 ::ffff:192.0.2.1\n", err: "want a plain IPv4 or IPv6 address"},
		{name: "three fields", hosts: "p1 192.0.2.1 51820\n", err: `hosts.txt:1: "p1 192.0.2.1 51820": want NAME ADDRESS`},
		{name: "name only", hosts: "\n\np1\n", err: `hosts.txt:3: "p1": want NAME ADDRESS`},
		{name: "empty", hosts: "# nothing yet\n\n", err: "hosts.txt: no hosts"},
		{name: "ports run out", hosts: "p1 192.0.2.1\np2 192.0.2.1\nt1 192.0.2.3\ncl1 192.0.2.4\n", base: 65535, err: "lab: hosts.txt:2: 2 nodes on 192.0.2.1 from port 65535 need ports up to 65536 (max 65535)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := shape
			o.Out = filepath.Join(t.TempDir(), "lab")
			o.BasePort, o.HostsFile = tc.base, "hosts.txt"
			hosts, err := ParseHosts("hosts.txt", []byte(tc.hosts))
			var l *Lab
			if err == nil {
				o.Hosts = hosts
				l, err = Generate(o)
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if ents, _ := os.ReadDir(o.Out); len(ents) > 0 {
					t.Errorf("a bad hosts file left %d files", len(ents))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.Underlay.IsValid() {
				t.Errorf("lab.json underlay %s, want none", l.Underlay)
			}
			for name, want := range tc.want {
				n := l.Node(name)
				if n == nil || n.Endpoint.String() != want {
					t.Fatalf("%s: endpoint %v, want %s", name, n, want)
				}
				// Its own file listens there, and every file naming it
				// (as a proxy: edges' and other proxies') has the endpoint.
				text := readFile(t, l.Path(n.Config))
				if !strings.Contains(text, "\nlisten = \""+want+"\"\n") {
					t.Errorf("%s.toml does not listen on %s:\n%s", name, want, text)
				}
				if n.Role != config.RoleProxy {
					continue
				}
				for _, other := range l.Nodes {
					text := readFile(t, l.Path(other.Config))
					if other.Name != name && !strings.Contains(text, "\nname = \""+name+"\"\npublic_key = \""+n.PublicKey.String()+"\"\nendpoint = \""+want+"\"\n") {
						t.Errorf("%s.toml lacks %s's endpoint %s:\n%s", other.Name, name, want, text)
					}
				}
			}
			// The client's wg-quick file reaches its home proxy there.
			cl1 := l.Node("cl1")
			home := l.Node(cl1.Home)
			if wg := readFile(t, l.Path(cl1.WGQuick)); !strings.Contains(wg, "\nEndpoint = "+home.Endpoint.String()+"\n") {
				t.Errorf("cl1.wg.conf: want Endpoint = %s:\n%s", home.Endpoint, wg)
			}
			back, err := ReadLab(o.Out)
			if err != nil || back.Node("p1").Endpoint != l.Node("p1").Endpoint {
				t.Errorf("lab.json: %v", err)
			}
		})
	}
}

// Hosts and an underlay: one only.
func TestGenerateHostsAndUnderlay(t *testing.T) {
	o := Options{Out: t.TempDir(), Proxies: 1, Clusters: 1, Underlay: netip.MustParsePrefix("198.18.0.0/24"),
		Hosts: []Host{{Name: "p1", Addr: netip.MustParseAddr("192.0.2.1"), Line: 1}}}
	if _, err := Generate(o); err == nil || !strings.Contains(err.Error(), "hosts and an underlay") {
		t.Errorf("err = %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
