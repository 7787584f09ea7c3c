package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/pias-net/pias/router"
)

// decoder walks the generic TOML tree of one file, checking it against the
// schema, and collects errors with the line of the offending key.
//
// The file is parsed by BurntSushi/toml into map[string]any and every table
// is then read key by key: a key nobody asked for is an unknown key. (This is
// stricter than MetaData.Undecoded, which matches struct fields
// case-insensitively and cannot tell the elements of [[proxy]] apart.)
type decoder struct {
	read  FileReader // reads the key files the config names
	file  string
	dir   string
	lines map[string]int
	errs  []*Error
	now   time.Time // when the file was read: certificates are checked at this time
}

// parseFile reads and parses a TOML file. The error is an *Error.
func (r FileReader) parseFile(path string) (*decoder, map[string]any, error) {
	data, err := r(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, nil, &Error{File: path, Msg: err.Error()}
	}
	var m map[string]any
	if _, err := toml.Decode(string(data), &m); err != nil {
		e := &Error{File: path, Line: 1, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			e.Line = pe.Position.Line
			e.Key = pe.LastKey
			e.Msg = pe.Message
		}
		if e.Line < 1 {
			e.Line = 1
		}
		return nil, nil, e
	}
	d := &decoder{read: r, file: path, dir: filepath.Dir(path), lines: keyLines(string(data)), now: time.Now()}
	return d, m, nil
}

// err returns the first error by line, carrying the others (Errors), or nil.
func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
	first := *d.errs[0]
	first.more = d.errs[1:]
	return &first
}

func (d *decoder) errf(path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: d.lineOf(path), Key: displayKey(path), Msg: fmt.Sprintf(format, args...)})
}

// lineOf is the line of path, else of its first child, else of its parent
// (the table header), else 1.
func (d *decoder) lineOf(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := d.lines[p]; ok {
			return l
		}
		best := 0
		for k, l := range d.lines {
			if (strings.HasPrefix(k, p+".") || strings.HasPrefix(k, p+"[")) && (best == 0 || l < best) {
				best = l
			}
		}
		if best > 0 {
			return best
		}
	}
	return 1
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

var indexRE = regexp.MustCompile(`\[[0-9]+\]`)

// displayKey drops the array indexes: "proxy[1].address[0]" → "proxy.address".
func displayKey(p string) string { return indexRE.ReplaceAllString(p, "") }

// table is one TOML table being read.
type table struct {
	d    *decoder
	path string
	m    map[string]any
	seen map[string]bool
}

func (d *decoder) root(m map[string]any) *table {
	return &table{d: d, m: m, seen: map[string]bool{}}
}

func (t *table) sub(key string) string { return join(t.path, key) }

func (t *table) has(key string) bool {
	_, ok := t.m[key]
	return ok
}

func (t *table) get(key string, required bool) (any, bool) {
	t.seen[key] = true
	v, ok := t.m[key]
	if !ok && required {
		t.d.errf(t.sub(key), "required key is missing")
	}
	return v, ok
}

