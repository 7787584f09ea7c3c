package lab

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
)

// The README's wireguard-go steps for a plain client are exactly what the
// wg-quick file of the README's own lab asks for: the client's addresses,
// its MTU, and a route for every AllowedIPs prefix, which are the lab's
// anycast and overlay prefixes. scripts/lab.sh runs that very block in its
// plain client's namespace, so a change to either side fails here or there.
func TestGenPlainClientReadme(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block, err := ReadmeBlock(string(readme), PlainClientBlock)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(readmeLabOptions(t, string(readme)))
	if err != nil {
		t.Fatal(err)
	}
	const name, ifname = "cl2", "wg0"
	n := p.Lab.Node(name)
	if n == nil || n.WGQuick == "" {
		t.Fatalf("the README's lab has no plain client %s", name)
	}
	conf := wgQuickKeys(t, planFile(t, p, n.WGQuick))

	want := []string{
		"wireguard-go " + ifname,
		fmt.Sprintf("wg setconf %s <(wg-quick strip ./%s)", ifname, n.WGQuick),
	}
	for a := range strings.SplitSeq(conf["Address"], ",") {
		want = append(want, fmt.Sprintf("ip address add %s dev %s", strings.TrimSpace(a), ifname))
	}
	want = append(want, fmt.Sprintf("ip link set %s mtu %s up", ifname, conf["MTU"]))
	var allowed, prefixes []string
	for a := range strings.SplitSeq(conf["AllowedIPs"], ",") {
		allowed = append(allowed, strings.TrimSpace(a))
		want = append(want, fmt.Sprintf("ip route add %s dev %s", strings.TrimSpace(a), ifname))
	}
	for _, pf := range append(slices.Clone(p.Lab.AnycastPrefix), p.Lab.OverlayPrefix...) {
		prefixes = append(prefixes, pf.String())
	}
	if !slices.Equal(allowed, prefixes) {
		t.Errorf("%s: AllowedIPs %v, want the lab's anycast and overlay prefixes %v", n.WGQuick, allowed, prefixes)
	}
	var got []string
	for l := range strings.SplitSeq(block, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			got = append(got, l)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("README block %q:\n%s\nwant (from %s):\n%s", PlainClientBlock, strings.Join(got, "\n"), n.WGQuick, strings.Join(want, "\n"))
	}

	script, err := os.ReadFile("../scripts/lab.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		`readme-block "$repo/README.md" ` + PlainClientBlock,
		"plain_client " + name,
		`s/\bwg0\b/`,
	} {
		if !strings.Contains(string(script), s) {
			t.Errorf("scripts/lab.sh no longer runs the README's block for %s: no %q", name, s)
		}
	}
}

// readmeLabOptions are the options of the README's `./pias lab gen
// --static` line: the lab of its plain WireGuard client.
func readmeLabOptions(t *testing.T, readme string) Options {
	t.Helper()
	o := Options{CA: true}
	for l := range strings.SplitSeq(readme, "\n") {
		rest, ok := strings.CutPrefix(l, "./pias lab gen ")
		if !ok || !strings.Contains(rest, "--static") {
			continue
		}
		var f []string
		for _, w := range strings.Fields(rest) {
			switch w {
			case "--static":
				o.CA = false
			case "--ca":
				o.CA = true
			default:
				f = append(f, w)
			}
		}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.Atoi(f[i+1])
			if err != nil && f[i] != "--out" {
				t.Fatalf("README: lab gen %s %s: %v", f[i], f[i+1], err)
			}
			switch f[i] {
			case "--out":
				o.Out = f[i+1]
			case "--proxies":
				o.Proxies = v
			case "--clusters":
				o.Clusters = v
			case "--targets":
				o.Targets = v
			case "--clients":
				o.Clients = v
			case "--groups":
				o.Groups = v
			default:
				t.Fatalf("README: lab gen flag %s is not known to this test", f[i])
			}
		}
		return o
	}
	t.Fatal("README: no ./pias lab gen --static line")
	return o
}

func planFile(t *testing.T, p *Plan, name string) string {
	t.Helper()
	for _, f := range p.Files {
		if f.Name == name {
			return string(f.Data)
		}
	}
	t.Fatalf("the plan has no file %s", name)
	return ""
}

// wgQuickKeys are a wg-quick file's keys (both sections; the names differ).
func wgQuickKeys(t *testing.T, text string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for l := range strings.SplitSeq(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("bad line %q", l)
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m
}

func TestGenReadmeBlock(t *testing.T) {
	const fence = "```"
	for _, tc := range []struct {
		name, text, want, err string
	}{
		{"found", "x\n<!-- b: why -->\n\n" + fence + "bash\nls\ncd /\n" + fence + "\nafter\n", "ls\ncd /\n", ""},
		{"empty block", "<!-- b: -->\n" + fence + "\n" + fence + "\n", "\n", ""},
		{"other name", "<!-- bb: -->\n" + fence + "\nls\n" + fence + "\n", "", "no block"},
		{"missing", "text\n", "", "no block"},
		{"twice", "<!-- b: -->\n" + fence + "\nls\n" + fence + "\n<!-- b: -->\n", "", "marked twice"},
		{"no code block", "<!-- b: -->\ntext\n" + fence + "\nls\n" + fence + "\n", "", "not followed by a code block"},
		{"at the end", "<!-- b: -->", "", "not followed by a code block"},
		{"unclosed", "<!-- b: -->\n" + fence + "\nls\n", "", "not closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadmeBlock(tc.text, "b")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// The README's "Adding a node" file loads as a target's file in the
// README's lab (a CA lab), with a certificate signed as its step 2 signs
// it, and names p1's endpoint.
func TestGenAddingANodeReadme(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block, err := ReadmeBlock(string(readme), AddingANodeBlock)
	if err != nil {
		t.Fatal(err)
	}
	o := readmeLabOptions(t, string(readme))
	o.CA, o.Out = true, t.TempDir()
	l, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	g, err := router.ParseGroup("100.65.0.3:80/tcp")
	if err != nil {
		t.Fatal(err)
	}
	nd, err := l.SignNode(NewNode{Name: "t4", Role: config.RoleTarget, Groups: []router.Group{g}, Endpoint: netip.MustParseAddrPort("127.0.0.1:51828")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.Path(nd.Config), []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadTarget(l.Path(nd.Config))
	if err != nil {
		t.Fatalf("the README's file: %v", err)
	}
	p1 := l.Node("p1")
	if len(cfg.Proxies) != 1 || cfg.Proxies[0].Endpoint != p1.Endpoint {
		t.Errorf("the README's file lists proxies %+v; want p1's endpoint %v", cfg.Proxies, p1.Endpoint)
	}
	if !slices.Equal(cfg.Address, nd.Address) || cfg.Name != "t4" || len(cfg.Groups) != 1 || cfg.Groups[0].Group != g {
		t.Errorf("the README's file: %+v", cfg)
	}
	for _, n := range l.Nodes {
		if n.Name != "t4" && n.Endpoint == cfg.Listen {
			t.Errorf("the README's file listens on %v, %s's endpoint", cfg.Listen, n.Name)
		}
	}
}
