package tunnel

import (
	"fmt"
	"runtime"
)

// MaxInterfaceNameLen is the longest interface name: Linux's IFNAMSIZ less
// the terminating NUL (macOS has the same limit).
const MaxInterfaceNameLen = 15

// CheckInterfaceName reports whether name can name a node's interfaces: 1..15
// bytes of [a-zA-Z0-9_.-], not "." or "..". It is the rule for UAPI sockets
// (ListenUAPI) on every OS, and for kernel TUNs on Linux.
func CheckInterfaceName(name string) error {
	ok := len(name) >= 1 && len(name) <= MaxInterfaceNameLen && name != "." && name != ".."
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-'
	}
	if !ok {
		return fmt.Errorf("interface name %q: want 1..%d characters of a-z, A-Z, 0-9, '_', '.' and '-' (not \".\" or \"..\")", name, MaxInterfaceNameLen)
	}
	return nil
}

// CheckTUNName reports whether name can name a kernel TUN on this OS:
// CheckInterfaceName's rule, and on macOS "utun" (the system picks the
// number) or "utunN".
func CheckTUNName(name string) error { return checkTUNName(runtime.GOOS, name) }

func checkTUNName(goos, name string) error {
	if err := CheckInterfaceName(name); err != nil {
		return err
	}
	if goos == "darwin" && !isUtunName(name) {
		return fmt.Errorf("interface name %q: a kernel TUN on macOS must be called \"utun\" (the system picks the number) or \"utunN\"", name)
	}
	return nil
}

// isUtunName matches "utun" and "utunN" (N decimal, no leading zeros).
func isUtunName(name string) bool {
	const p = "utun"
	if len(name) < len(p) || name[:len(p)] != p {
		return false
	}
	n := name[len(p):]
	if n == "" {
		return true
	}
	if len(n) > 9 || n[0] == '0' && len(n) > 1 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}
