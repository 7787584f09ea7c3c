package web

import (
	"maps"
	"runtime"
	"runtime/debug"
	"slices"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
	"github.com/pias-net/pias/tunnel"
)

// memberStates are the states pias_members counts, every one always
// written so that a dashboard sees zeros.
var memberStates = []string{"alive", "suspect", "dead", "joining", "unreachable"}

// writeProxyMetrics writes a proxy's metrics: its router's counters, its
// control plane's, its view of the other proxies, and its groups.
func writeProxyMetrics(m *Metrics, p *node.Proxy) {
	st := p.Router.Stats()
	m.Family("pias_forwarded_packets_total", "counter", "Packets the router handed back to WireGuard, by role: ingress (IAP: a client's packet sent to its JAP), join (JAP: NATed to a local target), reply (a target's reply, at the JAP or at the IAP), echo (a ping answered here).")
	for r := range router.NumRoles {
		m.Count(st.Packets[r], "role", r.String())
	}
	m.Family("pias_forwarded_bytes_total", "counter", "Bytes of pias_forwarded_packets_total, as handed to WireGuard (an encapsulated packet with its outer header), by role.")
	for r := range router.NumRoles {
		m.Count(st.Bytes[r], "role", r.String())
	}
	m.Family("pias_rap_lookups_total", "counter", "Lookups in this IAP's cache of RAP answers, by result: hit (a JAP list), miss (none: the packet waits for a resolve, or is dropped at its caps), negative (a group the RAP does not know: dropped unless it has local targets). New flows, replicated datagrams and pings to anycast addresses look; established flows do not.")
	for l := range router.NumLookups {
		m.Count(st.Lookups[l], "result", l.String())
	}
	m.Family("pias_dropped_packets_total", "counter", "Packets the router dropped, by reason.")
	for r := router.DropReason(1); r < router.NumDropReasons; r++ {
		m.Count(st.Drops[r], "reason", r.String())
	}
	m.Family("pias_queued_packets_total", "counter", "Packets held while their group was resolved.")
	m.Count(st.Queued)
	m.Family("pias_flows_evicted_total", "counter", "Flows evicted because a flow table was full.")
	m.Count(st.Evicted)
	sides := []struct {
		name string
		t    router.TableStats
	}{{"iap", st.IAP}, {"jap", st.JAP}}
	m.Family("pias_flows", "gauge", "Live flows, by side (iap: this proxy took the client's packets in; jap: it NATs them to a target) and protocol.")
	for _, sd := range sides {
		for fp := range router.NumFlowProtos {
			m.Sample(float64(sd.t.Live[fp]), "side", sd.name, "proto", fp.String())
		}
	}
	m.Family("pias_new_flows_total", "counter", "Flows created, by side and protocol.")
	for _, sd := range sides {
		for fp := range router.NumFlowProtos {
			m.Count(sd.t.New[fp], "side", sd.name, "proto", fp.String())
		}
	}
	m.One("pias_resolving_groups", "gauge", "Groups being resolved now (each with a queue).", float64(st.Resolving))
	m.One("pias_queued_bytes", "gauge", "Bytes held in the resolve queues.", float64(st.QueuedBytes))

	cs := p.Overlay.Stats()
	m.Family("pias_control_messages_total", "counter", "Control messages this proxy sent to or received from other nodes, by type.")
	for _, dir := range []struct {
		name string
		by   map[overlay.Type]uint64
	}{{"sent", cs.Sent}, {"received", cs.Received}} {
		for _, t := range sortedTypes(dir.by) {
			m.Count(dir.by[t], "type", t.String(), "direction", dir.name)
		}
	}
	m.Family("pias_control_refused_total", "counter", "Control messages refused because their sender may not send them, by type.")
	for _, t := range sortedTypes(cs.Refused) {
		m.Count(cs.Refused[t], "type", t.String())
	}
	m.Family("pias_control_malformed_total", "counter", "Control messages that did not parse.")
	m.Count(cs.Malformed)
	m.Family("pias_control_dropped_total", "counter", "Control work dropped because the control goroutine was behind.")
	m.Count(p.ControlDropped())
	m.Family("pias_resolves_sent_total", "counter", "RAP lookups this proxy sent as IAP (cache misses).")
	m.Count(cs.ResolvesSent)
	m.Family("pias_resolves_answered_total", "counter", "RAP lookups answered with JAPs.")
	m.Count(cs.ResolvesAnswered)
	m.Family("pias_registers_received_total", "counter", "Registrations received as RAP.")
	m.Count(cs.Registers)
	m.Family("pias_registers_sent_total", "counter", "Registrations sent as JAP (one per RAP).")
	m.Count(cs.RegistersSent)
	m.Family("pias_joins_total", "counter", "Joins accepted as JAP.")
	m.Count(cs.Joins)
	m.Family("pias_probes_sent_total", "counter", "Health probes sent (own and relayed).")
	m.Count(cs.Probes)
	m.Family("pias_member_deaths_declared_total", "counter", "Proxies this proxy declared dead itself.")
	m.Count(cs.FailsDeclared)
	m.Family("pias_member_deaths_total", "counter", "Proxies that turned dead here, whoever declared it.")
	m.Count(cs.Deaths)
	m.Family("pias_member_death_detect_seconds_total", "counter", "Summed over pias_member_deaths_total: the time from the last word heard from the proxy to its death here.")
	m.Sample(cs.DetectTime.Seconds())
	m.Family("pias_membership_changes_total", "counter", "Changes of the live proxy set applied here.")
	m.Count(cs.MembershipChanges)

	if p.Config.CAMode() {
		writeCertMetrics(m, p, cs)
	}

	members := p.Overlay.Members()
	count := map[string]int{}
	for _, mi := range members[1:] {
		count[memberState(mi)]++
	}
	m.Family("pias_members", "gauge", "Other proxies by state, as this proxy sees them.")
	for _, s := range memberStates {
		m.Sample(float64(count[s]), "state", s)
	}
	m.Family("pias_member_up", "gauge", "1 if this proxy holds the proxy alive (or suspect), 0 if dead, joining or cut off.")
	for _, mi := range members[1:] {
		s := memberState(mi)
		m.Sample(b2f(s == "alive" || s == "suspect"), "member", mi.Name, "cluster", mi.Cluster)
	}
	m.Family("pias_member_rtt_seconds", "gauge", "Smoothed probe round trip to each watched proxy with a fresh sample.")
	for _, mi := range members[1:] {
		if mi.Watched && mi.RTT > 0 {
			m.Sample(mi.RTT.Seconds(), "member", mi.Name, "cluster", mi.Cluster)
		}
	}

	rap := p.Overlay.RAPTable()
	n := 0
	for g := range rap {
		if !g.IsEcho() {
			n++
		}
	}
	m.One("pias_rap_groups", "gauge", "Groups registered at this proxy as RAP.", float64(n))
	m.Family("pias_group_targets", "gauge", "Targets joined here as JAP, by group.")
	type gl struct {
		g     string
		loads []router.TargetLoad
		w     int
	}
	var local []gl
	seen := map[router.Group]bool{}
	for _, e := range p.Config.Edges {
		for _, g := range e.Groups {
			if seen[g] {
				continue
			}
			seen[g] = true
			if l := p.Router.Loads(g); len(l) > 0 {
				local = append(local, gl{g.String(), l, p.Router.Weight(g)})
			}
		}
	}
	for _, x := range local {
		m.Sample(float64(len(x.loads)), "group", x.g)
	}
	m.Family("pias_group_weight", "gauge", "Sum of the weights of the targets joined here that take new flows, by group.")
	for _, x := range local {
		m.Sample(float64(x.w), "group", x.g)
	}
	m.Family("pias_group_flows", "gauge", "Live flows to the targets joined here, by group.")
	for _, x := range local {
		f := 0
		for _, l := range x.loads {
			f += l.Flows
		}
		m.Sample(float64(f), "group", x.g)
	}

	names := map[config.Key]string{}
	for _, pp := range p.Config.Proxies {
		names[pp.PublicKey] = pp.Name
	}
	for _, e := range p.Config.Edges {
		names[e.PublicKey] = e.Name
	}
	writeWireGuard(m, p.Config.InterfaceName, p.Device, names)
}

