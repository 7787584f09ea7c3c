package check

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// fullListener listens on addr with a backlog of 0 and fills its accept
// queue, so that a further connect hangs: a service too busy to accept. It
// returns the function that closes it all.
func fullListener(t *testing.T, addr string) func() {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	var fill []net.Conn
	stop := func() {
		for _, c := range fill {
			c.Close()
		}
		syscall.Close(fd)
	}
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return stop // the queue is full: connects hang
		}
		fill = append(fill, c)
	}
	stop()
	t.Fatal("the accept queue never filled")
	return nil
}
