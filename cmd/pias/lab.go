package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/pias-net/pias/lab"
)

// labCADefault: pias lab gen makes a CA lab unless --static is given.
const labCADefault = true

func init() {
	register("lab", "lab gen: write a consistent set of node configs (and lab.json)", runLab)
}

func runLab(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		w, rc := stdout, 0
		if len(args) == 0 {
			w, rc = stderr, 2
		}
		fmt.Fprintln(w, "Usage: pias lab gen --out DIR [--ca|--static] [--proxies N] [--clusters C] [--targets M] [--clients K] [--groups G] [--underlay CIDR | --hosts FILE]")
		fmt.Fprintln(w, "  (pias lab gen --help for the flags)")
		return rc
	}
	if args[0] != "gen" {
		fmt.Fprintf(stderr, "pias lab: unknown subcommand %q (want gen)\n", args[0])
		return 2
	}
	fs, parse := flags("lab gen", "lab gen --out DIR [flags]", stdout, stderr)
	out := fs.String("out", "", "directory to write the lab into; must be new or empty (required)")
	proxies := fs.Int("proxies", 3, "number of proxies")
	clusters := fs.Int("clusters", 2, "number of proxy clusters")
	targets := fs.Int("targets", 3, "number of targets")
	clients := fs.Int("clients", 2, "number of clients")
	groups := fs.Int("groups", 2, "number of groups (tcp and udp alternating, two per anycast IP)")
	underlay := fs.String("underlay", lab.DefaultUnderlay.String(), "underlay: one address (consecutive ports) or a prefix (consecutive addresses)")
	basePort := fs.Uint("base-port", uint(lab.DefaultBasePort), "first WireGuard UDP port")
	iface := fs.String("interface", "netstack", "edges' host interface: netstack, tun or water")
	ifPrefix := fs.String("ifprefix", "", "name every node's interface and UAPI socket PREFIX+NAME (default pias-NAME)")
	hostsFile := fs.String("hosts", "", "a file of `NAME ADDRESS` lines, one per node: every node listens on --base-port at its host's public address (instead of --underlay)")
	seeded := fs.Int("seeded", 0, "make the last N proxies newcomers that know only p1 (their seed) and join with the mesh key, or their certificates with --ca")
	caLab := fs.Bool("ca", false, fmt.Sprintf("make a CA lab: a CA (ca.pem, ca.key), a certificate per node, node files that name the CA and only the proxies' endpoints (default %v)", labCADefault))
	static := fs.Bool("static", false, fmt.Sprintf("make a static lab: proxies list every edge's key, and share a mesh key (default %v)", !labCADefault))
	if rc := parse(args[1:]); rc >= 0 {
		return rc
	}
	if *out == "" {
		fmt.Fprintln(stderr, "pias lab gen: --out DIR is required")
		return 2
	}
	if *caLab && *static {
		fmt.Fprintln(stderr, "pias lab gen: --ca and --static: give one or the other")
		return 2
	}
	withCA := (labCADefault || *caLab) && !*static
	u, err := netip.ParsePrefix(*underlay)
	if err != nil {
		a, err2 := netip.ParseAddr(*underlay)
		if err2 != nil {
			fmt.Fprintf(stderr, "pias lab gen: --underlay %q is not an address or prefix\n", *underlay)
			return 2
		}
		if a.Zone() != "" {
			// PrefixFrom would drop the zone silently.
			fmt.Fprintf(stderr, "pias lab gen: --underlay %q: want an address without a zone\n", *underlay)
			return 2
		}
		u = netip.PrefixFrom(a, a.BitLen())
	}
	var hosts []lab.Host
	if *hostsFile != "" {
		underlaySet := false
		fs.Visit(func(f *flag.Flag) { underlaySet = underlaySet || f.Name == "underlay" })
		if underlaySet {
			fmt.Fprintln(stderr, "pias lab gen: --hosts and --underlay: give one (the hosts file sets every node's address)")
			return 2
		}
		data, err := os.ReadFile(*hostsFile)
		if err == nil {
			hosts, err = lab.ParseHosts(*hostsFile, data)
		}
		if err != nil {
			fmt.Fprintf(stderr, "pias lab gen: %v\n", err)
			return 2
		}
		u = netip.Prefix{}
	}
	if *basePort == 0 || *basePort > 65535 {
		fmt.Fprintf(stderr, "pias lab gen: --base-port %d is not a port\n", *basePort)
		return 2
	}
	l, err := lab.Generate(lab.Options{Out: *out, Proxies: *proxies, Clusters: *clusters, Targets: *targets,
		Clients: *clients, Groups: *groups, Underlay: u, BasePort: uint16(*basePort),
		Interface: *iface, InterfacePrefix: *ifPrefix, Seeded: *seeded, CA: withCA, Hosts: hosts, HostsFile: *hostsFile})
	if err != nil {
		fmt.Fprintf(stderr, "pias lab gen: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "wrote %d nodes to %s (see %s)\n", len(l.Nodes), *out, l.Path(lab.LabFile))
	if l.CA != "" {
		fmt.Fprintf(stdout, "a CA lab: %s signs every node's certificate; pias cert sign --ca %s signs a new one\n", l.Path(l.CA), *out)
	}
	return 0
}
