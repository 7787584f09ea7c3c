package web

import (
	"bufio"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/tunnel"
)

// wgPeer is one WireGuard peer's counters, as the device's UAPI reports them.
type wgPeer struct {
	Key           config.Key
	RX, TX        uint64
	LastHandshake time.Time // zero: none yet
}

// wgPeers reads a device's peers; nil if it has none or cannot tell.
func wgPeers(d *tunnel.Device) []wgPeer {
	if d == nil {
		return nil
	}
	s, err := d.IpcGet()
	if err != nil {
		return nil
	}
	return parseUAPI(s)
}

// parseUAPI reads the peers of a UAPI "get" answer.
func parseUAPI(s string) []wgPeer {
	var out []wgPeer
	var cur *wgPeer
	var sec, nsec int64
	done := func() {
		if cur != nil && (sec != 0 || nsec != 0) {
			cur.LastHandshake = time.Unix(sec, nsec)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			done()
			var key config.Key
			if b, err := hex.DecodeString(v); err == nil && len(b) == len(key) {
				copy(key[:], b)
			}
			out = append(out, wgPeer{Key: key})
			cur, sec, nsec = &out[len(out)-1], 0, 0
		case "rx_bytes", "tx_bytes", "last_handshake_time_sec", "last_handshake_time_nsec":
			if cur == nil {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "rx_bytes":
				cur.RX = n
			case "tx_bytes":
				cur.TX = n
			case "last_handshake_time_sec":
				sec = int64(n)
			default:
				nsec = int64(n)
			}
		}
	}
	done()
	return out
}
