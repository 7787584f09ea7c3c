//go:build unix

package node

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/pias-net/pias/router"
)

// fakeDrainer records what the admin socket asks of it.
type fakeDrainer struct {
	calls []string
	err   error
}

func (f *fakeDrainer) Drain(_ context.Context, g router.Group, timeout time.Duration) error {
	f.calls = append(f.calls, "drain "+groupText(g)+" "+timeout.String())
	return f.err
}

func (f *fakeDrainer) Undrain(_ context.Context, g router.Group) error {
	f.calls = append(f.calls, "undrain "+groupText(g))
	return f.err
}

func groupText(g router.Group) string {
	if g == (router.Group{}) {
		return "all"
	}
	return g.String()
}

// TestAdminDrain: drain and undrain reach the node's Drainer with their
// group and timeout; bad values, a node without groups and the node's own
// refusal come back as one line each.
func TestAdminDrain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "admin")
	path := filepath.Join(dir, "t.sock")
	d := &fakeDrainer{}
	c, err := ServeAdmin(path, func() any { return adminStatus{Name: "t1"} }, d)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := AdminDrain(ctx, path, "100.65.0.1:80/tcp", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := AdminDrain(ctx, path, "", 0); err != nil {
		t.Fatal(err)
	}
	if err := AdminUndrain(ctx, path, "100.65.0.1:80/tcp"); err != nil {
		t.Fatal(err)
	}
	want := []string{"drain 100.65.0.1:80/tcp 5s", "drain all 0s", "undrain 100.65.0.1:80/tcp"}
	if len(d.calls) != len(want) {
		t.Fatalf("calls %q, want %q", d.calls, want)
	}
	for i := range want {
		if d.calls[i] != want[i] {
			t.Errorf("call %d: %q, want %q", i, d.calls[i], want[i])
		}
	}
	for _, c := range []struct {
		name    string
		do      func() error
		wantErr string
	}{
		{"bad group", func() error { return AdminDrain(ctx, path, "web\n80", 0) }, `group "web\n80": want ADDRESS:PORT/tcp or ADDRESS:PORT/udp`},
		{"timeout too long", func() error { return AdminDrain(ctx, path, "", 2*time.Hour) }, `timeout "2h0m0s": want a duration from 0 (the JAP's default, 30s) to 1h0m0s`},
	} {
		if err := c.do(); err == nil || err.Error() != c.wantErr {
			t.Errorf("%s: %v, want %q", c.name, err, c.wantErr)
		}
	}
	d.err = errors.New("100.65.0.9:80/tcp is not a group of this target")
	if err := AdminUndrain(ctx, path, "100.65.0.9:80/tcp"); err == nil || err.Error() != d.err.Error() {
		t.Errorf("the node's refusal came back as %v", err)
	}

	// A proxy has no groups.
	ppath := filepath.Join(dir, "p.sock")
	pc, err := ServeAdmin(ppath, func() any { return adminStatus{Name: "p1"} }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := AdminDrain(ctx, ppath, "", 0); err == nil || err.Error() != "this node has no groups: only a target drains" {
		t.Errorf("drain of a proxy: %v", err)
	}
}
