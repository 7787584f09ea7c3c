package web

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pias-net/pias/lab"
	"github.com/pias-net/pias/router"
)

// browser finds a Chromium (Debian's chromium, as .ci/run installs it),
// or skips the test; under CI it fails instead, so that CI cannot pass
// without a real browser.
func browser(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium in PATH: .ci/run installs Debian's chromium, and CI must run this test")
	}
	t.Skip("no Chromium in PATH (apt-get install chromium): the browser test of the map is skipped")
	return ""
}

// A real browser loads a proxy's map from a running lab: every proxy and
// every target of the group is drawn; a proxy killed turns dead on the
// page within 2 s. PIAS_SCREENSHOT=PATH saves the page during the
// failover there (docs/map-failover.png was made so).
func TestMapInBrowser(t *testing.T) {
	bin := browser(t)
	l := startWebLab(t, lab.Options{Proxies: 4, Clusters: 2, Targets: 4, Groups: 1, Clients: 2})
	g, _ := router.ParseGroup(l.h.Lab.Groups[0])
	// The group's first RAP knows every JAP and its count: its page draws
	// every target (by name where it is their JAP, by count elsewhere).
	viewer := l.h.Proxies["p1"].Overlay.RAPs(g)[0]
	var victim string
	for _, n := range l.h.TargetsOf(g) {
		if p := l.h.Edges[n].Config.Proxies[0].Name; p != viewer {
			victim = p
			break
		}
	}
	if victim == "" {
		t.Fatalf("every target of %s is behind %s", g, viewer)
	}
	t.Logf("viewing %s's map; killing %s", viewer, victim)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.WindowSize(1400, 700))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancel)

	var state string
	if err := chromedp.Do(ctx, chromedp.Navigate(l.server(viewer).URL()), chromedp.WaitVisible(`[data-proxy]`)); err != nil {
		t.Fatal(err)
	}
	// Every proxy and every target drawn.
	drawnWhen := func(cond func() error) error {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := cond()
			if err == nil || time.Now().After(deadline) {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var allProxies []string
	for _, n := range l.h.Lab.Nodes {
		if n.Role == "proxy" {
			allProxies = append(allProxies, n.Name)
		}
	}
	err := drawnWhen(func() error {
		var proxies []string
		var targets int
		if err := eval(ctx, `[...document.querySelectorAll("[data-proxy]")].map(e => e.dataset.proxy).sort()`, &proxies); err != nil {
			return err
		}
		if err := eval(ctx, fmt.Sprintf(`document.querySelectorAll('[data-target][data-group=%q]').length`, g.String()), &targets); err != nil {
			return err
		}
		if !slices.Equal(proxies, allProxies) || targets != len(l.h.TargetsOf(g)) {
			return fmt.Errorf("drawn: proxies %v, %d targets of %s; want %v and %d", proxies, targets, g, allProxies, len(l.h.TargetsOf(g)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Its own targets by name: those joined through it (a target whose
	// home was slow to answer, on a busy host, may sit at another).
	err = drawnWhen(func() error {
		var named []string
		if err := eval(ctx, `[...document.querySelectorAll("[data-target]")].map(e => e.dataset.target).filter(s => s)`, &named); err != nil {
			return err
		}
		for _, n := range l.h.TargetsOf(g) {
			if l.h.Home(n).Name == viewer && !slices.Contains(named, n) {
				return fmt.Errorf("target %s of %s not drawn by name (drawn: %v)", n, viewer, named)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	killed := time.Now()
	if err := l.h.KillProxy(victim); err != nil {
		t.Fatal(err)
	}
	sel := fmt.Sprintf(`document.querySelector('[data-proxy=%q]').dataset.state`, victim)
	for {
		if err := eval(ctx, sel, &state); err != nil {
			t.Fatal(err)
		}
		if state == "dead" {
			break
		}
		if time.Since(killed) > 2*time.Second {
			t.Fatalf("%s is %q on the page 2 s after it was killed", victim, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
	delay := time.Since(killed)
	t.Logf("the page shows %s dead %v after the kill", victim, delay.Round(time.Millisecond))
	var timeline string
	if err := eval(ctx, `document.getElementById("timeline").textContent`, &timeline); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(timeline, "dead "+victim) {
		t.Errorf("the timeline has no death of %s: %q", victim, timeline)
	}
	// The failover: the victim's targets move and join again elsewhere,
	// and the page draws every target again.
	err = drawnWhen(func() error {
		var targets int
		if err := eval(ctx, fmt.Sprintf(`document.querySelectorAll('[data-target][data-group=%q]').length`, g.String()), &targets); err != nil {
			return err
		}
		if targets != len(l.h.TargetsOf(g)) {
			return fmt.Errorf("%d targets drawn, want %d", targets, len(l.h.TargetsOf(g)))
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "map.png")
	if p := os.Getenv("PIAS_SCREENSHOT"); p != "" {
		out = p
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))
}

// eval runs a JavaScript expression on the page and reads its value.
func eval[T any](ctx context.Context, expr string, out *T) error {
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	*out = v
	return err
}
