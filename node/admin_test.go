//go:build unix

package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type adminStatus struct{ Name string }

// serveAndRead serves a status at dir/n.sock and reads it back.
func serveAndRead(t *testing.T, dir string) (adminStatus, error) {
	t.Helper()
	path := filepath.Join(dir, "n.sock")
	c, err := ServeAdmin(path, func() any { return adminStatus{Name: "n1"} }, nil)
	if err != nil {
		return adminStatus{}, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got adminStatus
	err = ReadStatus(ctx, path, &got)
	return got, err
}

func TestServeAdminMakesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pias-test")
	got, err := serveAndRead(t, dir)
	if err != nil || got.Name != "n1" {
		t.Fatalf("status = %+v, %v; want n1", got, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		t.Errorf("made %s with mode %o, want no access for others", dir, m)
	}
	if _, err := os.Stat(filepath.Join(dir, "n.sock")); !os.IsNotExist(err) {
		t.Errorf("Close left the socket: %v", err)
	}
}

// TestServeAdminRefusesPlantedDir: a directory another user could have
// made, or could enter, is refused with one line that says what to do,
// and nothing is served in it.
func TestServeAdminRefusesPlantedDir(t *testing.T) {
	cases := []struct {
		name  string
		plant func(t *testing.T, dir string)
		want  string
		root  bool // needs root (chown)
	}{
		{"world-writable", func(t *testing.T, dir string) { mkdirMode(t, dir, 0o777) }, "has mode 777, open to others: chmod 700", false},
		{"group-readable", func(t *testing.T, dir string) { mkdirMode(t, dir, 0o750) }, "has mode 750, open to others: chmod 700", false},
		{"symlink", func(t *testing.T, dir string) {
			real := dir + ".real"
			mkdirMode(t, real, 0o700)
			if err := os.Symlink(real, dir); err != nil {
				t.Fatal(err)
			}
		}, "is a symlink: remove it", false},
		{"a file", func(t *testing.T, dir string) {
			if err := os.WriteFile(dir, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a directory", false},
		{"another user's", func(t *testing.T, dir string) {
			mkdirMode(t, dir, 0o700)
			if err := os.Chown(dir, 12345, 12345); err != nil {
				t.Fatal(err)
			}
		}, "belongs to uid 12345, not to this user", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.root && os.Geteuid() != 0 {
				t.Skip("chown to another user needs root")
			}
			dir := filepath.Join(t.TempDir(), "pias-test")
			c.plant(t, dir)
			_, err := serveAndRead(t, dir)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line with %q", err, c.want)
			}
			if _, err := os.Lstat(filepath.Join(dir, "n.sock")); err == nil {
				t.Errorf("a socket was made in the refused directory")
			}
		})
	}
}

// TestReadStatusRefusesPlantedSocket: another user's socket, planted in a
// directory that became open to others, is not asked.
func TestReadStatusRefusesPlantedSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pias-test")
	path := filepath.Join(dir, "n.sock")
	c, err := ServeAdmin(path, func() any { return adminStatus{Name: "planted"} }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	var got adminStatus
	err = ReadStatus(context.Background(), path, &got)
	if err == nil || !strings.Contains(err.Error(), "chmod 700") || got.Name != "" {
		t.Fatalf("ReadStatus = %+v, %v; want a refusal", got, err)
	}
}

// mkdirMode makes dir with exactly mode, whatever the umask.
func mkdirMode(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}
