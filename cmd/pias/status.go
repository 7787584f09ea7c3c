package main

import (
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
	fs, parse := flags("status", "status [--json] INTERFACE_NAME   (a node's interface_name, default pias-NAME)", stdout, stderr)
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
		fmt.Fprintln(stderr, "pias status: which node? give its interface_name (default pias-NAME)")
		return 2
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

func printStatus(w io.Writer, st *node.Status) {
	fmt.Fprintf(w, "%s %s (interface %s, overlay %s)\n", st.Role, st.Name, st.Interface, joinAddrs(st.Address))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	defer tw.Flush()
	if e := st.Edge; e != nil {
		fmt.Fprintf(tw, "attached to\t%s\t(%d moves)\n", logStr(e.Attached), e.Moves)
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
			fmt.Fprintf(tw, "groups\t%s\t(joined: %v)\n", strings.Join(e.Groups, ", "), e.Joined)
		}
	}
	p := st.Proxy
	if p == nil {
		return
	}
	fmt.Fprintf(tw, "cluster\t%s\n", p.Cluster)
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
			js = append(js, fmt.Sprintf("%s (%d targets, weight %d)", j.Addr, j.Targets, j.Weight))
		}
		fmt.Fprintf(tw, "  %s\t%s\n", g, strings.Join(js, ", "))
	}
	fmt.Fprintf(tw, "\nflows: %d\n", len(p.Flows))
	for _, f := range p.Flows {
		via := "JAP " + f.JAP.String()
		if f.Kind == "jap" {
			via = fmt.Sprintf("from IAP %s to %s", f.IAP, f.Target)
		}
		fmt.Fprintf(tw, "  %s\t%s → %s\t%s\t%s\n", f.Kind, f.Client, f.Group, via, f.State)
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

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
