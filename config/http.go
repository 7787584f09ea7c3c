package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"path/filepath"
	"strings"
)

// MinHTTPTokenLen is the shortest bearer token http_token_file may hold.
const MinHTTPTokenLen = 16

// HTTP is a node's HTTP listener (metrics, API, events, map); off when
// Listen is the zero value.
type HTTP struct {
	Listen netip.AddrPort
	// Token, read from TokenFile, is the bearer token every request must
	// carry; empty: none asked. Required when Listen is not loopback.
	Token     string
	TokenFile string
	// Line is the line of http_listen in the file (for errors at start).
	Line int
}

// httpKeys reads http_listen and http_token_file, which every role has.
func (d *decoder) httpKeys(t *table, h *HTTP) {
	if s, ok := t.str("http_token_file", false); ok {
		file := s
		if !filepath.IsAbs(file) {
			file = filepath.Join(d.dir, file)
		}
		h.TokenFile = file
		if tok, err := ReadHTTPToken(d.read, file); err != nil {
			d.errf("http_token_file", "%v", err)
		} else {
			h.Token = tok
		}
	}
	s, ok := t.str("http_listen", false)
	if !ok {
		return
	}
	ap, ok := d.addrPort("http_listen", s, false)
	if !ok {
		return
	}
	if !ap.Addr().IsLoopback() && h.TokenFile == "" {
		d.errf("http_listen", "%s is not a loopback address: set http_token_file too, so that only holders of the token are answered", ap)
		return
	}
	h.Listen, h.Line = ap, d.lineOf("http_listen")
}

// ReadHTTPToken reads a bearer token file: one line of at least
// MinHTTPTokenLen printable ASCII characters (`pias genkey` writes one).
func ReadHTTPToken(read FileReader, file string) (string, error) {
	data, err := read(file)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", errors.New(file + ": " + err.Error())
	}
	tok := strings.TrimSpace(string(data))
	if len(tok) < MinHTTPTokenLen {
		return "", errors.New(file + ": want a token of at least 16 characters")
	}
	for _, c := range []byte(tok) {
		if c <= ' ' || c > '~' {
			return "", errors.New(file + ": the token must be one line of printable ASCII, without spaces")
		}
	}
	return tok, nil
}
