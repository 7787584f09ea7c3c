//go:build linux || darwin || freebsd || openbsd

package tunnel

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/ipc"
)

// ListenUAPI serves the device's WireGuard UAPI on the unix socket
// /var/run/wireguard/NAME.sock, so `wg show NAME` (and `wg set NAME …`)
// work against it, like against any WireGuard interface; proxies have no
// interface at all but are served the same way. It needs write access to
// /var/run/wireguard (root, usually).
//
// It refuses when the socket exists and answers (another live node or
// WireGuard interface uses that name), and replaces a stale socket that does
// not answer. Closing the returned Closer stops the listener, ends open UAPI
// connections and removes the socket; close it before the device.
func (d *Device) ListenUAPI(name string) (io.Closer, error) {
	if err := CheckInterfaceName(name); err != nil {
		return nil, fmt.Errorf("uapi: %w", err)
	}
	path := UAPISocketPath(name)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("uapi: interface name %q is taken: %s answers (another running node or WireGuard interface uses it)", name, path)
	}
	f, err := ipc.UAPIOpen(name) // removes a stale socket
	if err != nil {
		return nil, fmt.Errorf("uapi %s: %w", path, err)
	}
	ours, _ := os.Lstat(path)
	ln, err := ipc.UAPIListen(name, f)
	f.Close() // the listener has its own copy
	if err != nil {
		if ours != nil {
			os.Remove(path)
		}
		return nil, fmt.Errorf("uapi %s: %w", path, err)
	}
	s := &uapiServer{ln: ln, path: path, ours: ours, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.serve(d)
	return s, nil
}

type uapiServer struct {
	ln    net.Listener
	path  string
	ours  os.FileInfo // the socket file we made, to remove only that one
	mu    sync.Mutex
	conns map[net.Conn]bool // nil once closed
	wg    sync.WaitGroup
	once  sync.Once
}

func (s *uapiServer) serve(d *Device) {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.conns == nil {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			d.IpcHandle(c) // closes c
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops serving and removes the socket. It is idempotent.
func (s *uapiServer) Close() error {
	var err error
	s.once.Do(func() {
		err = s.ln.Close()
		s.mu.Lock()
		conns := s.conns
		s.conns = nil
		s.mu.Unlock()
		for c := range conns {
			c.Close()
		}
		// The listener unlinks the socket as it closes; remove it in any
		// case, but only if it is still the one we made.
		if fi, e := os.Lstat(s.path); e == nil && s.ours != nil && os.SameFile(fi, s.ours) {
			if e := os.Remove(s.path); e != nil && !os.IsNotExist(e) && err == nil {
				err = e
			}
		}
		s.wg.Wait()
	})
	return err
}
