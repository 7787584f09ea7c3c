package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pias-net/pias/check"
	"github.com/pias-net/pias/router"
)

// Bounds of a [[group]]'s check.
const (
	MinCheckInterval = 100 * time.Millisecond
	MaxCheckInterval = time.Hour
	MinCheckTimeout  = 10 * time.Millisecond
	MaxCheckRun      = 100  // rise and fall: 1..MaxCheckRun
	MaxCheckPayload  = 1200 // bytes of a udp check's payload: one datagram on any overlay MTU
)

// checkOwnKeys maps each kind's own keys to the kind.
var checkOwnKeys = map[string]string{
	"path": check.KindHTTP, "status": check.KindHTTP,
	"name": check.KindDNS, "type": check.KindDNS, "proto": check.KindDNS,
	"payload": check.KindUDP,
	"command": check.KindExec, "shell": check.KindExec,
}

// groupCheck reads a [[group]]'s check: absent, a kind ("none", "tcp", …)
// with every default, or a table. TCP groups default to a tcp check, UDP
// groups to none.
func (d *decoder) groupCheck(gt *table, g router.Group) check.Spec {
	v, ok := gt.get("check", false)
	if !ok {
		if g.Proto == router.ProtoUDP {
			return check.Defaults(check.KindNone)
		}
		return check.Defaults(check.KindTCP)
	}
	path := gt.sub("check")
	switch v := v.(type) {
	case string:
		switch v {
		case check.KindNone, check.KindTCP, check.KindHTTP, check.KindUDP:
			return check.Defaults(v)
		case check.KindDNS, check.KindExec:
			need := map[string]string{check.KindDNS: "name", check.KindExec: "command"}[v]
			d.errf(path, "kind %q needs %s: write check = { kind = %q, %s = … } or a [group.check] table", v, need, v, need)
		default:
			d.errf(path, "%q: want a kind (%s) or a table", v, kindList())
		}
	case map[string]any:
		ct := &table{d: d, path: path, m: v, seen: map[string]bool{}}
		s := d.checkTable(ct, g)
		ct.done()
		return s
	default:
		d.errf(path, "want a kind (%s) or a table, got %s", kindList(), typeName(v))
	}
	return check.Defaults(check.KindNone)
}

func kindList() string {
	q := make([]string, len(check.Kinds))
	for i, k := range check.Kinds {
		q[i] = fmt.Sprintf("%q", k)
	}
	return strings.Join(q, ", ")
}

