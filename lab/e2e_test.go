package lab

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/router"
)

// startLab starts an in-process lab for a test and waits until it is ready.
func startLab(t *testing.T, shape Options) *Harness {
	t.Helper()
	h, _ := startLabEvents(t, shape)
	return h
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// targetsOf lists the targets that joined g.
func targetsOf(h *Harness, g router.Group) []string { return h.TargetsOf(g) }

// answeredBy checks that ans is "NAME: want" for a NAME among names, and returns NAME.
func answeredBy(t *testing.T, ans, want string, names []string) string {
	t.Helper()
	name, rest, ok := strings.Cut(ans, ": ")
	if !ok || rest != want {
		t.Fatalf("answer %q, want \"TARGET: %s\"", ans, want)
	}
	for _, n := range names {
		if n == name {
			return name
		}
	}
	t.Fatalf("answered by %q, which is not a target of the group (%v)", name, names)
	return ""
}

// In a static lab and in a CA lab.
func TestTCPAndUDPReachTargets(t *testing.T) {
	for _, ca := range []bool{false, true} {
		t.Run(map[bool]string{false: "static", true: "ca"}[ca], func(t *testing.T) {
			testTCPAndUDPReachTargets(t, ca)
		})
	}
}

func testTCPAndUDPReachTargets(t *testing.T, ca bool) {
	h := startLab(t, Options{Proxies: 3, Clusters: 2, Targets: 4, Clients: 2, Groups: 2, CA: ca})
	ctx := testCtx(t)
	for _, client := range h.Names(config.RoleClient) {
		for i := 0; i < 2; i++ {
			g := GroupN(i)
			var ans string
			var err error
			if g.Proto == router.ProtoTCP {
				ans, err = h.AskTCP(ctx, client, g, "hello from "+client)
			} else {
				ans, err = h.AskUDP(ctx, client, g, "hello from "+client)
			}
			if err != nil {
				t.Fatalf("%s → %s: %v", client, g, err)
			}
			who := answeredBy(t, ans, "hello from "+client, targetsOf(h, g))
			t.Logf("%s → %s answered by %s", client, g, who)
		}
	}
}
