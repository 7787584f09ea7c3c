package check

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxHTTPHead bounds what an HTTP probe reads of a response.
const maxHTTPHead = 16 << 10

// HTTP passes when a GET of path at address (HTTP/1.1, no TLS) answers with
// a status in min..max. Only the status line and headers are read.
func HTTP(address, path string, min, max int) Probe {
	bad := CheckHTTPPath(path)
	req := "GET " + path + " HTTP/1.1\r\nHost: " + address + "\r\nUser-Agent: pias-check\r\nConnection: close\r\n\r\n"
	return func(ctx context.Context, dial Dialer) Result {
		if bad != nil {
			return Result{Detail: bad.Error()}
		}
		c, err := dial.DialContext(ctx, "tcp", address)
		if err != nil {
			return fail(ctx, err)
		}
		defer c.Close()
		defer bind(ctx, c)()
		if _, err := io.WriteString(c, req); err != nil {
			return fail(ctx, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(io.LimitReader(c, maxHTTPHead)), nil)
		if err != nil {
			return fail(ctx, fmt.Errorf("reading the response: %w", err))
		}
		resp.Body.Close()
		if resp.StatusCode < min || resp.StatusCode > max {
			return Result{Detail: fmt.Sprintf("HTTP %d, want %d..%d", resp.StatusCode, min, max)}
		}
		return Result{OK: true, Detail: fmt.Sprintf("HTTP %d", resp.StatusCode)}
	}
}

// CheckHTTPPath reports whether path can be sent as a request target: it
// starts with '/', and has no spaces or control characters.
func CheckHTTPPath(path string) error {
	if !strings.HasPrefix(path, "/") || len(path) > 1024 || strings.IndexFunc(path, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return fmt.Errorf("path %q: want an absolute path like \"/health\" (up to 1024 bytes, printable ASCII, no spaces)", path)
	}
	return nil
}
