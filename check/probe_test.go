package check

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testTimeout = 300 * time.Millisecond

// fixture is one kind of probe against its service.
type fixture struct {
	probe Probe
	set   func(mode)
	down  string // in the detail of a failure while down
}

func fixtures(t *testing.T) map[string]func(t *testing.T) fixture {
	return map[string]func(t *testing.T) fixture{
		"tcp": func(t *testing.T) fixture {
			s := newTCPService(t)
			return fixture{TCP(s.addr), s.set, "connection refused"}
		},
		"http": func(t *testing.T) fixture {
			s := newHTTPService(t)
			return fixture{HTTP(s.addr, "/health", 200, 399), s.set, "HTTP 503, want 200..399"}
		},
		"dns-udp": func(t *testing.T) fixture {
			s := newDNSService(t)
			return fixture{DNS(s.addr, "udp", "svc.example", TypeA), s.set, "rcode SERVFAIL"}
		},
		"dns-tcp": func(t *testing.T) fixture {
			s := newDNSService(t)
			return fixture{DNS(s.addr, "tcp", "svc.example.", TypeA), s.set, "rcode SERVFAIL"}
		},
		"udp": func(t *testing.T) fixture {
			s := newUDPService(t)
			return fixture{UDP(s.addr, []byte("ping")), s.set, "connection refused"}
		},
		"exec": func(t *testing.T) fixture {
			file := filepath.Join(t.TempDir(), "mode")
			set := func(m mode) {
				if err := os.WriteFile(file, []byte([]string{"up", "down", "slow"}[m]), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			script := `case $(cat "$MODE") in up) exit 0;; down) echo "service broken" >&2; exit 3;; *) sleep 30;; esac`
			t.Setenv("MODE", file)
			return fixture{Exec([]string{script}, true), set, `exit status 3: "service broken"`}
		},
	}
}

// Every kind: up, down, flapping (damped by rise and fall), and slow past
// its timeout.
func TestProbes(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			s := NewState(DefaultRise, DefaultFall)
			at := int64(0)
			step := func(m mode) (Result, Transition, bool) {
				t.Helper()
				f.set(m)
				at++
				start := time.Now()
				r := Run(context.Background(), f.probe, &net.Dialer{}, testTimeout)
				if took := time.Since(start); took > testTimeout+time.Second {
					t.Fatalf("probe took %v with a timeout of %v", took, testTimeout)
				}
				if r.OK != (m == modeUp) {
					t.Fatalf("mode %d: result %+v", m, r)
				}
				tr, ok := s.Feed(r.OK, r.Detail, at)
				return r, tr, ok
			}
			expect := func(what string, modes []mode, last Status) {
				t.Helper()
				for i, m := range modes {
					r, tr, ok := step(m)
					if wantTr := last != Unknown && i == len(modes)-1; ok != wantTr || ok && tr.To != last {
						t.Fatalf("%s, result %d (%+v): transition %v %+v", what, i, r, ok, tr)
					}
					if m == modeDown && !strings.Contains(r.Detail, f.down) {
						t.Errorf("%s: detail %q, want …%s…", what, r.Detail, f.down)
					}
				}
			}
			expect("up", []mode{modeUp}, Healthy)
			expect("down", []mode{modeDown, modeDown, modeDown}, Failing)
			expect("flapping while failing", []mode{modeUp, modeDown, modeUp, modeDown, modeUp, modeDown}, Unknown)
			expect("back up", []mode{modeUp, modeUp}, Healthy)
			expect("flapping while healthy", []mode{modeDown, modeUp, modeDown, modeUp, modeDown, modeDown, modeUp}, Unknown)

			start := time.Now()
			r, _, _ := step(modeSlow)
			if took := time.Since(start); took < testTimeout*9/10 || !strings.Contains(r.Detail, "timeout") {
				t.Errorf("slow: %+v after %v", r, took)
			}
			if s.Status() != Healthy {
				t.Errorf("status %v", s.Status())
			}
			expect("slow twice more", []mode{modeSlow, modeSlow}, Failing)
		})
	}
}

// A DNS probe wants NOERROR and an answer, and skips a forged reply.
func TestDNSVerdicts(t *testing.T) {
	s := newDNSService(t)
	p := DNS(s.addr, "udp", "svc.example", TypeAAAA)
	run := func() Result { return Run(context.Background(), p, &net.Dialer{}, testTimeout) }

	s.forge.Store(true)
	if r := run(); !r.OK || r.Detail != "NOERROR, 1 answers" {
		t.Errorf("with a forged reply first: %+v", r)
	}
	s.forge.Store(false)
	s.set(modeDown)
	s.rcode.Store(rcodeNXDomain)
	if r := run(); r.OK || r.Detail != "rcode NXDOMAIN" {
		t.Errorf("nxdomain: %+v", r)
	}
	s.rcode.Store(9)
	if r := run(); r.OK || r.Detail != "rcode RCODE9" {
		t.Errorf("rcode 9: %+v", r)
	}
	s.set(modeUp)
	s.noAns.Store(true)
	if r := run(); r.OK || r.Detail != "NOERROR but no answer" {
		t.Errorf("nodata: %+v", r)
	}
	if r := Run(context.Background(), DNS(s.addr, "udp", "bad..name", TypeA), &net.Dialer{}, testTimeout); r.OK || !strings.Contains(r.Detail, "empty label") {
		t.Errorf("bad name: %+v", r)
	}
}

