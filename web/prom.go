package web

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Metrics writes the Prometheus text exposition format (version 0.0.4).
// Every number pias exposes is read when it is scraped, from counters and
// snapshots the node keeps anyway, so there is nothing to register: a
// family is its HELP and TYPE lines, then its samples.
type Metrics struct {
	b    []byte
	last string // the family being written
}

// Family starts a metric family; typ is "counter", "gauge" or "untyped".
// A family whose samples are all left out still has its HELP and TYPE.
func (m *Metrics) Family(name, typ, help string) {
	m.last = name
	m.b = append(m.b, "# HELP "...)
	m.b = append(m.b, name...)
	m.b = append(m.b, ' ')
	m.b = appendEscaped(m.b, help, false)
	m.b = append(m.b, "\n# TYPE "...)
	m.b = append(m.b, name...)
	m.b = append(m.b, ' ')
	m.b = append(m.b, typ...)
	m.b = append(m.b, '\n')
}

// Sample writes one sample of the current family; labels are name, value
// pairs.
func (m *Metrics) Sample(v float64, labels ...string) {
	m.b = append(m.b, m.last...)
	m.appendLabels(labels)
	m.b = append(m.b, ' ')
	switch {
	case math.IsInf(v, 1):
		m.b = append(m.b, "+Inf"...)
	case math.IsInf(v, -1):
		m.b = append(m.b, "-Inf"...)
	case math.IsNaN(v):
		m.b = append(m.b, "NaN"...)
	default:
		m.b = strconv.AppendFloat(m.b, v, 'g', -1, 64)
	}
	m.b = append(m.b, '\n')
}

// Count writes one integer sample of the current family (counters: exact
// past 2^53).
func (m *Metrics) Count(v uint64, labels ...string) {
	m.b = append(m.b, m.last...)
	m.appendLabels(labels)
	m.b = append(m.b, ' ')
	m.b = strconv.AppendUint(m.b, v, 10)
	m.b = append(m.b, '\n')
}

// One writes a family of one sample.
func (m *Metrics) One(name, typ, help string, v float64) {
	m.Family(name, typ, help)
	m.Sample(v)
}

// Bytes is what was written.
func (m *Metrics) Bytes() []byte { return m.b }

func (m *Metrics) appendLabels(labels []string) {
	if len(labels) < 2 {
		return
	}
	m.b = append(m.b, '{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			m.b = append(m.b, ',')
		}
		m.b = append(m.b, labels[i]...)
		m.b = append(m.b, `="`...)
		m.b = appendEscaped(m.b, labels[i+1], true)
		m.b = append(m.b, '"')
	}
	m.b = append(m.b, '}')
}

// appendEscaped escapes a HELP text (\ and newline) or a label value (also
// "). Strings from the network (names, reasons) pass through here, so they
// can never end a line or a label early.
func appendEscaped(b []byte, s string, quote bool) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if !strings.ContainsAny(s, "\\\n\"") {
		return append(b, s...)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}
