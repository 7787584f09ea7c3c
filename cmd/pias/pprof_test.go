package main

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestPprofServes: --pprof answers the profiler's endpoints on the
// loopback, and nothing once stopped.
func TestPprofServes(t *testing.T) {
	var out, errs bytes.Buffer
	stop, rc := startPprof("proxy", "127.0.0.1:0", &out, &errs)
	if rc >= 0 {
		t.Fatalf("startPprof: rc %d: %s", rc, errs.String())
	}
	m := regexp.MustCompile(`pprof on (http://\S+/debug/pprof/)`).FindStringSubmatch(out.String())
	if m == nil {
		stop()
		t.Fatalf("no URL in %q", out.String())
	}
	for _, path := range []string{"heap?debug=1", "goroutine?debug=1", "cmdline"} {
		resp, err := http.Get(m[1] + path)
		if err != nil {
			stop()
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("%s: %s, %d bytes", path, resp.Status, len(body))
		}
		if path == "heap?debug=1" && !strings.Contains(string(body), "heap profile") {
			t.Errorf("%s: not a heap profile: %.80q", path, body)
		}
	}
	stop()
	if resp, err := http.Get(m[1]); err == nil {
		resp.Body.Close()
		t.Errorf("still served after stop: %s", resp.Status)
	}
}

func TestPprofRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", "192.0.2.1:6060", "[::]:6060", "localhost:6060", "6060"} {
		var out, errs bytes.Buffer
		if _, rc := startPprof("proxy", addr, &out, &errs); rc != 2 {
			t.Errorf("%s: rc %d, want 2", addr, rc)
		}
		if n := strings.Count(errs.String(), "\n"); n != 1 {
			t.Errorf("%s: %d lines of error, want 1: %q", addr, n, errs.String())
		}
	}
}

// TestSimPprof: `pias sim --pprof` serves the profiler during the run and
// refuses a non-loopback address in one line before running anything.
func TestSimPprof(t *testing.T) {
	var out, errs bytes.Buffer
	if rc := runSim([]string{"failures", "--proxies", "20", "--clusters", "10", "--pprof", "0.0.0.0:6060", "--out", t.TempDir()}, nil, &out, &errs); rc != 2 {
		t.Errorf("non-loopback: rc %d, want 2", rc)
	}
	if n := strings.Count(errs.String(), "\n"); n != 1 || out.Len() != 0 {
		t.Errorf("non-loopback: %d lines of error (want 1), stdout %q: %q", n, out.String(), errs.String())
	}
	out.Reset()
	errs.Reset()
	if rc := runSim([]string{"failures", "--proxies", "20", "--clusters", "10", "--pprof", "127.0.0.1:0", "--out", t.TempDir()}, nil, &out, &errs); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errs.String())
	}
	if !regexp.MustCompile(`pias sim: pprof on http://127\.0\.0\.1:\d+/debug/pprof/`).MatchString(errs.String()) {
		t.Errorf("no pprof URL on stderr: %.300q", errs.String())
	}
}
