package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func init() {
	register("version", "print pias's version, VCS revision and Go version", runVersion)
}

func runVersion(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	_, parse := flags("version", "version", stdout, stderr)
	if rc := parse(args); rc >= 0 {
		return rc
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprintln(stdout, versionLine(bi))
	return 0
}

// versionLine is "pias VERSION (revision REV[, modified]) GO": the module's
// version ("(devel)" when built from a checkout), the VCS revision and
// whether the tree had changes, as go build stamps them (absent under go
// run and go test), and the Go that built it.
func versionLine(bi *debug.BuildInfo) string {
	version, goVersion := "(unknown)", runtime.Version()
	rev, modified := "", false
	if bi != nil {
		version, goVersion = bi.Main.Version, bi.GoVersion
		if version == "" {
			version = "(devel)"
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	s := "pias " + version
	switch {
	case rev != "" && modified:
		s += fmt.Sprintf(" (revision %s, modified)", rev)
	case rev != "":
		s += fmt.Sprintf(" (revision %s)", rev)
	default:
		s += " (revision unknown)"
	}
	return s + " " + goVersion
}
