package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
)

func TestGenerate(t *testing.T) {
	shapes := []Options{
		{Proxies: 1, Clusters: 1},
		{Proxies: 1, Clusters: 1, Targets: 1, Clients: 1, Groups: 1},
		{Proxies: 3, Clusters: 2, Targets: 4, Clients: 3, Groups: 3},
		{Proxies: 5, Clusters: 5, Targets: 10, Clients: 2, Groups: 7},
		{Proxies: 4, Clusters: 1, Targets: 0, Clients: 5, Groups: 0},
		{Proxies: 2, Clusters: 2, Targets: 3, Clients: 2, Groups: 2, Underlay: netip.MustParsePrefix("198.18.0.0/24")},
		{Proxies: 2, Clusters: 1, Targets: 2, Clients: 1, Groups: 4, Underlay: netip.MustParsePrefix("fd00:18::/64"), BasePort: 4000},
		{Proxies: 2, Clusters: 1, Targets: 1, Clients: 1, Groups: 1, Underlay: netip.MustParsePrefix("::1/128"), BasePort: 65532},
		{Proxies: 3, Clusters: 2, Targets: 4, Clients: 2, Groups: 3, IPv6: true},
		{Proxies: 1, Clusters: 1, Targets: 0, Clients: 1, Groups: 2, IPv6: true},
	}
	for _, o := range shapes {
		name := fmt.Sprintf("p%d-c%d-t%d-cl%d-g%d-%s", o.Proxies, o.Clusters, o.Targets, o.Clients, o.Groups, o.Underlay)
		if o.IPv6 {
			name += "-ipv6"
		}
		t.Run(name, func(t *testing.T) {
			o.Out = filepath.Join(t.TempDir(), "lab")
			l, err := Generate(o)
			if err != nil {
				t.Fatal(err)
			}
			checkLab(t, o, l)

			back, err := ReadLab(o.Out)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, l) {
				t.Errorf("lab.json does not round-trip:\n%+v\n%+v", back, l)
			}
			back2, err := ReadLab(filepath.Join(o.Out, LabFile))
			if err != nil || !reflect.DeepEqual(back2, l) {
				t.Errorf("ReadLab(file): %v", err)
			}
		})
	}
}

