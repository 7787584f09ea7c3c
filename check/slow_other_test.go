//go:build !linux

package check

import "testing"

func fullListener(t *testing.T, addr string) func() {
	t.Skip("a full accept queue is set up on Linux only")
	return nil
}
