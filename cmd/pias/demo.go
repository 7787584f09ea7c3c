package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pias-net/pias/lab"
)

func init() {
	register("demo", "run a whole overlay in this process (no root) and narrate it", demo)
}

func demo(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs, parse := flags("demo", "demo [--timeout D]", stdout, stderr)
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	if rc := parse(args); rc >= 0 {
		return rc
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := lab.RunDemo(ctx, stdout); err != nil {
		fmt.Fprintf(stderr, "pias demo: %v\n", err)
		return 1
	}
	return 0
}
