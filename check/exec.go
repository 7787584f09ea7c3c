package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// maxOutput is how much of a command's output a Result quotes.
const maxOutput = 200

// Exec passes when argv exits 0 within the deadline. With shell set, argv
// is one script for /bin/sh -c. The command gets pias's environment plus
// env, no stdin, and on timeout is killed with its process group (on Unix).
// The dialer is not used.
func Exec(argv []string, shell bool, env ...string) Probe {
	return func(ctx context.Context, _ Dialer) Result {
		if len(argv) == 0 || argv[0] == "" || shell && len(argv) != 1 {
			return Result{Detail: "no command"}
		}
		var cmd *exec.Cmd
		if shell {
			cmd = exec.CommandContext(ctx, "/bin/sh", "-c", argv[0])
		} else {
			cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
		}
		cmd.Env = append(os.Environ(), env...)
		out := &headBuffer{max: maxOutput}
		cmd.Stdout, cmd.Stderr = out, out
		// A child that keeps the output open must not hold the probe.
		cmd.WaitDelay = 100 * time.Millisecond
		killGroup(cmd)
		err := cmd.Run()
		if err == nil {
			return Result{OK: true, Detail: "exit 0"}
		}
		detail := err.Error()
		if ctx.Err() != nil {
			detail = "timeout: killed"
		} else if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) {
			detail = "cannot run: " + detail
		}
		if o := bytes.TrimSpace(out.b); len(o) > 0 {
			detail += fmt.Sprintf(": %q", o)
		}
		return Result{Detail: detail}
	}
}

// headBuffer keeps the first max bytes written to it.
type headBuffer struct {
	b   []byte
	max int
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if n := h.max - len(h.b); n > 0 {
		h.b = append(h.b, p[:min(n, len(p))]...)
	}
	return len(p), nil
}
