package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/lab"
	"github.com/pias-net/pias/web"
)

func init() {
	register("demo", "run a whole overlay in this process (no root) and narrate it", demo)
}

// demoPace is how long each step of the demo waits with --web, so that a
// person sees it happen on the map.
const demoPace = 2 * time.Second

func demo(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, parse := flags("demo", "demo [--timeout D] [--web 127.0.0.1:8080]", stdout, stderr)
	timeout := fs.Duration("timeout", time.Minute, "give up after this long (with --web: only if given)")
	webAddr := fs.String("web", "", "serve the live map of the demo's overlay on `ADDR` (IP:PORT, loopback), pace the steps, and stay up until Ctrl-C")
	if rc := parse(args); rc >= 0 {
		return rc
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	timed := true
	if *webAddr != "" {
		timed = false
		fs.Visit(func(f *flag.Flag) { timed = timed || f.Name == "timeout" })
	}
	if timed {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	var opts lab.DemoOptions
	if *webAddr != "" {
		ap, err := netip.ParseAddrPort(*webAddr)
		if err != nil || ap.Port() == 0 {
			fmt.Fprintf(stderr, "pias demo: --web %q: want IP:PORT, e.g. 127.0.0.1:8080\n", *webAddr)
			return 2
		}
		s, err := web.Listen(ap, "")
		if err != nil {
			fmt.Fprintf(stderr, "pias demo: --web %s: %v\n", ap, err)
			return 1
		}
		defer s.Close()
		fmt.Fprintf(stdout, "The map of the demo's overlay: %s (the steps wait %v each, so that you can watch)\n", s.URL(), demoPace)
		opts = lab.DemoOptions{
			Pace:    demoPace,
			OnEvent: s.Event,
			Started: func(h *lab.Harness) { s.Serve(web.LabSource(h)) },
			Stay:    func(h *lab.Harness) { stay(ctx, h, s.URL(), stdin, stdout) },
		}
	}
	if err := lab.RunDemoWith(ctx, stdout, opts); err != nil {
		fmt.Fprintf(stderr, "pias demo: %v\n", err)
		return 1
	}
	return 0
}

// stay keeps the demo's lab up until ctx ends; a line "k" kills another
// proxy (one always stays), "r" restarts the killed ones.
func stay(ctx context.Context, h *lab.Harness, url string, stdin io.Reader, stdout io.Writer) {
	fmt.Fprintf(stdout, "The overlay stays up at %s. Type k and Enter to kill another proxy, r to restart the killed ones; Ctrl-C to stop.\n", url)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case lines <- strings.TrimSpace(sc.Text()):
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case l := <-lines:
			running := slices.Sorted(maps.Keys(h.Running()))
			switch l {
			case "k":
				if len(running) < 2 {
					fmt.Fprintln(stdout, "only one proxy is left running; r restarts the others")
					continue
				}
				if err := h.KillProxy(running[0]); err != nil {
					fmt.Fprintf(stdout, "kill %s: %v\n", running[0], err)
					continue
				}
				fmt.Fprintf(stdout, "killed %s without a word: watch the map\n", running[0])
			case "r":
				for _, name := range h.Names(config.RoleProxy) {
					if slices.Contains(running, name) {
						continue
					}
					if err := h.RestartProxy(name); err != nil {
						fmt.Fprintf(stdout, "restart %s: %v\n", name, err)
						continue
					}
					fmt.Fprintf(stdout, "restarted %s\n", name)
				}
			}
		}
	}
}
