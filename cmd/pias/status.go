package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pias-net/pias/node"
)

func init() {
	register("status", "show what a running node knows (peers, groups, JAPs, targets, flows)", runStatus)
}

func runStatus(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs, parse := flags("status", "status [--json] [INTERFACE_NAME]   (a node's interface_name, default pias-NAME; none: list this host's nodes)", stdout, stderr)
	asJSON := fs.Bool("json", false, "print the node's status as JSON")
	// The name is a positional argument: parse flags, then take it.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[len(args)-1], "-") {
		name, args = args[len(args)-1], args[:len(args)-1]
	}
	if rc := parse(args); rc >= 0 {
		return rc
	}
	if name == "" {
		return listNodes(stdout, stderr, *asJSON)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := node.ReadStatus(ctx, node.AdminSocket(name), &raw); err != nil {
		fmt.Fprintf(stderr, "pias status: %v\n", err)
		return 1
	}
	if *asJSON {
		stdout.Write(raw)
		return 0
	}
	var st node.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		fmt.Fprintf(stderr, "pias status: %v\n", err)
		return 1
	}
	printStatus(stdout, &st)
	return 0
}

// listNodes lists the nodes this user's pias status can ask, one a line,
// as wg show lists interfaces: those whose admin sockets are in this
// user's admin directory (root's holds the nodes systemd runs). A node
// that does not answer (a socket left by a killed node) is listed as such.
// With asJSON, the list is a JSON array of the nodes' statuses.
func listNodes(stdout, stderr io.Writer, asJSON bool) int {
	dir, names, err := node.AdminSockets()
	if err != nil {
		fmt.Fprintf(stderr, "pias status: %v\n", err)
		return 1
	}
	if len(names) == 0 && !asJSON {
		fmt.Fprintf(stderr, "pias status: no node runs as this user (no admin socket in %s)\n", dir)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	var all []json.RawMessage
	for _, n := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var raw json.RawMessage
		err := node.ReadStatus(ctx, node.AdminSocket(n), &raw)
		cancel()
		var st node.Status
		if err == nil {
			err = json.Unmarshal(raw, &st)
		}
		switch {
		case asJSON && err == nil:
			all = append(all, raw)
		case asJSON:
		case err != nil:
			fmt.Fprintf(tw, "%s\tnot answering: %v\n", n, err)
		default:
			fmt.Fprintf(tw, "%s\t%s %s\toverlay %s\n", n, st.Role, logStr(st.Name), joinAddrs(st.Address))
		}
	}
	if asJSON {
		if all == nil {
			all = []json.RawMessage{}
		}
		out, _ := json.MarshalIndent(all, "", "  ")
		fmt.Fprintf(stdout, "%s\n", out)
		return 0
	}
	tw.Flush()
	return 0
}