// checkLab loads every config and checks it against lab.json and the rules
// of Generate.
func checkLab(t *testing.T, o Options, l *Lab) {
	t.Helper()
	underlay := o.Underlay
	if !underlay.IsValid() {
		underlay = DefaultUnderlay
	}
	base := o.BasePort
	if base == 0 {
		base = DefaultBasePort
	}
	nProxies, nTargets, nClients := len(l.Role(config.RoleProxy)), len(l.Role(config.RoleTarget)), len(l.Role(config.RoleClient))
	if nProxies != o.Proxies || nTargets != o.Targets || nClients != o.Clients || len(l.Nodes) != o.Proxies+o.Targets+o.Clients {
		t.Fatalf("nodes: %d proxies, %d targets, %d clients", nProxies, nTargets, nClients)
	}
	wantGroups := o.Groups
	if o.IPv6 {
		wantGroups *= 2
	}
	if len(l.Groups) != wantGroups || l.Underlay != underlay || l.ControlPort != config.DefaultControlPort {
		t.Errorf("lab header: %+v", l)
	}
	for i, g := range l.Groups {
		want := GroupN(i)
		if i >= o.Groups {
			want = GroupN6(i - o.Groups)
		}
		if g != want.String() {
			t.Errorf("group %d = %s, want %s", i, g, want)
		}
	}

	endpoints := map[netip.AddrPort]bool{}
	for k, n := range l.Nodes {
		// Underlay endpoints.
		var want netip.AddrPort
		if underlay.IsSingleIP() {
			want = netip.AddrPortFrom(underlay.Addr(), base+uint16(k))
		} else {
			a := underlay.Addr()
			for range k + 1 {
				a = a.Next()
			}
			want = netip.AddrPortFrom(a, base)
		}
		if n.Endpoint != want || endpoints[want] {
			t.Errorf("%s: endpoint %s, want %s", n.Name, n.Endpoint, want)
		}
		endpoints[want] = true

		key, err := os.ReadFile(l.Path(n.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		priv, err := config.ParseKey(strings.TrimSpace(string(key)))
		if err != nil || priv.PublicKey() != n.PublicKey {
			t.Errorf("%s: key file does not match public key: %v", n.Name, err)
		}
		if fi, err := os.Stat(l.Path(n.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file mode: %v %v", n.Name, fi.Mode(), err)
		}

		switch n.Role {
		case config.RoleProxy:
			checkProxy(t, l, k, n)
		case config.RoleTarget:
			checkEdge(t, o, l, k-o.Proxies, n)
		default:
			checkEdge(t, o, l, k-o.Proxies-o.Targets, n)
		}
	}
}

func checkProxy(t *testing.T, l *Lab, i int, n Node) {
	t.Helper()
	p, err := config.LoadProxy(l.Path(n.Config))
	if err != nil {
		t.Fatal(err)
	}
	wantCluster := fmt.Sprintf("c%d", i%len(uniqueClusters(l))+1)
	if n.Name != fmt.Sprintf("p%d", i+1) || n.Cluster != wantCluster || p.Cluster != wantCluster || p.Name != n.Name ||
		p.PublicKey != n.PublicKey || p.Listen != n.Endpoint || !reflect.DeepEqual(p.Address, n.Address) ||
		p.Addr4() != netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}) || p.Addr6() != netip.MustParseAddr(fmt.Sprintf("fd64::%d", i+1)) {
		t.Errorf("proxy %d: %+v vs %+v", i, p, n)
	}
	// Every other proxy and every edge, with matching keys and addresses.
	var wantProxies, wantEdges []string
	for _, m := range l.Nodes {
		switch {
		case m.Name == n.Name:
		case m.Role == config.RoleProxy:
			wantProxies = append(wantProxies, m.Name)
		default:
			wantEdges = append(wantEdges, m.Name)
		}
	}
	var gotProxies, gotEdges []string
	for _, pp := range p.Proxies {
		gotProxies = append(gotProxies, pp.Name)
		m := l.Node(pp.Name)
		if m == nil || m.PublicKey != pp.PublicKey || m.Endpoint != pp.Endpoint || m.Cluster != pp.Cluster || !reflect.DeepEqual(m.Address, pp.Address) {
			t.Errorf("%s: proxy peer %+v does not match lab.json", n.Name, pp)
		}
	}
	for _, e := range p.Edges {
		gotEdges = append(gotEdges, e.Name)
		m := l.Node(e.Name)
		var groups []router.Group
		if m != nil {
			for _, s := range m.Groups {
				g, err := router.ParseGroup(s.Group)
				if err != nil {
					t.Fatal(err)
				}
				groups = append(groups, g)
			}
		}
		if m == nil || m.PublicKey != e.PublicKey || !reflect.DeepEqual(m.Address, e.Address) || !reflect.DeepEqual(groups, e.Groups) {
			t.Errorf("%s: edge %+v does not match lab.json", n.Name, e)
		}
	}
	if fmt.Sprint(gotProxies) != fmt.Sprint(wantProxies) || fmt.Sprint(gotEdges) != fmt.Sprint(wantEdges) {
		t.Errorf("%s: peers %v %v, want %v %v", n.Name, gotProxies, gotEdges, wantProxies, wantEdges)
	}
}

func uniqueClusters(l *Lab) map[string]bool {
	m := map[string]bool{}
	for _, n := range l.Role(config.RoleProxy) {
		m[n.Cluster] = true
	}
	return m
}

// checkEdge checks the j-th (0-based) target or client.
func checkEdge(t *testing.T, o Options, l *Lab, j int, n Node) {
	t.Helper()
	var e *config.Edge
	var err error
	block, prefix, home := 1, "t", j%o.Proxies
	if n.Role == config.RoleClient {
		block, prefix, home = 2, "cl", (j+1)%o.Proxies
		e, err = config.LoadClient(l.Path(n.Config))
	} else {
		e, err = config.LoadTarget(l.Path(n.Config))
	}
	if err != nil {
		t.Fatal(err)
	}
	wantAddr := []netip.Addr{netip.AddrFrom4([4]byte{100, 64, byte(block), byte(j + 1)}), netip.MustParseAddr(fmt.Sprintf("fd64::%d:%d", block, j+1))}
	homeName := fmt.Sprintf("p%d", home+1)
	if n.Name != fmt.Sprintf("%s%d", prefix, j+1) || e.Name != n.Name || e.PublicKey != n.PublicKey ||
		!reflect.DeepEqual(e.Address, wantAddr) || !reflect.DeepEqual(n.Address, wantAddr) ||
		e.Listen != n.Endpoint || n.Home != homeName || len(e.Proxies) != o.Proxies || e.Proxies[0].Name != homeName {
		t.Errorf("%s: %+v vs %+v", n.Name, e, n)
	}
	seen := map[string]bool{}
	for _, pp := range e.Proxies {
		m := l.Node(pp.Name)
		if m == nil || seen[pp.Name] || m.PublicKey != pp.PublicKey || m.Endpoint != pp.Endpoint || !reflect.DeepEqual(m.Address, pp.Address) {
			t.Errorf("%s: proxy %+v does not match lab.json", n.Name, pp)
		}
		seen[pp.Name] = true
	}
	if n.Role == config.RoleTarget {
		g := GroupN(j % o.Groups)
		want := []config.Service{{Group: g, Port: g.Port + 8000, Weight: config.DefaultWeight}}
		if o.IPv6 {
			g6 := GroupN6(j % o.Groups)
			want = append(want, config.Service{Group: g6, Port: g6.Port + 8000, Weight: config.DefaultWeight})
		}
		var got []config.Service
		for _, s := range n.Groups {
			gg, err := router.ParseGroup(s.Group)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, config.Service{Group: gg, Port: s.Port, Weight: config.DefaultWeight})
		}
		if !reflect.DeepEqual(e.Groups, want) || !reflect.DeepEqual(got, want) || n.WGQuick != "" {
			t.Errorf("%s: groups %v / %v, want %v", n.Name, e.Groups, n.Groups, want)
		}
		return
	}
	if len(e.Groups) != 0 || n.WGQuick != n.Name+".wg.conf" {
		t.Errorf("%s: client %+v", n.Name, n)
	}
	checkWGQuick(t, l, n, l.Node(homeName))
}

