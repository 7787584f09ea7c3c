package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHTTPKeys(t *testing.T) {
	tk := setup(t)
	if err := os.WriteFile(filepath.Join(tk.dir, "web.token"), []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tk.dir, "short.token"), []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		role string
		text string
		line int
		key  string
		msg  string
	}{
		{"malformed", RoleProxy, ins(proxyBase, 5, `http_listen = "localhost:9586"`), 6, "http_listen", "not IP:PORT"},
		{"port 0", RoleTarget, ins(targetBase, 3, `http_listen = "127.0.0.1:0"`), 4, "http_listen", "port 0"},
		{"public without token", RoleClient, ins(clientBase, 3, `http_listen = "0.0.0.0:9586"`), 4, "http_listen", "http_token_file"},
		{"missing token file", RoleProxy, ins(proxyBase, 5, `http_listen = "0.0.0.0:9586"`, `http_token_file = "nope.token"`), 7, "http_token_file", "no such file"},
		{"short token", RoleProxy, ins(proxyBase, 5, `http_token_file = "short.token"`), 6, "http_token_file", "at least 16"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(tc.role, tk.write(t, "n.toml", tc.text))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a config error", err)
			}
			if ce.Line != tc.line || ce.Key != tc.key || !strings.Contains(ce.Msg, tc.msg) {
				t.Fatalf("got %q, want line %d key %s and %q", err, tc.line, tc.key, tc.msg)
			}
		})
	}
	p, err := LoadProxy(tk.write(t, "p.toml", ins(proxyBase, 5, `http_listen = "[::]:9586"`, `http_token_file = "web.token"`)))
	if err != nil {
		t.Fatal(err)
	}
	if p.HTTP.Listen != netip.MustParseAddrPort("[::]:9586") || p.HTTP.Token != "0123456789abcdef0123" {
		t.Fatalf("got %+v", p.HTTP)
	}
	p, err = LoadProxy(tk.write(t, "p.toml", proxyBase))
	if err != nil {
		t.Fatal(err)
	}
	if p.HTTP != (HTTP{}) {
		t.Fatalf("off by default, got %+v", p.HTTP)
	}
}