func printStatus(w io.Writer, st *node.Status) {
	fmt.Fprintf(w, "%s %s (%s; overlay %s)\n", st.Role, st.Name, hostInterface(st), joinAddrs(st.Address))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	if e := st.Edge; e != nil {
		fmt.Fprintf(tw, "attached to\t%s\t(%s)\n", logStr(e.Attached), plural(e.Moves, "move"))
		for _, c := range e.Candidates {
			state := "dead"
			if c.Live {
				state = "live"
			}
			learned := ""
			if c.Learned {
				learned = "\tlearned"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\trtt %s%s\n", logStr(c.Name), c.Addr, state, rttCol(c.RTTms, c.Live), learned)
		}
		if len(e.Groups) > 0 {
			fmt.Fprintln(tw, "groups")
			for _, g := range e.Groups {
				fmt.Fprintf(tw, "  %s\t%s\t%s\n", g.Group, g.State, joinDetail(g))
				if g.Check != nil {
					fmt.Fprintf(tw, "  \tcheck %s\t%s\n", g.Check.Kind, checkDetail(g.Check))
				}
			}
		}
	}
	p := st.Proxy
	if p == nil {
		return
	}
	fmt.Fprintf(tw, "cluster\t%s\n", p.Cluster)
	if ca := p.CA; ca != nil {
		rev := "none"
		if ca.RevocationSerial > 0 {
			rev = fmt.Sprintf("serial %d", ca.RevocationSerial)
		}
		fmt.Fprintf(tw, "CA\t%s; this certificate expires %s; revocation list %s\n", logStr(ca.CA), ca.NotAfter.UTC().Format(time.RFC3339), rev)
		var names []string
		for _, n := range ca.Edges {
			names = append(names, logStr(n))
		}
		fmt.Fprintf(tw, "admitted by certificate\t%s\n", cmp.Or(strings.Join(names, ", "), "no edge"))
	}
	fmt.Fprintln(tw, "\nmembers")
	for _, m := range p.Members {
		watched := ""
		if m.Watched {
			watched = "watched"
		}
		if m.Unreachable {
			watched += " unreachable from here"
		}
		// Learned members' names and clusters come from the network.
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\trtt %s\t%s\n", logStr(m.Name), m.Addr, logStr(m.Cluster), m.State, rttCol(m.RTTms, m.State != "dead"), watched)
	}
	fmt.Fprintln(tw, "\nJAP: targets joined here (weight, live flows)")
	for _, g := range sortedKeys(p.Targets) {
		var ts []string
		gs, ok := p.Groups[g]
		if ok {
			for _, t := range gs.Targets {
				ts = append(ts, fmt.Sprintf("%s (w%d, %d flows)", t.Target, t.Weight, t.Flows))
			}
		} else {
			for _, t := range p.Targets[g] {
				ts = append(ts, t.String())
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", g, gs.Policy, strings.Join(ts, ", "))
	}
	fmt.Fprintln(tw, "\nRAP: JAPs of the groups this proxy is a RAP of")
	for _, g := range sortedKeys(p.RAP) {
		var js []string
		for _, j := range p.RAP[g] {
			w := j.Weight
			if w == 0 {
				w = j.Targets // what a weight of 0 means (router.JAP)
			}
			js = append(js, fmt.Sprintf("%s (%s, weight %d)", j.Addr, plural(j.Targets, "target"), w))
		}
		fmt.Fprintf(tw, "  %s\t%s\n", groupLabel(g), strings.Join(js, ", "))
	}
	fmt.Fprintf(tw, "\nflows: %d\n", len(p.Flows))
	for _, f := range p.Flows {
		via := "JAP " + f.JAP.String()
		if f.Kind == "jap" {
			via = fmt.Sprintf("from IAP %s to %s", f.IAP, f.Target)
		}
		fmt.Fprintf(tw, "  %s\t%s → %s\t%s\t%s\n", f.Kind, f.Client, groupLabel(f.Group.String()), via, f.State)
	}
	fmt.Fprintln(tw, "\ncounters")
	for _, k := range sortedKeys(p.Counters) {
		fmt.Fprintf(tw, "  %s\t%d\n", k, p.Counters[k])
	}
}

// rttCol is an RTT for the status tables: "—" when unknown (never or no
// longer measured) and for the dead, whose last RTT says nothing now.
func rttCol(ms float64, live bool) string {
	if ms <= 0 || !live {
		return "—"
	}
	return fmt.Sprintf("%.2f ms", ms)
}

// hostInterface says what the node's interface_name names: a host
// interface (kernel TUN), or only its WireGuard UAPI and admin sockets (a
// proxy, a netstack edge: no host interface).
func hostInterface(st *node.Status) string {
	switch st.Host {
	case "":
		return fmt.Sprintf("interface_name %s, no host interface", st.Interface)
	case "netstack":
		return fmt.Sprintf("interface_name %s, netstack: no host interface", st.Interface)
	}
	return fmt.Sprintf("interface %s, %s", st.Interface, st.Host)
}

// plural is "n thing", with an s unless n is 1.
// flowsLeft says how many live flows a draining target's JAP reported.
func flowsLeft(n int) string {
	if n < 0 {
		return "its JAP has not said how many flows are left yet"
	}
	return plural(n, "live flow") + " left at its JAP"
}

func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// echoLabel marks the echo pseudo-group of an anycast IP: no one configures
// it; every proxy with a target of a group on the IP registers it, so that
// a ping of the IP is answered.
const echoLabel = " (echo, for ping)"

// groupLabel is the group g (as router.Group.String writes it), labelled
// when it is an echo pseudo-group (port 0, ICMP).
func groupLabel(g string) string {
	if strings.HasSuffix(g, ":0/icmp") || strings.HasSuffix(g, ":0/icmpv6") {
		return g + echoLabel
	}
	return g
}

// joinDetail says where a target's group stands: at (or by) which proxy,
// since when, and why.
func joinDetail(g node.JoinStatus) string {
	var b strings.Builder
	switch {
	case g.JAP == "":
	case g.State == "refused":
		fmt.Fprintf(&b, "by %s ", logStr(g.JAP))
	default:
		fmt.Fprintf(&b, "at %s ", logStr(g.JAP))
	}
	if g.Since.IsZero() {
		b.WriteString("(no join sent yet)")
	} else {
		d := time.Duration(g.For * float64(time.Second))
		if d < 10*time.Second {
			d = d.Round(100 * time.Millisecond)
		} else {
			d = d.Round(time.Second)
		}
		fmt.Fprintf(&b, "since %s (%v ago)", g.Since.Local().Format("15:04:05"), d)
	}
	switch {
	case g.Reason == "":
	case g.State == "refused" || g.State == "draining":
		fmt.Fprintf(&b, ": %q", g.Reason) // the proxy's words, from the network
	default:
		fmt.Fprintf(&b, ": %s", g.Reason) // the target's own
	}
	if g.State == "draining" {
		b.WriteString(", " + flowsLeft(g.Flows))
	}
	return b.String()
}

// checkDetail says how a group's health check stands: healthy, failing or
// unknown, since when, and its last result (the service's words: quoted).
func checkDetail(c *node.CheckStatus) string {
	var b strings.Builder
	b.WriteString(c.State)
	if !c.Since.IsZero() {
		fmt.Fprintf(&b, " since %s", c.Since.Local().Format("15:04:05"))
	}
	if c.LastAt.IsZero() {
		b.WriteString(", not run yet")
		return b.String()
	}
	res := "failed"
	if c.LastOK {
		res = "passed"
	}
	fmt.Fprintf(&b, ", last %s at %s: %q", res, c.LastAt.Local().Format("15:04:05.0"), c.Last)
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