// checkWGQuick reads a client's wg-quick file back.
func checkWGQuick(t *testing.T, l *Lab, n Node, home *Node) {
	t.Helper()
	data, err := os.ReadFile(l.Path(n.WGQuick))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", n.WGQuick, line)
		}
		got[section+strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	priv, err := config.ParseKey(got["[Interface]PrivateKey"])
	if err != nil || priv.PublicKey() != n.PublicKey {
		t.Errorf("%s: PrivateKey does not match: %v", n.WGQuick, err)
	}
	want := map[string]string{
		"[Interface]Address":        fmt.Sprintf("%s/32, %s/128", n.Address[0], n.Address[1]),
		"[Interface]ListenPort":     fmt.Sprint(n.Endpoint.Port()),
		"[Interface]MTU":            fmt.Sprint(config.DefaultMTU),
		"[Peer]PublicKey":           home.PublicKey.String(),
		"[Peer]Endpoint":            home.Endpoint.String(),
		"[Peer]AllowedIPs":          "100.65.0.0/16, fd65::/64, 100.64.0.0/16, fd64::/64",
		"[Peer]PersistentKeepalive": "25",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %q, want %q", n.WGQuick, k, got[k], v)
		}
	}
	if len(got) != len(want)+1 {
		t.Errorf("%s: unexpected keys: %v", n.WGQuick, got)
	}
	// wg-quick itself parses it, when it is installed and we may run it.
	if wq, err := exec.LookPath("wg-quick"); err == nil && os.Geteuid() == 0 {
		dir := t.TempDir()
		f := filepath.Join(dir, strings.TrimSuffix(n.WGQuick, ".conf")+".conf")
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(wq, "strip", f).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "PublicKey = "+home.PublicKey.String()) || strings.Contains(string(out), "\nAddress =") {
			t.Errorf("wg-quick strip %s: %v\n%s", f, err, out)
		}
	}
}

