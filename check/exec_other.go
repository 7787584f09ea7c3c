//go:build !unix

package check

import "os/exec"

// killGroup leaves cancellation to os/exec (the command alone is killed).
func killGroup(*exec.Cmd) {}
