package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The admin endpoint is a small HTTP server on a unix socket, one per node,
// named like the node's interface (unique per host): `pias status NAME`
// reads what the node knows from it. Root nodes use AdminDirRoot; others a
// directory of their own user's, so no root is ever needed to ask.

// AdminDirRoot is where nodes run by root put their admin sockets.
const AdminDirRoot = "/var/run/pias"

// AdminDir is the directory for this user's admin sockets.
func AdminDir() string {
	if os.Geteuid() == 0 {
		return AdminDirRoot
	}
	return filepath.Join(os.TempDir(), "pias-"+strconv.Itoa(os.Geteuid()))
}

// AdminSocket is the admin socket path of the node whose interface is name.
func AdminSocket(name string) string { return filepath.Join(AdminDir(), name+".sock") }

// ServeAdmin answers GET /status on the unix socket path with status()
// as JSON. Close stops it and removes the socket. A socket that exists but
// does not answer is stale and replaced; one that answers belongs to a live
// node, and ServeAdmin refuses to take it over.
func ServeAdmin(path string, status func() any) (io.Closer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := CheckAdminDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s answers: another node uses this interface name", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return closerFunc(func() error {
		err := srv.Close()
		os.Remove(path)
		return err
	}), nil
}

// CheckAdminDir says why dir cannot hold admin sockets, or nil. MkdirAll
// leaves a directory that exists as it is, and in a shared /tmp another
// local user could have made it first, to plant a socket (`pias status`
// would believe it) or to watch ours. So dir must be a real directory,
// not a symlink, owned by this user, and closed to everyone else.
func CheckAdminDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	const fix = "remove it, or make it a directory of this user's with mode 700"
	switch uid, ok := fileOwner(fi); {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("admin socket directory %s is a symlink: %s", dir, fix)
	case !fi.IsDir():
		return fmt.Errorf("admin socket directory %s is not a directory: %s", dir, fix)
	case ok && uid != os.Geteuid():
		return fmt.Errorf("admin socket directory %s belongs to uid %d, not to this user (uid %d): %s", dir, uid, os.Geteuid(), fix)
	case ok && fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("admin socket directory %s has mode %o, open to others: chmod 700 %s, or remove it", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// ReadStatus asks the node behind the admin socket path for its status and
// decodes it into v.
func ReadStatus(ctx context.Context, path string, v any) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no node at %s (is it running, and as this user?)", path)
	}
	// A socket in a directory another user controls may be theirs.
	if err := CheckAdminDir(filepath.Dir(path)); err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://pias/status", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("ask %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ask %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
