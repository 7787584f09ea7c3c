package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/tunnel"
)

// TestMain makes the test binary double as the commands the scripts run:
// pias itself, and the echoserver and probe helpers of the live test.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"pias": func() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
		"echoserver": func() {
			os.Exit(echoServer(os.Args[1:], os.Stdout, os.Stderr))
		},
		"probe": func() { os.Exit(probe(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs testdata/script/*.txtar. Every script gets
//
//	$BASEPORT  the first of 8 consecutive free UDP ports
//	$PORT0…7   those ports ($PORT0 is $BASEPORT)
//	$FWDPORT   a TCP port free on 127.0.0.1
//	$ADMINDIR  the directory of the admin sockets of the script's nodes
//
// the commands lines, ls, setenvfile, status, waitfile and waitudp (see
// scriptCmds) and the conditions [exists:PATH] and [race] (see condition).
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Cmds:                scriptCmds,
		Condition:           condition,
		Setup: func(env *testscript.Env) error {
			base, err := freeUDPRange(8)
			if err != nil {
				return err
			}
			fwd, err := freeTCPPort()
			if err != nil {
				return err
			}
			// A -race binary sleeps a second before a successful exit
			// (so that racing goroutines get caught); scripts run it
			// many times, so keep GORACE's other options but not that.
			env.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			env.Setenv("BASEPORT", strconv.Itoa(base))
			// Interface names are global on a host (UAPI sockets live in one
			// directory): every script gets its own prefix.
			prefix := fmt.Sprintf("pt%04x", rand.IntN(1<<16))
			env.Setenv("IFPREFIX", prefix)
			for i := range 8 {
				env.Setenv("PORT"+strconv.Itoa(i), strconv.Itoa(base+i))
			}
			env.Setenv("FWDPORT", strconv.Itoa(fwd))
			// Where this script's nodes put their admin sockets (see
			// node.AdminDir): root's directory, or one in the script's
			// $TMPDIR.
			adminDir := node.AdminDirRoot
			if os.Geteuid() != 0 {
				adminDir = filepath.Join(env.Getenv("TMPDIR"), "pias-"+strconv.Itoa(os.Geteuid()))
			}
			env.Setenv("ADMINDIR", adminDir)
			// A node the script killed outright leaves its sockets behind
			// (status_list does so on purpose): remove this script's.
			env.Defer(func() {
				for _, dir := range []string{tunnel.UAPIDir, adminDir} {
					socks, _ := filepath.Glob(filepath.Join(dir, prefix+"*.sock"))
					for _, s := range socks {
						os.Remove(s)
					}
				}
			})
			return nil
		},
	})
}

// Ports are picked below Linux's ephemeral range (32768…60999), so that
// sockets other programs open meanwhile do not take them, and below the
// lab harness's range (20000…39999: pias demo, the lab package's tests),
// which may run at the same time.
const portLo, portHi = 10000, 20000

// freeUDPRange finds n consecutive UDP ports free on the wildcard
// addresses, where wireguard-go binds them (whatever the IP of a config's
// listen): 0.0.0.0 and, if the host has IPv6, [::].
func freeUDPRange(n int) (int, error) {
	for range 100 {
		base := portLo + rand.IntN(portHi-portLo-n)
		var conns []net.PacketConn
		ok := true
		for p := base; p < base+n && ok; p++ {
			c, err := net.ListenPacket("udp4", ":"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			conns = append(conns, c)
			c, err = net.ListenPacket("udp6", "[::]:"+strconv.Itoa(p))
			switch {
			case err == nil:
				conns = append(conns, c)
			case errors.Is(err, syscall.EADDRINUSE):
				ok = false
			}
		}
		for _, c := range conns {
			c.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, errors.New("no free UDP port range")
}

// freeTCPPort finds a TCP port free on 127.0.0.1.
func freeTCPPort() (int, error) {
	for range 100 {
		p := portLo + rand.IntN(portHi-portLo)
		ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			ln.Close()
			return p, nil
		}
	}
	return 0, errors.New("no free TCP port")
}

// condition adds [exists:PATH] (PATH absolute, e.g. $WORK/FILE): whether
// PATH exists, which the builtin exists command cannot say to guard a line;
// and [race]: whether this binary (and so pias in the scripts) was built
// with -race.
func condition(cond string) (bool, error) {
	if cond == "race" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "-race" {
					return s.Value == "true", nil
				}
			}
		}
		return false, nil
	}
	if path, ok := strings.CutPrefix(cond, "exists:"); ok {
		if !filepath.IsAbs(path) {
			return false, fmt.Errorf("%s is not absolute (use $WORK/...)", path)
		}
		_, err := os.Stat(path)
		return err == nil, nil
	}
	return false, fmt.Errorf("unknown condition %q", cond)
}

var scriptCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	// lines FILE N: FILE (or stdout, stderr) has exactly N lines, each
	// ending in a newline.
	"lines": func(ts *testscript.TestScript, neg bool, args []string) {
		if len(args) != 2 {
			ts.Fatalf("usage: lines FILE N")
		}
		n, err := strconv.Atoi(args[1])
		ts.Check(err)
		text := ts.ReadFile(args[0])
		got := strings.Count(text, "\n")
		ok := got == n && (text == "" || strings.HasSuffix(text, "\n"))
		switch {
		case neg && ok:
			ts.Fatalf("%s has %d lines, want any other number", args[0], n)
		case !neg && !ok:
			ts.Fatalf("%s has %d lines (%q), want %d", args[0], got, text, n)
		}
	},
	// status N PROG ARGS...: like exec, but PROG must exit with status N.
	"status": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) < 2 {
			ts.Fatalf("usage: status N PROG [ARGS...]")
		}
		want, err := strconv.Atoi(args[0])
		ts.Check(err)
		err = ts.Exec(args[1], args[2:]...)
		got := 0
		if err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				ts.Fatalf("%s: %v", args[1], err)
			}
			got = ee.ExitCode()
		}
		if got != want {
			ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
		}
	},
	// ls [-l] DIR: the names in DIR, sorted, one a line (with -l, each
	// followed by its permission bits).
	"ls": func(ts *testscript.TestScript, neg bool, args []string) {
		long := len(args) == 2 && args[0] == "-l"
		if long {
			args = args[1:]
		}
		if neg || len(args) != 1 {
			ts.Fatalf("usage: ls [-l] DIR")
		}
		ents, err := os.ReadDir(ts.MkAbs(args[0]))
		ts.Check(err)
		for _, e := range ents {
			if !long {
				fmt.Fprintln(ts.Stdout(), e.Name())
				continue
			}
			fi, err := e.Info()
			ts.Check(err)
			fmt.Fprintf(ts.Stdout(), "%s %s\n", e.Name(), fi.Mode())
		}
	},
	// setenvfile VAR FILE: set $VAR to the contents of FILE (or stdout,
	// stderr) without surrounding blanks.
	"setenvfile": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 2 {
			ts.Fatalf("usage: setenvfile VAR FILE")
		}
		ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile(args[1])))
	},
	// waitudp PORT...: wait (at most 20 s) until every PORT is bound to
	// a UDP socket, which on Linux /proc/net/udp{,6} shows; elsewhere
	// just sleep a second.
	"waitudp": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) == 0 {
			ts.Fatalf("usage: waitudp PORT...")
		}
		var ports []int
		for _, a := range args {
			p, err := strconv.Atoi(a)
			ts.Check(err)
			ports = append(ports, p)
		}
		if _, err := os.Stat("/proc/net/udp"); err != nil {
			time.Sleep(time.Second)
			return
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			bound := udpBound()
			missing := slices.DeleteFunc(slices.Clone(ports), func(p int) bool { return bound[p] })
			if len(missing) == 0 {
				return
			}
			if time.Now().After(deadline) {
				ts.Fatalf("UDP ports %v not bound after 20s", missing)
			}
			time.Sleep(20 * time.Millisecond)
		}
	},
	// waitfile FILE...: wait (at most 20 s) until one of the files exists.
	"waitfile": func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) == 0 {
			ts.Fatalf("usage: waitfile FILE...")
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			for _, f := range args {
				if _, err := os.Stat(ts.MkAbs(f)); err == nil {
					return
				}
			}
			if time.Now().After(deadline) {
				ts.Fatalf("none of %v appeared in 20s", args)
			}
			time.Sleep(20 * time.Millisecond)
		}
	},
}

// udpBound lists the local ports of the UDP sockets in /proc/net/udp and
// /proc/net/udp6.
func udpBound() map[int]bool {
	bound := map[int]bool{}
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil {
				bound[int(p)] = true
			}
		}
	}
	return bound
}

// echoServer serves a TCP line echo: echoserver [-state PREFIX] ADDR NAME
// answers every line L with "NAME: L". Once listening it creates
// PREFIX.ready; if ADDR cannot be bound it creates PREFIX.busy and exits 0,
// so that a script can skip. It exits 0 on SIGINT or SIGTERM.
func echoServer(args []string, stdout, stderr io.Writer) int {
	state := ""
	if len(args) > 0 && args[0] == "-state" && len(args) > 1 {
		state, args = args[1], args[2:]
	}
	if len(args) != 2 {
		fmt.Fprintln(stderr, "usage: echoserver [-state PREFIX] ADDR NAME")
		return 2
	}
	addr, name := args[0], args[1]
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "echoserver: %v\n", err)
		if state != "" {
			os.WriteFile(state+".busy", []byte(err.Error()+"\n"), 0o644)
		}
		return 0
	}
	if state != "" {
		if err := os.WriteFile(state+".ready", []byte(addr+"\n"), 0o644); err != nil {
			fmt.Fprintf(stderr, "echoserver: %v\n", err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "echoserver %s on %s\n", name, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintf(c, "%s: %s\n", name, sc.Text()); err != nil {
						return
					}
				}
			}()
		}
	}()
	<-sig
	ln.Close()
	fmt.Fprintf(stdout, "echoserver %s stopped\n", name)
	return 0
}

// probe [-once] ADDR LINE connects to ADDR over TCP, sends LINE and
// prints the line it gets back. It retries failed attempts (refused,
// reset, closed, slow) until 20 s have passed, or with -once makes one
// attempt.
func probe(args []string, stdout, stderr io.Writer) int {
	once := len(args) > 0 && args[0] == "-once"
	if once {
		args = args[1:]
	}
	if len(args) != 2 {
		fmt.Fprintln(stderr, "usage: probe [-once] ADDR LINE")
		return 2
	}
	addr, line := args[0], args[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	attempt := func() (string, error) {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		defer acancel()
		var d net.Dialer
		c, err := d.DialContext(actx, "tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		dl, _ := actx.Deadline()
		c.SetDeadline(dl)
		if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
			return "", err
		}
		answer, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return "", err
		}
		return answer, nil
	}
	var err error
	for n := 1; ; n++ {
		var answer string
		if answer, err = attempt(); err == nil {
			fmt.Fprint(stdout, answer)
			fmt.Fprintf(stderr, "probe: answered on attempt %d\n", n)
			return 0
		}
		if once {
			fmt.Fprintf(stderr, "probe %s: %v\n", addr, err)
			return 1
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "probe %s: no answer in 20s after %d attempts: %v\n", addr, n, err)
			return 1
		case <-time.After(200 * time.Millisecond):
		}
	}
}
