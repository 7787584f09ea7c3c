package main

import (
	"runtime/debug"
	"testing"
)

// A proxy collects at 30 % unless GOGC says otherwise.
func TestProxyGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	proxyGC(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != 30 {
		t.Errorf("GOGC unset: GC percent %d, want 30", got)
	}
	proxyGC(func(k string) string {
		if k == "GOGC" {
			return "100"
		}
		return ""
	})
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=100 set: GC percent %d, want 100 (the environment wins)", got)
	}
}
