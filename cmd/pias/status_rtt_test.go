package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/pias-net/pias/node"
)

// TestStatusRTTColumn: pias status shows an RTT only for a live member (or
// candidate) that has one; "—" for one never or no longer measured, and
// for the dead, even when a node reports the dead one's last RTT.
func TestStatusRTTColumn(t *testing.T) {
	ip := netip.MustParseAddr
	proxy := &node.Status{Name: "p1", Role: "proxy", Proxy: &node.ProxyStatus{Cluster: "c1", Members: []node.MemberStatus{
		{Name: "p1", Addr: ip("100.64.0.1"), Cluster: "c1", State: "alive"},
		{Name: "p2", Addr: ip("100.64.0.2"), Cluster: "c1", State: "alive", RTTms: 0.7, Watched: true},
		{Name: "p3", Addr: ip("100.64.0.3"), Cluster: "c3", State: "alive"},
		{Name: "p4", Addr: ip("100.64.0.4"), Cluster: "c1", State: "dead", RTTms: 136.8},
	}}}
	client := &node.Status{Name: "cl1", Role: "client", Edge: &node.EdgeStatus{Attached: "p1", Candidates: []node.CandidateStatus{
		{Name: "p1", Addr: ip("100.64.0.1"), Live: true, RTTms: 0.25},
		{Name: "p2", Addr: ip("100.64.0.2"), Live: true},
		{Name: "p4", Addr: ip("100.64.0.4"), RTTms: 80.5},
	}}}
	for _, c := range []struct {
		st        *node.Status
		addr, rtt string
	}{
		{proxy, "100.64.0.1", "rtt —"}, // itself
		{proxy, "100.64.0.2", "rtt 0.70 ms"},
		{proxy, "100.64.0.3", "rtt —"}, // never or no longer measured
		{proxy, "100.64.0.4", "rtt —"}, // dead
		{client, "100.64.0.1", "rtt 0.25 ms"},
		{client, "100.64.0.2", "rtt —"},
		{client, "100.64.0.4", "rtt —"}, // dead
	} {
		var b bytes.Buffer
		printStatus(&b, c.st)
		var rows []string
		for _, l := range logLines(b.String()) {
			if strings.Contains(l, c.addr+" ") {
				rows = append(rows, l)
			}
		}
		if len(rows) != 1 || !strings.Contains(rows[0]+" ", c.rtt+" ") {
			t.Errorf("%s's status rows of %s: %q, want one with %q", c.st.Name, c.addr, rows, c.rtt)
		}
	}
}