// writeCertMetrics writes what a proxy in CA mode knows of certificates.
func writeCertMetrics(m *Metrics, p *node.Proxy, cs overlay.ProxyStats) {
	m.One("pias_cert_expiry_timestamp_seconds", "gauge", "UNIX time when this proxy's certificate expires.", float64(p.Overlay.CertNotAfter().Unix()))
	m.One("pias_revocation_serial", "gauge", "Serial of the revocation list this proxy holds; 0: none.", float64(p.Overlay.RevocationSerial()))
	m.Family("pias_edges_admitted", "gauge", "Edges (targets and clients) admitted here, by how.")
	m.Sample(float64(len(p.Overlay.CertEdges())), "mode", "certificate")
	m.Family("pias_cert_hellos_refused_total", "counter", "Hellos of nodes that proved their key and were refused (bad, expired or revoked certificate, or what it allows), and told why.")
	m.Count(cs.HellosRefused)
}

// writeEdgeMetrics writes a target's or client's metrics: its attachment,
// candidates and joins.
func writeEdgeMetrics(m *Metrics, e *node.Edge) {
	st := e.Status().Edge
	m.Family("pias_edge_attached", "gauge", "1 for the proxy this edge's anycast prefix is routed to.")
	m.Sample(1, "proxy", st.Attached)
	m.Family("pias_edge_moves_total", "counter", "Times this edge moved its prefixes to another proxy.")
	m.Count(uint64(st.Moves))
	m.Family("pias_edge_candidate_up", "gauge", "1 if the candidate proxy answers this edge's probes.")
	for _, c := range st.Candidates {
		m.Sample(b2f(c.Live), "proxy", c.Name)
	}
	m.Family("pias_edge_candidate_rtt_seconds", "gauge", "Smoothed probe round trip to each live candidate proxy.")
	for _, c := range st.Candidates {
		if c.Live && c.RTTms > 0 {
			m.Sample(c.RTTms/1000, "proxy", c.Name)
		}
	}
	m.Family("pias_edge_groups", "gauge", "This target's groups by join state.")
	count := map[string]int{}
	for _, g := range st.Groups {
		count[g.State]++
	}
	for _, s := range []string{"joined", "pending", "refused", "draining", "drained"} {
		m.Sample(float64(count[s]), "state", s)
	}
	names := map[config.Key]string{}
	for _, pp := range e.Config.Proxies {
		names[pp.PublicKey] = pp.Name
	}
	writeWireGuard(m, e.Config.InterfaceName, e.Device, names)
}

