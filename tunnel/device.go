// Package tunnel holds pias's devices: the wireguard-go device of a node, the
// in-memory tun.Device that joins it to a proxy's router, and the host
// interfaces of edges.
package tunnel

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/pias-net/pias/tunnel/rawbind"
)

// Peer is one WireGuard peer of a node.
type Peer struct {
	PublicKey  [32]byte
	Endpoint   netip.AddrPort // zero when the peer dials us
	AllowedIPs []netip.Prefix
	Keepalive  time.Duration // persistent keepalive; zero disables it
}

// Device is a node's wireguard-go device.
type Device struct {
	*device.Device
	bind conn.Bind
}

// Logf is a printf-style logger.
type Logf func(format string, args ...any)

// NewDevice starts a wireguard-go device on t and bind with the given private
// key, UDP listen port (0 picks one) and peers, and brings it up.
func NewDevice(t tun.Device, bind conn.Bind, priv [32]byte, port uint16, peers []Peer, logf Logf) (*Device, error) {
	if bind == nil {
		bind = rawbind.New()
	}
	logger := &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	if logf != nil {
		logger.Errorf = logf
		if os.Getenv("PIAS_WG_VERBOSE") != "" {
			logger.Verbosef = logf
		}
	}
	d := &Device{Device: device.NewDevice(t, bind, logger), bind: bind}
	if err := d.IpcSet(uapiConfig(priv, port, peers)); err != nil {
		d.Close()
		return nil, fmt.Errorf("configure wireguard: %w", err)
	}
	if err := d.Up(); err != nil {
		d.Close()
		return nil, fmt.Errorf("bring wireguard up: %w", err)
	}
	return d, nil
}

// ListenPort reports the UDP port the device actually listens on.
func (d *Device) ListenPort() (uint16, error) {
	s, err := d.IpcGet()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(s, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			var p uint16
			_, err := fmt.Sscan(v, &p)
			return p, err
		}
	}
	return 0, fmt.Errorf("wireguard reports no listen port")
}

// uapiConfig renders the wireguard-go UAPI "set" text for a full configuration.
func uapiConfig(priv [32]byte, port uint16, peers []Peer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\nlisten_port=%d\n", hex.EncodeToString(priv[:]), port)
	writePeers(&b, peers)
	return b.String()
}

// SetPeers replaces the device's peers.
func (d *Device) SetPeers(peers []Peer) error {
	var b strings.Builder
	writePeers(&b, peers)
	return d.IpcSet(b.String())
}

func writePeers(b *strings.Builder, peers []Peer) {
	b.WriteString("replace_peers=true\n")
	for _, p := range peers {
		writePeer(b, p)
	}
}

func writePeer(b *strings.Builder, p Peer) {
	fmt.Fprintf(b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
	if p.Endpoint.IsValid() {
		fmt.Fprintf(b, "endpoint=%s\n", p.Endpoint)
	}
	// Always written: wireguard-go carries a keepalive over to the peers
	// that follow it in one set when the value is left out.
	fmt.Fprintf(b, "persistent_keepalive_interval=%d\n", int(p.Keepalive/time.Second))
	b.WriteString("replace_allowed_ips=true\n")
	for _, a := range p.AllowedIPs {
		fmt.Fprintf(b, "allowed_ip=%s\n", a)
	}
}

// UpdateAllowedIPs replaces the allowed IPs of the given peers, which must
// already be peers of the device, and touches nothing else: no other peer,
// no endpoint, no keepalive, no handshake. Peers are set in order, and a
// prefix set on one peer leaves whichever peer held it, so to move a prefix
// list the peer that gains it first: it never lacks a peer in between.
func (d *Device) UpdateAllowedIPs(peers []Peer) error {
	var b strings.Builder
	for _, p := range peers {
		fmt.Fprintf(&b, "public_key=%s\nupdate_only=true\nreplace_allowed_ips=true\n", hex.EncodeToString(p.PublicKey[:]))
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	return d.IpcSet(b.String())
}

// AddPeer adds p as a peer, or updates it if it is one already (its
// endpoint, keepalive and allowed IPs), leaving every other peer alone.
func (d *Device) AddPeer(p Peer) error {
	var b strings.Builder
	writePeer(&b, p)
	return d.IpcSet(b.String())
}

// ResetPeer removes a peer and adds it again as p, in one set: its session
// and handshake state are gone, so the next packet to it handshakes anew.
func (d *Device) ResetPeer(p Peer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hex.EncodeToString(p.PublicKey[:]))
	writePeer(&b, p)
	return d.IpcSet(b.String())
}

// RemovePeer removes the peer with this key, and its sessions (nothing if
// it is no peer).
func (d *Device) RemovePeer(key [32]byte) error {
	return d.IpcSet(fmt.Sprintf("public_key=%s\nremove=true\n", hex.EncodeToString(key[:])))
}

// LastHandshake is when the peer with this key last completed a handshake
// with this device (zero if never, or if it is no peer). It reads the
// whole configuration: call it now and then, not per packet.
func (d *Device) LastHandshake(key [32]byte) (time.Time, error) {
	ps, err := d.Peers()
	for _, p := range ps {
		if p.PublicKey == key {
			return p.LastHandshake, nil
		}
	}
	return time.Time{}, err
}

// PeerStats is one peer's counters, as the device's UAPI reports them.
type PeerStats struct {
	PublicKey     [32]byte
	RxBytes       uint64    // handshake messages included
	TxBytes       uint64    // handshake messages included
	LastHandshake time.Time // zero: none completed yet
	// Endpoint is where the device sends to the peer now: the one it was
	// given, or the one it learned from the peer's last packet.
	Endpoint netip.AddrPort
}

// Peers reads every peer's counters, in the device's order. It reads the
// whole configuration once.
func (d *Device) Peers() ([]PeerStats, error) {
	s, err := d.IpcGet()
	if err != nil {
		return nil, err
	}
	return parsePeers(s), nil
}

// parsePeers reads the peers of a UAPI "get" answer.
func parsePeers(s string) []PeerStats {
	var out []PeerStats
	var cur *PeerStats
	var sec, nsec int64
	done := func() {
		if cur != nil {
			cur.LastHandshake = handshakeTime(sec, nsec)
		}
	}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if k == "public_key" {
			done()
			var key [32]byte
			if b, err := hex.DecodeString(v); err == nil && len(b) == len(key) {
				copy(key[:], b)
			}
			out = append(out, PeerStats{PublicKey: key})
			cur, sec, nsec = &out[len(out)-1], 0, 0
			continue
		}
		if cur == nil {
			continue
		}
		if k == "endpoint" {
			cur.Endpoint, _ = netip.ParseAddrPort(v)
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "rx_bytes":
			cur.RxBytes = n
		case "tx_bytes":
			cur.TxBytes = n
		case "last_handshake_time_sec":
			sec = int64(n)
		case "last_handshake_time_nsec":
			nsec = int64(n)
		}
	}
	done()
	return out
}

func handshakeTime(sec, nsec int64) time.Time {
	if sec == 0 && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, nsec)
}
