package config

import (
	"errors"
	"fmt"
	"strings"
)

// Error is what the loaders return for any problem with a config file. Its
// text is one line: "FILE:LINE: KEY: what is wrong". Key is the dotted TOML
// key without array indexes ("proxy.public_key"); Line is the line of that
// key, or of its table header (or 1) when a required key is missing. Line is
// 0 and Key empty when the file itself could not be read; they are then
// left out of the text.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string

	more []*Error // the file's other problems, by line (see Errors)
}

// Errors lists every problem a loader found in the file err is about, by
// line: a loader returns the first as its error (one line for a node that
// will not start), and pias check prints them all. It is nil when err is
// not an *Error.
func Errors(err error) []*Error {
	var e *Error
	if !errors.As(err, &e) {
		return nil
	}
	return append([]*Error{e}, e.more...)
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(oneLine(e.Msg))
	return b.String()
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	f := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	return strings.Join(f, "; ")
}