// writeWireGuard writes per-peer counters under the names that
// mdlayher/wireguard_exporter uses, so that its dashboards work.
func writeWireGuard(m *Metrics, dev string, d *tunnel.Device, names map[config.Key]string) {
	var peers []tunnel.PeerStats
	if d != nil {
		peers, _ = d.Peers()
	}
	m.Family("wireguard_peer_receive_bytes_total", "counter", "Bytes received from the peer.")
	for _, p := range peers {
		k := config.Key(p.PublicKey)
		m.Count(p.RxBytes, "device", dev, "public_key", k.String(), "name", names[k])
	}
	m.Family("wireguard_peer_transmit_bytes_total", "counter", "Bytes sent to the peer.")
	for _, p := range peers {
		k := config.Key(p.PublicKey)
		m.Count(p.TxBytes, "device", dev, "public_key", k.String(), "name", names[k])
	}
	m.Family("wireguard_peer_last_handshake_seconds", "gauge", "UNIX time of the last handshake with the peer; 0: none yet.")
	for _, p := range peers {
		k := config.Key(p.PublicKey)
		v := 0.0
		if !p.LastHandshake.IsZero() {
			v = float64(p.LastHandshake.UnixNano()) / 1e9
		}
		m.Sample(v, "device", dev, "public_key", k.String(), "name", names[k])
	}
}

// writeBuild writes pias_build_info and a few of the Go runtime's gauges.
func writeBuild(m *Metrics) {
	version, rev := "(devel)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
			}
		}
	}
	m.Family("pias_build_info", "gauge", "Always 1; the labels say which pias this is.")
	m.Sample(1, "version", version, "revision", rev, "goversion", runtime.Version())
	m.One("go_goroutines", "gauge", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
}

// writeServer writes the event stream's own counters.
func writeServer(m *Metrics, h *hub) {
	counts, missed, streams := h.stats()
	m.Family("pias_events_total", "counter", "Control-plane events at this node, by kind (the map's timeline).")
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		m.Count(counts[k], "kind", k)
	}
	m.One("pias_http_event_streams", "gauge", "Open event streams (GET /events).", float64(streams))
	m.Family("pias_http_events_missed_total", "counter", "Events a slow event stream did not get.")
	m.Count(missed)
}

func memberState(mi overlay.MemberInfo) string {
	if mi.Unreachable {
		return "unreachable"
	}
	return mi.State.String()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func sortedTypes(by map[overlay.Type]uint64) []overlay.Type {
	out := make([]overlay.Type, 0, len(by))
	for t := range by {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}
