//go:build linux || darwin

package check

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestCPUOf100TCPChecks measures the CPU a target spends on 100 groups'
// tcp checks at 1 s intervals: 100 probes with their states, each on its
// own 1 s ticker as a node runs them, for 10 s against a listener in
// another process (a service is not pias: its accepts are not counted).
// It logs this process's user+system CPU ms per second of wall time. It
// takes 10 s, so it runs only when asked:
//
//	PIAS_CHECK_CPU=1 go test -count=1 -run CPUOf100TCPChecks -v ./check/
func TestCPUOf100TCPChecks(t *testing.T) {
	if os.Getenv("PIAS_CHECK_CPU") == "" {
		t.Skip("set PIAS_CHECK_CPU=1 to measure (10 s)")
	}
	const groups, interval, wall = 100, time.Second, 10 * time.Second

	svc := exec.Command(os.Args[0], "-test.run=^TestCPUListener$")
	svc.Env = append(os.Environ(), "PIAS_CHECK_CPU_LISTENER=1")
	out, err := svc.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Process.Kill(); svc.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the listener did not say its address: %v", err)
	}
	addr := line[:len(line)-1]

	ctx, cancel := context.WithTimeout(context.Background(), wall)
	defer cancel()
	var mu sync.Mutex
	var passes, fails int
	var wg sync.WaitGroup
	before := cpu(t)
	start := time.Now()
	for range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, st := TCP(addr), NewState(DefaultRise, DefaultFall)
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				r := Run(ctx, p, &net.Dialer{}, DefaultTimeout)
				if ctx.Err() != nil {
					return
				}
				st.Feed(r.OK, r.Detail, time.Now().UnixNano())
				mu.Lock()
				if r.OK {
					passes++
				} else {
					fails++
				}
				mu.Unlock()
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	used := cpu(t) - before
	if fails > 0 || passes < groups*int(wall/interval)*9/10 {
		t.Fatalf("%d probes passed, %d failed: want about %d passes", passes, fails, groups*int(wall/interval))
	}
	t.Logf("%d tcp checks every %v: %d probes in %v, CPU %v: %.1f ms of CPU per second (%.2f%% of one core)",
		groups, interval, passes, elapsed.Round(time.Millisecond), used.Round(time.Millisecond),
		float64(used.Microseconds())/1e3/elapsed.Seconds(), 100*used.Seconds()/elapsed.Seconds())
}

// TestCPUListener is TestCPUOf100TCPChecks's service, in its own process:
// it prints its address and accepts and closes until killed.
func TestCPUListener(t *testing.T) {
	if os.Getenv("PIAS_CHECK_CPU_LISTENER") == "" {
		t.Skip("the service of TestCPUOf100TCPChecks")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString(l.Addr().String() + "\n")
	for {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// cpu is this process's user and system CPU time so far.
func cpu(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
