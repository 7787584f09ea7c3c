package main

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/pias-net/pias/cert"
	"github.com/pias-net/pias/config"
)

func init() {
	register("check", "check a node's config file as starting the node would, and exit", runCheck)
}

// runCheck loads a node's file with the loader its node command uses (key
// files, certificates and every cross-check included) and touches neither
// the network nor an interface, like nginx -t: a systemd unit runs it
// before the node, and a person after editing the file.
func runCheck(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs, parse := flags("check", "check -c FILE [--role proxy|target|client]", stdout, stderr)
	path := fs.String("c", "", "the node's config file (required)")
	role := fs.String("role", "", "the node's role; default: guessed from the file (cluster or [[edge]]: proxy, [[group]]: target, else client)")
	if rc := parse(args); rc >= 0 {
		return rc
	}
	if *path == "" {
		fmt.Fprintln(stderr, "pias check: -c FILE is required")
		return 2
	}
	r := *role
	switch r {
	case "":
		r = guessRole(*path)
	case config.RoleProxy, config.RoleTarget, config.RoleClient:
	default:
		fmt.Fprintf(stderr, "pias check: --role %q: want proxy, target or client\n", r)
		return 2
	}
	var summary string
	var err error
	switch r {
	case config.RoleProxy:
		var p *config.Proxy
		if p, err = config.LoadProxy(*path); err == nil {
			summary = proxySummary(p)
		}
	default:
		var e *config.Edge
		if r == config.RoleTarget {
			e, err = config.LoadTarget(*path)
		} else {
			e, err = config.LoadClient(*path)
		}
		if err == nil {
			summary = edgeSummary(e)
		}
	}
	if err != nil {
		all := config.Errors(err)
		if all == nil {
			fmt.Fprintf(stderr, "pias check: %v\n", err)
		}
		for _, e := range all {
			fmt.Fprintln(stderr, e)
		}
		return 2
	}
	fmt.Fprintf(stdout, "%s: ok: %s\n", *path, summary)
	return 0
}

// guessRole reads the role off the file's top-level keys: only a proxy's
// file has cluster and [[edge]], only a target's [[group]]; a file in CA
// mode has the role its certificate says. A file that does not parse is a
// client's: every loader reports its syntax error the same way.
func guessRole(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return config.RoleClient
	}
	var m map[string]any
	if _, err := toml.Decode(string(data), &m); err != nil {
		return config.RoleClient
	}
	if name, ok := m["cert_file"].(string); ok {
		if !filepath.IsAbs(name) {
			name = filepath.Join(filepath.Dir(path), name)
		}
		if text, err := readFile(name); err == nil {
			if c, err := cert.ParsePEM(text); err == nil {
				return c.Role.String() // the loader checks it against the file
			}
		}
	}
	switch {
	case m["cluster"] != nil || m["edge"] != nil:
		return config.RoleProxy
	case m["group"] != nil:
		return config.RoleTarget
	}
	return config.RoleClient
}

// proxySummary is one line: name, cluster, addresses, endpoint, the other
// proxies it names, the edges it admits and their groups.
func proxySummary(p *config.Proxy) string {
	var proxies, edges, groups []string
	seen := map[string]bool{}
	for _, pp := range p.Proxies {
		proxies = append(proxies, proxyName(pp))
	}
	if p.CAMode() {
		return fmt.Sprintf("proxy %s, cluster %s, overlay [%s], listen %s, seeds [%s], admits by certificate of CA %s (certificate valid until %s)",
			p.Name, p.Cluster, spaced(p.Address), p.Listen, strings.Join(proxies, " "), logStr(p.CA.Name), p.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, e := range p.Edges {
		edges = append(edges, e.Name)
		for _, g := range e.Groups {
			if !seen[g.String()] {
				seen[g.String()] = true
				groups = append(groups, g.String())
			}
		}
	}
	return fmt.Sprintf("proxy %s, cluster %s, overlay [%s], listen %s, proxies [%s], edges [%s], groups [%s]",
		p.Name, p.Cluster, spaced(p.Address), p.Listen, strings.Join(proxies, " "), strings.Join(edges, " "), strings.Join(groups, " "))
}

// edgeSummary is one line: role, name, addresses, interface, the groups
// it joins (a target) and the proxies it attaches to, preferred first.
func edgeSummary(e *config.Edge) string {
	var proxies, groups []string
	for _, pp := range e.Proxies {
		proxies = append(proxies, proxyName(pp))
	}
	for _, s := range e.Groups {
		groups = append(groups, fmt.Sprintf("%s→%d", s.Group, s.Port))
	}
	s := fmt.Sprintf("%s %s, overlay [%s], interface %s (%s)", e.Role, e.Name, spaced(e.Address), e.Interface, e.InterfaceName)
	if e.Role == config.RoleTarget {
		s += fmt.Sprintf(", groups [%s]", strings.Join(groups, " "))
	}
	return s + fmt.Sprintf(", proxies [%s]", strings.Join(proxies, " "))
}

func spaced(as []netip.Addr) string { return strings.ReplaceAll(joinAddrs(as), ", ", " ") }
