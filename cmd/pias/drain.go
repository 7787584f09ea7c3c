package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

func init() {
	register("drain", "take a target's groups out of selection for new flows and let its live flows finish", runDrain)
	register("undrain", "put a drained target's groups back (it joins them again)", runUndrain)
}

// drainPoll is how often drain and undrain read the target's status.
const drainPoll = 250 * time.Millisecond

// nodeArg takes the node's name out of args: the first argument, or the
// last when flags come first (as pias status reads it).
func nodeArg(args []string, valued ...string) (string, []string) {
	switch n := len(args); {
	case n == 0:
		return "", args
	case !strings.HasPrefix(args[0], "-"):
		return args[0], args[1:]
	case !strings.HasPrefix(args[n-1], "-") && (n < 2 || !slices.Contains(valued, strings.TrimLeft(args[n-2], "-"))):
		return args[n-1], args[:n-1]
	}
	return "", args
}

func runDrain(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs, parse := flags("drain", "drain INTERFACE_NAME [--group GROUP] [--timeout D]   (a target's interface_name, default pias-NAME)", stdout, stderr)
	group := fs.String("group", "", "the `GROUP` to drain, e.g. 100.65.0.1:80/tcp (default: every group of the target)")
	timeout := fs.Duration("timeout", overlay.DefaultDrainTimeout, "how long live flows may take to finish; the JAP drops those left then (at most "+overlay.MaxDrainTimeout.String()+")")
	name, args := nodeArg(args, "group", "timeout")
	if rc := parse(args); rc >= 0 {
		return rc
	}
	g, rc := nodeAndGroup("drain", name, *group, stderr)
	if rc >= 0 {
		return rc
	}
	if *timeout <= 0 || *timeout > overlay.MaxDrainTimeout {
		fmt.Fprintf(stderr, "pias drain: --timeout %v: want more than 0 and at most %v\n", *timeout, overlay.MaxDrainTimeout)
		return 2
	}
	path := node.AdminSocket(name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := node.AdminDrain(ctx, path, g, *timeout)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "pias drain: %v\n", err)
		return 1
	}
	// The JAP reports the flows left with each answer to the target's
	// drains, one a keepalive interval: show them until every group is
	// drained. Past the timeout the JAP drops the target; allow its last
	// answer a few seconds more.
	deadline := time.Now().Add(*timeout + 10*time.Second)
	shown := map[string]string{}
	for {
		groups, err := targetGroups(path, g)
		if err != nil {
			fmt.Fprintf(stderr, "pias drain: %v\n", err)
			return 1
		}
		done := true
		for _, js := range groups {
			var line string
			switch js.State {
			case "draining":
				done = false
				line = fmt.Sprintf("%s draining: %s", js.Group, flowsLeft(js.Flows))
				if js.Reason != "" {
					line += fmt.Sprintf(" (%q)", js.Reason) // the JAP's words
				}
			case "drained":
				line = fmt.Sprintf("%s drained: %s", js.Group, js.Reason)
			default:
				fmt.Fprintf(stderr, "pias drain: %s is %s, not draining (undrained meanwhile?)\n", js.Group, js.State)
				return 1
			}
			if shown[js.Group] != line {
				fmt.Fprintln(stdout, line)
				shown[js.Group] = line
			}
		}
		if done {
			return 0
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(stderr, "pias drain: still draining %v after the timeout; see pias status %s\n", *timeout, name)
			return 1
		}
		time.Sleep(drainPoll)
	}
}

func runUndrain(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs, parse := flags("undrain", "undrain INTERFACE_NAME [--group GROUP]   (a target's interface_name, default pias-NAME)", stdout, stderr)
	group := fs.String("group", "", "the `GROUP` to undrain (default: every group of the target)")
	name, args := nodeArg(args, "group")
	if rc := parse(args); rc >= 0 {
		return rc
	}
	g, rc := nodeAndGroup("undrain", name, *group, stderr)
	if rc >= 0 {
		return rc
	}
	path := node.AdminSocket(name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := node.AdminUndrain(ctx, path, g)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "pias undrain: %v\n", err)
		return 1
	}
	// Wait for the joins' answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		groups, err := targetGroups(path, g)
		if err != nil {
			fmt.Fprintf(stderr, "pias undrain: %v\n", err)
			return 1
		}
		pending := ""
		for _, js := range groups {
			if js.State == "pending" {
				pending = js.Group
			}
		}
		if pending == "" {
			for _, js := range groups {
				switch js.State {
				case "refused":
					fmt.Fprintf(stdout, "%s refused by %s: %q\n", js.Group, logStr(js.JAP), js.Reason)
				default:
					fmt.Fprintf(stdout, "%s %s at %s\n", js.Group, js.State, logStr(js.JAP))
				}
			}
			return 0
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(stderr, "pias undrain: %s not joined yet; see pias status %s\n", pending, name)
			return 1
		}
		time.Sleep(drainPoll)
	}
}

// nodeAndGroup checks the node's name and the group's text (its canonical
// form is returned; "" is every group).
func nodeAndGroup(cmd, name, group string, stderr io.Writer) (string, int) {
	if name == "" {
		fmt.Fprintf(stderr, "pias %s: which target? give its interface_name (default pias-NAME)\n", cmd)
		return "", 2
	}
	if group == "" {
		return "", -1
	}
	g, err := router.ParseGroup(group)
	if err != nil {
		fmt.Fprintf(stderr, "pias %s: --group: %v\n", cmd, err)
		return "", 2
	}
	return g.String(), -1
}

// targetGroups reads the target's groups from its admin socket: group, or
// all of them when group is "".
func targetGroups(path, group string) ([]node.JoinStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := node.ReadStatus(ctx, path, &raw); err != nil {
		return nil, err
	}
	var st node.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, err
	}
	if st.Edge == nil {
		return nil, fmt.Errorf("%s is a %s, not a target", logStr(st.Name), st.Role)
	}
	var out []node.JoinStatus
	for _, js := range st.Edge.Groups {
		if group == "" || js.Group == group {
			out = append(out, js)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no group %s", logStr(st.Name), group)
	}
	return out, nil
}
