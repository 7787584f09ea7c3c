package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pias-net/pias/overlay"
	"github.com/pias-net/pias/router"
)

// The admin endpoint is a small HTTP server on a unix socket, one per node,
// named like the node's interface (unique per host): `pias status NAME`
// reads what the node knows from it. Root nodes use AdminDirRoot; others a
// directory of their own user's, so no root is ever needed to ask.

// AdminDirRoot is where nodes run by root put their admin sockets.
const AdminDirRoot = "/var/run/pias"

// AdminDir is the directory for this user's admin sockets: AdminDirRoot
// for root, and for a user who owns it (a node that systemd runs as its own
// user, whose unit makes the directory with RuntimeDirectory=pias), so
// that root's pias status finds the node; else a temporary directory.
func AdminDir() string {
	if os.Geteuid() == 0 || ownsAdminDir(AdminDirRoot) {
		return AdminDirRoot
	}
	return filepath.Join(os.TempDir(), "pias-"+strconv.Itoa(os.Geteuid()))
}

// ownsAdminDir says whether dir is fit for this user's admin sockets and
// is known to be this user's (CheckAdminDir alone lets through a directory
// whose owner the system cannot tell).
func ownsAdminDir(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil {
		return false
	}
	uid, ok := fileOwner(fi)
	return ok && uid == os.Geteuid() && CheckAdminDir(dir) == nil
}

// checkReadDir says why root, or this user, should not trust the sockets
// in dir. Root trusts AdminDirRoot whoever owns it: only root can make it
// (its parent, /run, is root's), so its owner is root or the user root
// gave it to, the service user of the nodes in it.
func checkReadDir(dir string) error {
	if os.Geteuid() != 0 || filepath.Clean(dir) != AdminDirRoot {
		return CheckAdminDir(dir)
	}
	fi, err := os.Lstat(dir)
	switch {
	case err != nil:
		return fmt.Errorf("admin socket: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("admin socket directory %s is not a directory (or is a symlink)", dir)
	}
	return nil
}

// AdminSocket is the admin socket path of the node whose interface is name.
func AdminSocket(name string) string { return filepath.Join(AdminDir(), name+".sock") }

// Drainer is what the admin socket's drain and undrain requests call: a
// target's Edge. The zero Group means every group.
type Drainer interface {
	Drain(ctx context.Context, g router.Group, timeout time.Duration) error
	Undrain(ctx context.Context, g router.Group) error
}

// ServeAdmin answers GET /status on the unix socket path with status()
// as JSON, and POST /drain and /undrain (form values group, and for a
// drain timeout) through d, which is nil on a node that has no groups.
// Close stops it and removes the socket. A socket that exists but does not
// answer is stale and replaced; one that answers belongs to a live node,
// and ServeAdmin refuses to take it over.
func ServeAdmin(path string, status func() any, d Drainer) (io.Closer, error) {
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
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		adminControl(w, r, d, func(g router.Group) error {
			timeout, err := time.ParseDuration(r.FormValue("timeout"))
			if r.FormValue("timeout") == "" {
				timeout, err = 0, nil
			}
			if err != nil || timeout < 0 || timeout > overlay.MaxDrainTimeout {
				return fmt.Errorf("timeout %q: want a duration from 0 (the JAP's default, %v) to %v", r.FormValue("timeout"), overlay.DefaultDrainTimeout, overlay.MaxDrainTimeout)
			}
			return d.Drain(r.Context(), g, timeout)
		})
	})
	mux.HandleFunc("POST /undrain", func(w http.ResponseWriter, r *http.Request) {
		adminControl(w, r, d, func(g router.Group) error { return d.Undrain(r.Context(), g) })
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

// adminControl answers a drain or undrain request: do with the request's
// group (none: every group), or an error in one line.
func adminControl(w http.ResponseWriter, r *http.Request, d Drainer, do func(router.Group) error) {
	var g router.Group
	err := error(nil)
	switch {
	case d == nil:
		err = errors.New("this node has no groups: only a target drains")
	case r.FormValue("group") != "":
		g, err = router.ParseGroup(r.FormValue("group"))
	}
	if err == nil {
		err = do(g)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// ReadStatus asks the node behind the admin socket path for its status and
// decodes it into v.
func ReadStatus(ctx context.Context, path string, v any) error {
	resp, err := adminDo(ctx, path, http.MethodGet, "status", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// AdminDrain asks the target behind the admin socket path to drain group
// (a group's text; "" for every group) within timeout (0: its JAP's
// default). It returns once the target has sent its drains: its status
// then says how they go.
func AdminDrain(ctx context.Context, path, group string, timeout time.Duration) error {
	return adminPost(ctx, path, "drain", url.Values{"group": {group}, "timeout": {timeout.String()}})
}

// AdminUndrain asks the target behind the admin socket path to end the
// drain of group ("" for every group).
func AdminUndrain(ctx context.Context, path, group string) error {
	return adminPost(ctx, path, "undrain", url.Values{"group": {group}})
}

func adminPost(ctx context.Context, path, what string, form url.Values) error {
	resp, err := adminDo(ctx, path, http.MethodPost, what, form)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// adminDo sends a request to the node behind the admin socket path; an
// answer other than success is an error with the node's one line.
func adminDo(ctx context.Context, path, method, what string, form url.Values) (*http.Response, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no node at %s (is it running, and as this user?)", path)
	}
	// A socket in a directory another user controls may be theirs.
	if err := checkReadDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://pias/"+what, body)
	if err != nil {
		return nil, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask %s: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		if line := strings.TrimSpace(strings.SplitN(string(msg), "\n", 2)[0]); line != "" && resp.StatusCode == http.StatusBadRequest {
			return nil, errors.New(line)
		}
		return nil, fmt.Errorf("ask %s: %s", path, resp.Status)
	}
	return resp, nil
}

// AdminSockets lists the nodes that answer, or once did, in this user's
// AdminDir: the interface names of its sockets, sorted. A directory that
// does not exist holds none.
func AdminSockets() (dir string, names []string, err error) {
	dir = AdminDir()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return dir, nil, nil
	}
	if err == nil {
		err = checkReadDir(dir)
	}
	if err != nil {
		return dir, nil, err
	}
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".sock"); ok && e.Type()&os.ModeSocket != 0 {
			names = append(names, name)
		}
	}
	return dir, names, nil
}
