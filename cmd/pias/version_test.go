package main

import (
	"runtime/debug"
	"testing"
)

func TestVersionLine(t *testing.T) {
	stamp := func(version string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: version}}
		for i := 0; i < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	tests := []struct {
		bi   *debug.BuildInfo
		want string
	}{
		{stamp("v1.2.3", "vcs.revision", "abc123", "vcs.modified", "false"), "pias v1.2.3 (revision abc123) go1.99.1"},
		{stamp("(devel)", "vcs.revision", "abc123", "vcs.modified", "true"), "pias (devel) (revision abc123, modified) go1.99.1"},
		{stamp("", "-race", "true"), "pias (devel) (revision unknown) go1.99.1"},
	}
	for _, tc := range tests {
		if got := versionLine(tc.bi); got != tc.want {
			t.Errorf("versionLine = %q, want %q", got, tc.want)
		}
	}
	if got := versionLine(nil); got[:len("pias (unknown) (revision unknown) go")] != "pias (unknown) (revision unknown) go" {
		t.Errorf("versionLine(nil) = %q", got)
	}
}