// An exec probe runs argv without a shell, and reports what it could not run.
func TestExec(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	tests := []struct {
		argv   []string
		shell  bool
		ok     bool
		detail string
	}{
		{[]string{"true"}, false, true, "exit 0"},
		{[]string{"false"}, false, false, "exit status 1"},
		{[]string{"sh", "-c", `echo "$1" > "$2"`, "sh", "$HOME;x", out}, false, true, "exit 0"},
		{[]string{filepath.Join(dir, "none")}, false, false, "cannot run"},
		{[]string{"echo a; exit 2"}, true, false, `exit status 2: "a"`},
		{[]string{"yes"}, true, false, "timeout: killed: "},
		{nil, false, false, "no command"},
		{[]string{"true", "x"}, true, false, "no command"},
	}
	for _, tc := range tests {
		r := Run(context.Background(), Exec(tc.argv, tc.shell), nil, testTimeout)
		if r.OK != tc.ok || !strings.HasPrefix(r.Detail, tc.detail) || len(r.Detail) > len(tc.detail)+maxOutput*4+4 {
			t.Errorf("%q shell %v: %+v, want %v %q…", tc.argv, tc.shell, r, tc.ok, tc.detail)
		}
	}
	// The argument with a $ and a ; reached sh unexpanded: no shell ran it.
	if b, err := os.ReadFile(out); err != nil || string(b) != "$HOME;x\n" {
		t.Errorf("argv: %q %v", b, err)
	}
}

// A script's children die with it at the timeout, and do not hold the probe.
func TestExecKillsChildren(t *testing.T) {
	start := time.Now()
	r := Run(context.Background(), Exec([]string{"sleep 30 & sleep 30; wait"}, true), nil, testTimeout)
	if took := time.Since(start); r.OK || took > testTimeout+time.Second {
		t.Errorf("%+v after %v", r, took)
	}
}

// recordingDialer is a Dialer that notes what it dials.
type recordingDialer struct {
	net.Dialer
	dialed atomic.Value
}

func (d *recordingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d.dialed.Store(network + " " + address)
	return d.Dialer.DialContext(ctx, network, address)
}

// Spec.Probe addresses the service at host and the group's port, or the
// spec's own port, through the given dialer; exec learns the address.
func TestSpecProbe(t *testing.T) {
	httpS := newHTTPService(t)
	hp := netip.MustParseAddrPort(httpS.addr)
	dnsS := newDNSService(t)
	dp := netip.MustParseAddrPort(dnsS.addr)
	lo := netip.MustParseAddr("127.0.0.1")

	d := &recordingDialer{}
	spec := Defaults(KindHTTP)
	spec.Path = "/health"
	if r := Run(context.Background(), spec.Probe(lo, hp.Port()), d, time.Second); !r.OK || d.dialed.Load() != "tcp "+httpS.addr {
		t.Errorf("http: %+v, dialed %v", r, d.dialed.Load())
	}
	spec = Defaults(KindDNS)
	spec.Name, spec.Proto, spec.Port = "a.example", "tcp", dp.Port()
	if r := Run(context.Background(), spec.Probe(lo, 1), d, time.Second); !r.OK || d.dialed.Load() != "tcp "+dnsS.addr {
		t.Errorf("dns: %+v, dialed %v", r, d.dialed.Load())
	}
	spec = Defaults(KindExec)
	spec.Command = []string{"test", "$PIAS_CHECK_ADDR", "=", "127.0.0.1:99"}
	if r := Run(context.Background(), spec.Probe(lo, 99), d, time.Second); r.OK {
		t.Errorf("exec expanded its argv without a shell: %+v", r)
	}
	spec.Command, spec.Shell = []string{`test "$PIAS_CHECK_ADDR" = 127.0.0.1:99`}, true
	if r := Run(context.Background(), spec.Probe(lo, 99), d, time.Second); !r.OK {
		t.Errorf("exec: %+v", r)
	}
	none := Defaults(KindNone)
	if none.Probe(lo, 1) != nil || none.Interval != 0 {
		t.Errorf("none: %+v", none)
	}
	if tcp := Defaults(KindTCP); tcp.Interval != DefaultInterval || tcp.Timeout != DefaultTimeout || tcp.Rise != 2 || tcp.Fall != 3 {
		t.Errorf("tcp defaults: %+v", tcp)
	}
}

// A hostile HTTP service cannot make the probe read without bound, or pass
// with a status out of range.
func TestHTTPHostile(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	answers := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a := <-answers
			go func() {
				defer c.Close()
				c.Write([]byte(a))
				if strings.HasSuffix(a, "X-Long: ") {
					buf := []byte(strings.Repeat("x", 4096))
					for {
						if _, err := c.Write(buf); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	p := HTTP(ln.Addr().String(), "/", 200, 299)
	for _, tc := range []struct{ answer, detail string }{
		{"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", "HTTP 302, want 200..299"},
		{"HTTP/1.1 200 OK\r\nX-Long: ", "reading the response"},
		{"garbage\r\n\r\n", "reading the response"},
		{"HTTP/1.1 204 No Content\r\n\r\n", "HTTP 204"},
	} {
		answers <- tc.answer
		r := Run(context.Background(), p, &net.Dialer{}, 2*time.Second)
		if r.OK != (tc.detail == "HTTP 204") || !strings.Contains(r.Detail, tc.detail) || strings.Contains(r.Detail, "timeout") {
			t.Errorf("%q: %+v", tc.answer, r)
		}
	}
	if r := HTTP(ln.Addr().String(), "/a b", 200, 299)(context.Background(), nil); r.OK || !strings.Contains(r.Detail, "path") {
		t.Errorf("bad path: %+v", r)
	}
}