func (d *decoder) checkTable(ct *table, g router.Group) check.Spec {
	kind := check.KindTCP
	if s, ok := ct.str("kind", g.Proto == router.ProtoUDP); ok {
		if !isKind(s) {
			d.errf(ct.sub("kind"), "%q: want %s", s, kindList())
			return check.Defaults(check.KindNone)
		}
		kind = s
	} else if ct.has("kind") || g.Proto == router.ProtoUDP {
		return check.Defaults(check.KindNone) // reported
	}
	s := check.Defaults(kind)

	keys := make([]string, 0, len(ct.m))
	for k := range ct.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch owner, own := checkOwnKeys[k]; {
		case k == "kind":
		case kind == check.KindNone:
			ct.seen[k] = true
			d.errf(ct.sub(k), "a check of kind \"none\" takes no other keys")
		case own && owner != kind:
			ct.seen[k] = true
			d.errf(ct.sub(k), "a key of %s checks, and this check is %s", owner, kind)
		}
	}
	if kind == check.KindNone {
		return s
	}

	dur := func(key string, lo, hi time.Duration, into *time.Duration) bool {
		str, ok := ct.str(key, false)
		if !ok {
			return false
		}
		v, ok := d.duration(ct.sub(key), str)
		if !ok {
			return false
		}
		if v < lo || v > hi {
			d.errf(ct.sub(key), "%s: want %v to %v", str, lo, hi)
			return false
		}
		*into = v
		return true
	}
	dur("interval", MinCheckInterval, MaxCheckInterval, &s.Interval)
	if dur("timeout", MinCheckTimeout, MaxCheckInterval, &s.Timeout) && s.Timeout > s.Interval {
		d.errf(ct.sub("timeout"), "%v is longer than the interval %v", s.Timeout, s.Interval)
	} else if !ct.has("timeout") && s.Timeout > s.Interval {
		s.Timeout = s.Interval
	}
	if n, ok := ct.integer("rise", false, 1, MaxCheckRun); ok {
		s.Rise = int(n)
	}
	if n, ok := ct.integer("fall", false, 1, MaxCheckRun); ok {
		s.Fall = int(n)
	}
	if n, ok := ct.integer("port", false, 1, 65535); ok {
		s.Port = uint16(n)
	}

	switch kind {
	case check.KindHTTP:
		if str, ok := ct.str("path", false); ok {
			if err := check.CheckHTTPPath(str); err != nil {
				d.errf(ct.sub("path"), "%v", err)
			} else {
				s.Path = str
			}
		}
		d.checkStatus(ct, &s)
	case check.KindDNS:
		if str, ok := ct.str("name", true); ok {
			if err := check.CheckDNSName(str); err != nil {
				d.errf(ct.sub("name"), "%v", err)
			} else {
				s.Name = str
			}
		}
		if str, ok := ct.str("type", false); ok {
			if t, err := check.ParseDNSType(str); err != nil {
				d.errf(ct.sub("type"), "%v", err)
			} else {
				s.Type = t
			}
		}
		if str, ok := ct.str("proto", false); ok {
			if str != "udp" && str != "tcp" {
				d.errf(ct.sub("proto"), "%q: want \"udp\" or \"tcp\"", str)
			} else {
				s.Proto = str
			}
		}
	case check.KindUDP:
		if str, ok := ct.str("payload", false); ok {
			if len(str) > MaxCheckPayload {
				d.errf(ct.sub("payload"), "%d bytes, want at most %d", len(str), MaxCheckPayload)
			} else {
				s.Payload = []byte(str)
			}
		}
	case check.KindExec:
		if b, ok := ct.boolean("shell", false); ok {
			s.Shell = b
		}
		if vals, _, ok := ct.strs("command", true); ok {
			switch {
			case len(vals) == 0 || vals[0] == "":
				d.errf(ct.sub("command"), "want the program and its arguments, like [\"/usr/bin/check\", \"-q\"]")
			case s.Shell && len(vals) != 1:
				d.errf(ct.sub("command"), "with shell = true, want one string: the script for /bin/sh -c")
			default:
				s.Command = vals
			}
		}
	}
	return s
}

// checkStatus reads status: an integer (one status) or "LO..HI".
func (d *decoder) checkStatus(ct *table, s *check.Spec) {
	v, ok := ct.get("status", false)
	if !ok {
		return
	}
	path := ct.sub("status")
	var lo, hi int64
	switch v := v.(type) {
	case int64:
		lo, hi = v, v
	case string:
		a, b, ok := strings.Cut(v, "..")
		var err1, err2 error
		lo, err1 = strconv.ParseInt(a, 10, 16)
		hi, err2 = strconv.ParseInt(b, 10, 16)
		if !ok || err1 != nil || err2 != nil || strings.ContainsAny(a+b, "+-") {
			d.errf(path, "%q: want a status like 200 or a range like \"200..399\"", v)
			return
		}
	default:
		d.errf(path, "want a status like 200 or a range like \"200..399\", got %s", typeName(v))
		return
	}
	if lo < 100 || hi > 599 || lo > hi {
		d.errf(path, "%d..%d: want statuses within 100..599, the lower first", lo, hi)
		return
	}
	s.StatusMin, s.StatusMax = int(lo), int(hi)
}

func isKind(s string) bool {
	for _, k := range check.Kinds {
		if s == k {
			return true
		}
	}
	return false
}
