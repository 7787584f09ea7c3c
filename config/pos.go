package config

import (
	"strconv"
	"strings"
)

// BurntSushi/toml v1.6 keeps key positions only privately, and only one per
// dotted key name (the last [[proxy]] wins), so error lines come from this
// small scanner instead. It runs on text the TOML parser has accepted, but
// is safe on any text (it only guesses lines on text that is not TOML), and
// records the line of every key, table header and array element under a
// path like "proxy[1].address[0]" (array indexes are 0-based).

type posScanner struct {
	s    string
	i    int
	line int
	pos  map[string]int
	aot  map[string]int // array-of-tables path → number of elements so far
}

// keyLines returns path → line for the TOML text s.
func keyLines(s string) map[string]int {
	p := &posScanner{s: s, line: 1, pos: map[string]int{}, aot: map[string]int{}}
	p.document()
	return p.pos
}

func (p *posScanner) eof() bool { return p.i >= len(p.s) }

func (p *posScanner) peek(prefix string) bool { return strings.HasPrefix(p.s[p.i:], prefix) }

func (p *posScanner) advance(n int) {
	for k := 0; k < n && p.i < len(p.s); k++ {
		if p.s[p.i] == '\n' {
			p.line++
		}
		p.i++
	}
}

// skipSpace skips blanks and, when newlines is set, newlines and comments.
func (p *posScanner) skipSpace(newlines bool) {
	for !p.eof() {
		switch c := p.s[p.i]; {
		case c == ' ' || c == '\t' || c == '\r':
			p.i++
		case newlines && c == '\n':
			p.advance(1)
		case newlines && c == '#':
			p.skipLine()
		default:
			return
		}
	}
}

// skipLine moves to the start of the next line.
func (p *posScanner) skipLine() {
	for !p.eof() && p.s[p.i] != '\n' {
		p.i++
	}
	p.advance(1)
}

func (p *posScanner) record(path string, line int) {
	if _, ok := p.pos[path]; !ok {
		p.pos[path] = line
	}
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func (p *posScanner) document() {
	table := ""
	for {
		p.skipSpace(true)
		if p.eof() {
			return
		}
		if p.s[p.i] == '[' {
			table = p.header()
			p.skipLine()
			continue
		}
		line := p.line
		segs := p.key()
		path := table
		for _, s := range segs {
			path = join(path, s)
			p.record(path, line)
		}
		p.skipSpace(false)
		if !p.peek("=") {
			p.skipLine()
			continue
		}
		p.advance(1)
		p.skipSpace(false)
		p.value(path)
		p.skipSpace(false)
		if !p.eof() && p.s[p.i] == '#' || !p.eof() && p.s[p.i] == '\n' {
			p.skipLine()
		}
	}
}

// header reads [a.b] or [[a.b]] and returns the path of the table it opens.
func (p *posScanner) header() string {
	line := p.line
	array := p.peek("[[")
	if array {
		p.advance(2)
	} else {
		p.advance(1)
	}
	segs := p.key()
	path := ""
	for k, s := range segs {
		path = join(path, s)
		if k == len(segs)-1 && array {
			n := p.aot[path]
			p.aot[path] = n + 1
			path += "[" + strconv.Itoa(n) + "]"
		} else if n, ok := p.aot[path]; ok {
			path += "[" + strconv.Itoa(n-1) + "]"
		}
	}
	p.record(path, line)
	return path
}

// key reads a possibly dotted key and returns its segments.
func (p *posScanner) key() []string {
	var segs []string
	for {
		p.skipSpace(false)
		if p.eof() {
			return segs
		}
		switch p.s[p.i] {
		case '"':
			start := p.i
			p.basicString()
			if v, err := strconv.Unquote(p.s[start:p.i]); err == nil {
				segs = append(segs, v)
			} else {
				segs = append(segs, p.content(start))
			}
		case '\'':
			start := p.i
			p.literalString()
			segs = append(segs, p.content(start))
		default:
			start := p.i
			for !p.eof() && isBare(p.s[p.i]) {
				p.i++
			}
			if p.i == start {
				return segs
			}
			segs = append(segs, p.s[start:p.i])
		}
		p.skipSpace(false)
		if !p.peek(".") {
			return segs
		}
		p.advance(1)
	}
}

// content is the text of the string whose opening quote is at start and
// which the scanner has just passed: without its closing quote, if it has
// one (at the end of the text it may not).
func (p *posScanner) content(start int) string {
	end := p.i // > start: the opening quote was passed
	if end > start+1 && p.s[end-1] == p.s[start] {
		end--
	}
	return p.s[start+1 : end]
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func (p *posScanner) basicString() {
	if p.peek(`"""`) {
		p.advance(3)
		for !p.eof() {
			switch {
			case p.s[p.i] == '\\':
				p.advance(2)
			case p.peek(`"""`):
				p.advance(3)
				// Up to two more quotes may close the string's content.
				for k := 0; k < 2 && p.peek(`"`); k++ {
					p.advance(1)
				}
				return
			default:
				p.advance(1)
			}
		}
		return
	}
	p.advance(1)
	for !p.eof() && p.s[p.i] != '"' && p.s[p.i] != '\n' {
		if p.s[p.i] == '\\' {
			p.advance(1)
		}
		p.advance(1)
	}
	p.advance(1)
}

func (p *posScanner) literalString() {
	if p.peek("'''") {
		p.advance(3)
		for !p.eof() && !p.peek("'''") {
			p.advance(1)
		}
		p.advance(3)
		for k := 0; k < 2 && p.peek("'"); k++ {
			p.advance(1)
		}
		return
	}
	p.advance(1)
	for !p.eof() && p.s[p.i] != '\'' && p.s[p.i] != '\n' {
		p.advance(1)
	}
	p.advance(1)
}

// value skips one value, recording the lines of array elements and of keys
// of inline tables under path.
func (p *posScanner) value(path string) {
	if p.eof() {
		return
	}
	switch p.s[p.i] {
	case '"':
		p.basicString()
	case '\'':
		p.literalString()
	case '[':
		p.advance(1)
		for n := 0; ; n++ {
			p.skipSpace(true)
			if p.eof() {
				return
			}
			if p.s[p.i] == ']' {
				p.advance(1)
				return
			}
			elem := path + "[" + strconv.Itoa(n) + "]"
			p.record(elem, p.line)
			before := p.i
			p.value(elem)
			p.skipSpace(true)
			if p.peek(",") {
				p.advance(1)
			} else if p.i == before {
				p.advance(1) // never loop on a surprise
			}
		}
	case '{':
		p.advance(1)
		for {
			p.skipSpace(true)
			if p.eof() {
				return
			}
			if p.s[p.i] == '}' {
				p.advance(1)
				return
			}
			line := p.line
			before := p.i
			segs := p.key()
			sub := path
			for _, s := range segs {
				sub = join(sub, s)
				p.record(sub, line)
			}
			p.skipSpace(false)
			if p.peek("=") {
				p.advance(1)
				p.skipSpace(false)
				p.value(sub)
			}
			p.skipSpace(true)
			if p.peek(",") {
				p.advance(1)
			} else if p.i == before {
				p.advance(1)
			}
		}
	default:
		for !p.eof() && !strings.ContainsRune(",]}#\n", rune(p.s[p.i])) {
			p.i++
		}
	}
}
