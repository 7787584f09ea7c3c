package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pias-net/pias/config"
	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/router"
)

// ServeTargets starts, in every target's netstack and for each of its groups,
// a service on the group's local port that answers every request (a line over
// TCP, a datagram over UDP) with "NAME: request", so that the caller sees which
// target answered. Targets it served before are left alone, so it may be
// called again after StartNode.
func (h *Harness) ServeTargets() error {
	for name, e := range h.Edges {
		h.mu.Lock()
		done := h.served[name]
		if h.served == nil {
			h.served = map[string]bool{}
		}
		h.served[name] = true
		h.mu.Unlock()
		if done || e.Config.Role != config.RoleTarget {
			continue
		}
		// Twin groups (IPv4 and IPv6, same port) share one service per
		// address.
		type service struct {
			at    netip.AddrPort
			proto uint8
		}
		served := map[service]bool{}
		for _, s := range e.Config.Groups {
			for _, a := range e.Config.Address {
				sv := service{netip.AddrPortFrom(a, s.Port), s.Group.Proto}
				if served[sv] {
					continue
				}
				served[sv] = true
				stop, quit, err := serveNamed(e, netip.AddrPortFrom(a, s.Port), s.Group.Proto, name)
				if err != nil {
					return fmt.Errorf("serve %s on %s: %w", s.Group, name, err)
				}
				h.mu.Lock()
				h.servers = append(h.servers, stop)
				h.services = append(h.services, &labService{target: name, at: sv.at, proto: sv.proto, quit: quit})
				h.mu.Unlock()
			}
		}
	}
	return nil
}

// labService is one service ServeTargets started, for StopService.
type labService struct {
	target string
	at     netip.AddrPort
	proto  uint8
	quit   func() // nil while stopped
}

// StopService stops target's service of group g (the service, not pias:
// its listener closes; live connections end when their peers close them),
// as when nginx stops on a target. StartService starts it again.
func (h *Harness) StopService(target string, g router.Group) error {
	h.mu.Lock()
	var stops []func()
	for _, s := range h.services {
		if s.target == target && s.at.Port() == LocalPort(g) && s.proto == g.Proto && s.quit != nil {
			stops = append(stops, s.quit)
			s.quit = nil
		}
	}
	h.mu.Unlock()
	if len(stops) == 0 {
		return fmt.Errorf("%s serves no %s", target, g)
	}
	for _, stop := range stops {
		stop()
	}
	return nil
}

// StartService starts what StopService stopped.
func (h *Harness) StartService(target string, g router.Group) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.Edges[target]
	for _, s := range h.services {
		if s.target != target || s.at.Port() != LocalPort(g) || s.proto != g.Proto || s.quit != nil {
			continue
		}
		// The netstack may hold the port a moment after the old listener
		// closed (its connections wind down): a service restarted at
		// once retries, as a real one would, for a while.
		var stop, quit func()
		var err error
		for deadline := time.Now().Add(3 * time.Second); ; {
			stop, quit, err = serveNamed(e, s.at, s.proto, target)
			if err == nil || !errors.Is(err, syscall.EADDRINUSE) && !strings.Contains(err.Error(), "port is in use") || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("serve %s on %s: %w", g, target, err)
		}
		s.quit = quit
		h.servers = append(h.servers, stop)
	}
	return nil
}

// serveNamed serves at: stop ends the service and its connections; quit
// only stops taking new ones (a TCP listener closes, live connections go
// on until their peers close them), as a server that shuts down
// gracefully, and leaves no connection in TIME_WAIT on the port.
func serveNamed(e *node.Edge, at netip.AddrPort, proto uint8, name string) (stop, quit func(), err error) {
	var wg sync.WaitGroup
	if proto == router.ProtoUDP {
		c, err := e.Host.Net.ListenUDPAddrPort(at)
		if err != nil {
			return nil, nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 65536)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				c.WriteTo(append([]byte(name+": "), buf[:n]...), from)
			}
		}()
		stop := func() { c.Close(); wg.Wait() }
		return stop, stop, nil
	}
	ln, err := e.Host.Net.ListenTCPAddrPort(at)
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(name + ": " + line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}, func() { ln.Close() }, nil
}

// Conversation is an open TCP connection from an edge to a group.
type Conversation struct {
	c net.Conn
	r *bufio.Reader
}

// DialTCP opens a TCP connection from an edge (client or target) to a group.
func (h *Harness) DialTCP(ctx context.Context, from string, g router.Group) (*Conversation, error) {
	e := h.Edges[from]
	if e == nil {
		return nil, fmt.Errorf("no edge %q", from)
	}
	c, err := e.Host.Net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(g.Addr, g.Port))
	if err != nil {
		return nil, fmt.Errorf("%s dial %s: %w", from, g, err)
	}
	return &Conversation{c: c, r: bufio.NewReader(c)}, nil
}

// Ask sends one line and returns the answer line, without its newline.
func (cv *Conversation) Ask(ctx context.Context, line string) (string, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	cv.c.SetDeadline(deadline)
	if _, err := cv.c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	ans, err := cv.r.ReadString('\n')
	return strings.TrimSuffix(ans, "\n"), err
}

// Conn is the connection itself, for bulk transfers.
func (cv *Conversation) Conn() net.Conn { return cv.c }

// Close closes the connection.
func (cv *Conversation) Close() error { return cv.c.Close() }

// AskTCP opens a connection to g, asks one line and closes it.
func (h *Harness) AskTCP(ctx context.Context, from string, g router.Group, line string) (string, error) {
	cv, err := h.DialTCP(ctx, from, g)
	if err != nil {
		return "", err
	}
	defer cv.Close()
	return cv.Ask(ctx, line)
}

// AskUDP sends a datagram from an edge to g and returns the answer. The
// datagram is resent (same source port, so the same flow) until an answer
// comes or ctx ends.
func (h *Harness) AskUDP(ctx context.Context, from string, g router.Group, msg string) (string, error) {
	e := h.Edges[from]
	if e == nil {
		return "", fmt.Errorf("no edge %q", from)
	}
	la := e.Config.AddrLike(g.Addr)
	if !la.IsValid() {
		return "", fmt.Errorf("%s has no address of the family of %s", from, g.Addr)
	}
	c, err := e.Host.Net.DialUDPAddrPort(netip.AddrPortFrom(la, 0), netip.AddrPortFrom(g.Addr, g.Port))
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 65536)
	for {
		if _, err := c.Write([]byte(msg)); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s → %s: no answer: %w", from, g, ctx.Err())
		}
	}
}

// Ping sends ICMP echo requests from an edge to addr (node.Edge.Ping, one a
// second) until one is answered, and returns its round-trip time.
func (h *Harness) Ping(ctx context.Context, from string, addr netip.Addr) (time.Duration, error) {
	e := h.Edges[from]
	if e == nil {
		return 0, fmt.Errorf("no edge %q", from)
	}
	for {
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		rtt, err := e.Ping(tctx, addr)
		cancel()
		if err == nil {
			return rtt, nil
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%s ping %s: %w", from, addr, ctx.Err())
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, fmt.Errorf("%s ping %s: %w", from, addr, err)
		}
	}
}