func TestGenerateUnderlay198(t *testing.T) {
	o := Options{Out: t.TempDir(), Proxies: 2, Clusters: 1, Targets: 1, Clients: 1, Groups: 1, Underlay: netip.MustParsePrefix("198.18.0.0/24")}
	l, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"198.18.0.1:51820", "198.18.0.2:51820", "198.18.0.3:51820", "198.18.0.4:51820"}
	for i, n := range l.Nodes {
		if n.Endpoint.String() != want[i] {
			t.Errorf("%s: endpoint %s, want %s", n.Name, n.Endpoint, want[i])
		}
	}
	// Target j's home is proxy j mod N, client j's is proxy (j+1) mod N (0-based).
	if l.Node("cl1").Home != "p2" || l.Node("t1").Home != "p1" {
		t.Errorf("homes: t1 %s, cl1 %s", l.Node("t1").Home, l.Node("cl1").Home)
	}
	text, err := os.ReadFile(filepath.Join(o.Out, "cl1.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), `listen = "198.18.0.4:51820"`) || !strings.Contains(string(text), `endpoint = "198.18.0.2:51820"`) {
		t.Errorf("cl1.toml:\n%s", text)
	}
}

func TestGenerateDefaults(t *testing.T) {
	o := Options{Out: t.TempDir(), Proxies: 2, Clusters: 2, Targets: 2, Clients: 2, Groups: 3}
	l, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	wantEP := []string{"127.0.0.1:51820", "127.0.0.1:51821", "127.0.0.1:51822", "127.0.0.1:51823", "127.0.0.1:51824", "127.0.0.1:51825"}
	wantNames := []string{"p1", "p2", "t1", "t2", "cl1", "cl2"}
	for i, n := range l.Nodes {
		if n.Endpoint.String() != wantEP[i] || n.Name != wantNames[i] {
			t.Errorf("node %d: %s %s", i, n.Name, n.Endpoint)
		}
	}
	if fmt.Sprint(l.Groups) != "[100.65.0.1:80/tcp 100.65.0.1:53/udp 100.65.0.2:80/tcp]" {
		t.Errorf("groups %v", l.Groups)
	}
	if g := l.Node("t2").Groups; len(g) != 1 || g[0].Group != "100.65.0.1:53/udp" || g[0].Port != 8053 {
		t.Errorf("t2 groups %v", g)
	}
	if l.Node("p1").Cluster != "c1" || l.Node("p2").Cluster != "c2" {
		t.Errorf("clusters")
	}
	data, err := os.ReadFile(filepath.Join(o.Out, LabFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"underlay": "127.0.0.1/32"`, `"control_port": 51821`, `"groups": [`, `"100.65.0.1:53/udp"`,
		`"role": "proxy"`, `"home": "p2"`, `"wg_quick": "cl1.wg.conf"`, `"group": "100.65.0.1:80/tcp"`, `"port": 8080`,
		`"anycast_prefix": [`, `"overlay_prefix": [`, `"key_file": "t1.key"`, `"config": "cl2.toml"`, `"cluster": "c2"`} {
		if !strings.Contains(string(data), s) {
			t.Errorf("lab.json lacks %s", s)
		}
	}
	// A second run into the same directory is refused.
	if _, err := Generate(o); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("second Generate: %v", err)
	}
}

func TestGenerateIPv6(t *testing.T) {
	o := Options{Out: t.TempDir(), Proxies: 2, Clusters: 1, Targets: 3, Clients: 1, Groups: 3, IPv6: true}
	l, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	want := "[100.65.0.1:80/tcp 100.65.0.1:53/udp 100.65.0.2:80/tcp [fd65::1]:80/tcp [fd65::1]:53/udp [fd65::2]:80/tcp]"
	if fmt.Sprint(l.Groups) != want {
		t.Errorf("groups %v, want %s", l.Groups, want)
	}
	for i, w := range []string{"[fd65::1]:80/tcp", "[fd65::1]:53/udp", "[fd65::2]:80/tcp", "[fd65::2]:53/udp", "[fd65::a]:53/udp"} {
		if i == 4 {
			i = 19
		}
		if g := GroupN6(i).String(); g != w {
			t.Errorf("GroupN6(%d) = %s, want %s", i, g, w)
		}
	}
	// t2 joins group 1 and its twin, on the same local port.
	if g := l.Node("t2").Groups; fmt.Sprint(g) != "[{100.65.0.1:53/udp 8053} {[fd65::1]:53/udp 8053}]" {
		t.Errorf("t2 groups %v", g)
	}
	tc, err := config.LoadTarget(l.Path("t3.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(tc.Groups) != "[{100.65.0.2:80/tcp 8080 select=proximity replicate=1 scope=any 1} {[fd65::2]:80/tcp 8080 select=proximity replicate=1 scope=any 1}]" {
		t.Errorf("t3.toml groups %v", tc.Groups)
	}
	// Proxies let each target join both twins.
	pc, err := config.LoadProxy(l.Path("p1.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range pc.Edges {
		if e.Name == "t1" && fmt.Sprint(e.Groups) != "[100.65.0.1:80/tcp [fd65::1]:80/tcp]" {
			t.Errorf("p1.toml: t1 may join %v", e.Groups)
		}
		if e.Name == "cl1" && len(e.Groups) != 0 {
			t.Errorf("p1.toml: cl1 may join %v", e.Groups)
		}
	}
	back, err := ReadLab(o.Out)
	if err != nil || !reflect.DeepEqual(back, l) {
		t.Errorf("lab.json does not round-trip: %v", err)
	}
	checkLab(t, o, l)
}

func TestGenerateErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		o   Options
		msg string
	}{
		{Options{Proxies: 1, Clusters: 1}, "no output directory"},
		{Options{Out: dir, Proxies: 0, Clusters: 1}, "0 proxies"},
		{Options{Out: dir, Proxies: 255, Clusters: 1}, "at most 254"},
		{Options{Out: dir, Proxies: 2, Clusters: 0}, "0 clusters"},
		{Options{Out: dir, Proxies: 2, Clusters: 3}, "3 clusters: want 1..2"},
		{Options{Out: dir, Proxies: 2, Clusters: 1, Targets: 1}, "no groups"},
		{Options{Out: dir, Proxies: 2, Clusters: 1, Targets: -1}, "-1 targets"},
		{Options{Out: dir, Proxies: 2, Clusters: 1, Clients: 300}, "300 clients"},
		{Options{Out: dir, Proxies: 3, Clusters: 1, Targets: 1, Groups: 1, Underlay: netip.MustParsePrefix("198.18.0.0/31")}, "has 0 host addresses"},
		{Options{Out: dir, Proxies: 3, Clusters: 1, Underlay: netip.MustParsePrefix("198.18.0.0/30")}, "has 2 host addresses, 3 nodes"},
		{Options{Out: dir, Proxies: 1, Clusters: 1, Underlay: netip.MustParsePrefix("198.18.0.1/24")}, "host bits"},
		{Options{Out: dir, Proxies: 3, Clusters: 1, BasePort: 65534}, "ports up to 65536"},
	} {
		_, err := Generate(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: err %v, want …%s…", tc.o, err, tc.msg)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("failed runs wrote files")
	}
	// A file in the way of the output directory.
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(Options{Out: f, Proxies: 1, Clusters: 1}); err == nil {
		t.Errorf("Generate into a file succeeded")
	}
}

func TestReadLabErrors(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []string{
		`{`,
		`{"nodes": [{"name": "a", "role": "router", "config": "a.toml"}]}`,
		`{"nodes": [{"name": "a", "role": "proxy", "config": "a.toml"}, {"name": "a", "role": "proxy", "config": "b.toml"}]}`,
		`{"groups": ["100.65.0.1:80/sctp"]}`,
		`{"nodes": [{"name": "a", "role": "proxy", "config": "a.toml", "public_key": "x"}]}`,
		`{"nodes": [{"name": "", "role": "proxy", "config": "a.toml"}]}`,
		`{"nodes": [{"name": "t", "role": "target", "config": "t.toml", "groups": [{"group": "1.2.3.4/tcp", "port": 1}]}]}`,
	} {
		p := filepath.Join(dir, LabFile)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadLab(p); err == nil {
			t.Errorf("ReadLab(%s) succeeded", s)
		}
	}
	if _, err := ReadLab(filepath.Join(dir, "none")); err == nil {
		t.Errorf("ReadLab of a missing file succeeded")
	}
}

// keySource returns the keys of seeds 1, 2, … in turn; after fail keys (when
// fail > 0) it fails.
func keySource(t *testing.T, fail int) func() (config.Key, error) {
	t.Helper()
	n := 0
	return func() (config.Key, error) {
		n++
		if fail > 0 && n > fail {
			return config.Key{}, errors.New("no entropy")
		}
		var k config.Key
		k[1], k[31] = byte(n), 0x40 // clamped like a Curve25519 private key
		return k, nil
	}
}

// A plan that fails leaves the output directory as it was: here, absent.
func TestPlanFailsBeforeWriting(t *testing.T) {
	for _, tc := range []struct {
		name   string
		o      Options
		newKey func() (config.Key, error)
		msg    string
	}{
		{"bad options", Options{Proxies: 2, Clusters: 3}, keySource(t, 0), "3 clusters"},
		{"keys run out", Options{Proxies: 2, Clusters: 1, Targets: 2, Groups: 1}, keySource(t, 3), "no entropy"},
		{"mesh key fails", Options{Proxies: 2, Clusters: 1}, keySource(t, 2), "no entropy"},
		{"config fails its check", Options{Proxies: 2, Clusters: 1}, func() (config.Key, error) { return config.Key{}, nil }, "bad config (a bug)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Out = filepath.Join(t.TempDir(), "lab")
			p, err := newPlan(tc.o, tc.newKey)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("newPlan: %v, %v; want an error with %q", p, err, tc.msg)
			}
			if _, err := os.Stat(tc.o.Out); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("output directory after a failed plan: %v", err)
			}
		})
	}
}

// The same options and keys give the same files, byte for byte, in the
// order Write creates them.
func TestPlanDeterministic(t *testing.T) {
	o := Options{Out: "lab", Proxies: 3, Clusters: 2, Targets: 3, Clients: 2, Groups: 2, Seeded: 1}
	a, err := newPlan(o, keySource(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := newPlan(o, keySource(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("two plans with the same keys differ")
	}
	var names []string
	for _, f := range a.Files {
		names = append(names, f.Name)
	}
	want := "mesh.key p1.key p1.toml p2.key p2.toml p3.key p3.toml t1.key t1.toml t2.key t2.toml t3.key t3.toml " +
		"cl1.key cl1.toml cl1.wg.conf cl2.key cl2.toml cl2.wg.conf lab.json"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("files %s\nwant %s", got, want)
	}
}

// A write that fails takes back the files written before it, so that the
// directory is empty again and a second Write succeeds.
func TestPlanWriteFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	p, err := NewPlan(Options{Out: dir, Proxies: 2, Clusters: 1, Targets: 1, Clients: 1, Groups: 1})
	if err != nil {
		t.Fatal(err)
	}
	bad := *p
	bad.Files = slices.Insert(slices.Clone(p.Files), 3, File{Name: filepath.Join("no-such-dir", "x"), Mode: 0o644})
	err = bad.Write()
	if err == nil || !strings.Contains(err.Error(), "no-such-dir") || !strings.Contains(err.Error(), "removed the 3 files written before") {
		t.Fatalf("Write with a file in a missing directory: %v", err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("after the failed Write: %v, %v", ents, err)
	}
	if err := p.Write(); err != nil {
		t.Fatal(err)
	}
	for _, f := range p.Files {
		data, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil || !bytes.Equal(data, f.Data) {
			t.Errorf("%s: %v, or not what the plan holds", f.Name, err)
		}
	}
	if err := p.Write(); err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Errorf("second Write: %v", err)
	}
}
