package tunnel

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// The macOS configuration of a kernel TUN is a list of ifconfig and route
// commands, each with the command that undoes it. It is built here, on every
// OS, so that it can be tested anywhere.

type cmdStep struct {
	do, undo []string // undo nil: nothing to undo
}

// bsdSteps configures utun interface name as wg-quick does on macOS.
func bsdSteps(name string, addrs []netip.Addr, routes []netip.Prefix, mtu int) []cmdStep {
	steps := []cmdStep{{do: []string{"ifconfig", name, "mtu", strconv.Itoa(mtu), "up"}}}
	for _, a := range addrs {
		s := a.String()
		if a.Is4() {
			// utun is point-to-point: the destination is the address itself.
			steps = append(steps, cmdStep{
				do:   []string{"ifconfig", name, "inet", s, s, "alias"},
				undo: []string{"ifconfig", name, "inet", s, "-alias"},
			})
		} else {
			steps = append(steps, cmdStep{
				do:   []string{"ifconfig", name, "inet6", s, "prefixlen", "128", "alias"},
				undo: []string{"ifconfig", name, "inet6", s, "-alias"},
			})
		}
	}
	for _, p := range routes {
		fam := "-inet"
		if p.Addr().Is6() {
			fam = "-inet6"
		}
		steps = append(steps, cmdStep{
			do:   []string{"route", "-q", "-n", "add", fam, p.String(), "-interface", name},
			undo: []string{"route", "-q", "-n", "delete", fam, p.String(), "-interface", name},
		})
	}
	return steps
}

// runSteps runs steps with run; on a failure it undoes the steps done and
// returns the error. Otherwise it returns the undo of all of them.
func runSteps(steps []cmdStep, run func([]string) error) (undoStack, error) {
	var undo undoStack
	for _, s := range steps {
		if err := run(s.do); err != nil {
			undo.run()
			return nil, err
		}
		if s.undo != nil {
			u := s.undo
			undo.push(func() error { return run(u) })
		}
	}
	return undo, nil
}

// runCommand runs a command and makes its failure one line with its output.
func runCommand(args []string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("%s: %s", strings.Join(args, " "), oneLine(msg))
	}
	return nil
}