// done reports every key of t that was not read.
func (t *table) done() {
	var keys []string
	for k := range t.m {
		if !t.seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		hint := ""
		for s := range t.seen {
			if strings.EqualFold(s, k) {
				hint = fmt.Sprintf(" (did you mean %q?)", s)
			}
		}
		t.d.errf(t.sub(k), "unknown key%s", hint)
	}
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date/time"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

func (t *table) str(key string, required bool) (string, bool) {
	v, ok := t.get(key, required)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	if !ok {
		t.d.errf(t.sub(key), "want a string, got %s", typeName(v))
		return "", false
	}
	return s, true
}

// boolean reads true or false.
func (t *table) boolean(key string, required bool) (bool, bool) {
	v, ok := t.get(key, required)
	if !ok {
		return false, false
	}
	b, ok := v.(bool)
	if !ok {
		t.d.errf(t.sub(key), "want true or false, got %s", typeName(v))
		return false, false
	}
	return b, true
}

// integer reads an integer in [lo, hi].
func (t *table) integer(key string, required bool, lo, hi int64) (int64, bool) {
	v, ok := t.get(key, required)
	if !ok {
		return 0, false
	}
	n, ok := v.(int64)
	if !ok {
		t.d.errf(t.sub(key), "want an integer, got %s", typeName(v))
		return 0, false
	}
	if n < lo || n > hi {
		t.d.errf(t.sub(key), "%d is out of range %d..%d", n, lo, hi)
		return 0, false
	}
	return n, true
}

// strs reads an array of strings; it returns the strings with their paths.
func (t *table) strs(key string, required bool) (vals, paths []string, ok bool) {
	v, ok := t.get(key, required)
	if !ok {
		return nil, nil, false
	}
	arr, ok := v.([]any)
	if !ok {
		t.d.errf(t.sub(key), "want an array of strings, got %s", typeName(v))
		return nil, nil, false
	}
	ok = true
	for i, e := range arr {
		p := t.sub(key) + "[" + strconv.Itoa(i) + "]"
		s, isStr := e.(string)
		if !isStr {
			t.d.errf(p, "want an array of strings, element %d is %s", i+1, typeName(e))
			ok = false
			continue
		}
		vals = append(vals, s)
		paths = append(paths, p)
	}
	return vals, paths, ok
}

// tables reads an array of tables ([[key]] or key = [{…}, …]).
func (t *table) tables(key string) []*table {
	v, ok := t.get(key, false)
	if !ok {
		return nil
	}
	var ms []map[string]any
	switch v := v.(type) {
	case []map[string]any:
		ms = v
	case []any:
		for i, e := range v {
			m, ok := e.(map[string]any)
			if !ok {
				t.d.errf(t.sub(key)+"["+strconv.Itoa(i)+"]", "want an array of tables ([[%s]]), element %d is %s", key, i+1, typeName(e))
				return nil
			}
			ms = append(ms, m)
		}
	default:
		t.d.errf(t.sub(key), "want an array of tables ([[%s]]), got %s", key, typeName(v))
		return nil
	}
	out := make([]*table, len(ms))
	for i, m := range ms {
		out[i] = &table{d: t.d, path: t.sub(key) + "[" + strconv.Itoa(i) + "]", m: m, seen: map[string]bool{}}
	}
	return out
}

// Value parsers: each reports its own error at path.

func (d *decoder) addr(path, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		d.errf(path, "%q is not an IP address", s)
		return a, false
	}
	if a.Zone() != "" || a.Is4In6() {
		d.errf(path, "%q: want a plain IPv4 or IPv6 address (no zone, no IPv4-mapped IPv6)", s)
		return a, false
	}
	return a, true
}

func (d *decoder) prefix(path, s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		d.errf(path, "%q is not a prefix like 100.64.0.0/16", s)
		return p, false
	}
	if p.Addr().Is4In6() {
		d.errf(path, "%q: IPv4-mapped IPv6 prefixes are not allowed", s)
		return p, false
	}
	if p.Masked() != p {
		d.errf(path, "%q has host bits set (did you mean %s?)", s, p.Masked())
		return p, false
	}
	return p, true
}

// addrPort parses host:port; port 0 is allowed only when anyPort is set.
func (d *decoder) addrPort(path, s string, anyPort bool) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		d.errf(path, "%q is not IP:PORT (IPv6 as [ADDR]:PORT)", s)
		return ap, false
	}
	if ap.Addr().Is4In6() {
		d.errf(path, "%q: IPv4-mapped IPv6 addresses are not allowed", s)
		return ap, false
	}
	if ap.Port() == 0 && !anyPort {
		d.errf(path, "%q: port 0 is not allowed here", s)
		return ap, false
	}
	return ap, true
}

func (d *decoder) group(path, s string) (router.Group, bool) {
	g, err := router.ParseGroup(s)
	if err != nil {
		d.errf(path, "%v", err)
		return g, false
	}
	return g, true
}

func (d *decoder) duration(path, s string) (time.Duration, bool) {
	v, err := time.ParseDuration(s)
	if err != nil {
		d.errf(path, "%q is not a duration like \"5s\" or \"1m30s\"", s)
		return 0, false
	}
	if v <= 0 {
		d.errf(path, "%q: want a positive duration", s)
		return 0, false
	}
	return v, true
}

// keyFile reads a 32-byte key from a file holding its base64 form; what
// names the key in errors.
func (d *decoder) keyFile(path, name, what string) (Key, string, bool) {
	data, file, ok := d.readFile(path, name)
	if !ok {
		return Key{}, file, false
	}
	k, err := ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		d.errf(path, "%s: not a %s: %v", file, what, err)
		return Key{}, file, false
	}
	if k.IsZero() {
		d.errf(path, "%s: the %s is all zeroes", file, what)
		return Key{}, file, false
	}
	return k, file, true
}
