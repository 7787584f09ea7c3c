package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// Dialer reaches the service: a *net.Dialer for the host's network, or a
// node's netstack.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Result is the outcome of one probe.
type Result struct {
	OK     bool
	Detail string // why: the error, the HTTP status, the DNS rcode, the exit status
}

// Probe asks the service once. It returns by the deadline of ctx (give it
// one: the check's timeout) and never panics on what the service sends.
type Probe func(ctx context.Context, dial Dialer) Result

// Run runs p with timeout.
func Run(ctx context.Context, p Probe, dial Dialer, timeout time.Duration) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return p(ctx, dial)
}

// Kinds of check.
const (
	KindNone = "none"
	KindTCP  = "tcp"
	KindHTTP = "http"
	KindDNS  = "dns"
	KindUDP  = "udp"
	KindExec = "exec"
)

// Kinds lists the kinds, KindNone first.
var Kinds = []string{KindNone, KindTCP, KindHTTP, KindDNS, KindUDP, KindExec}

// Defaults of a Spec.
const (
	DefaultInterval  = 2 * time.Second
	DefaultTimeout   = time.Second
	DefaultPath      = "/"
	DefaultStatusMin = 200
	DefaultStatusMax = 399
	DefaultDNSType   = TypeA
	DefaultDNSProto  = "udp"
)

// Spec is one group's check as configured.
type Spec struct {
	Kind       string // one of Kinds
	Interval   time.Duration
	Timeout    time.Duration
	Rise, Fall int
	Port       uint16 // 0: the port the target delivers the group to

	Path                 string // http: the path to GET
	StatusMin, StatusMax int    // http: the statuses that pass

	Name  string // dns: the name to ask for
	Type  uint16 // dns: the type to ask for (TypeA, …)
	Proto string // dns: "udp" or "tcp"

	Payload []byte // udp: what to send

	Command []string // exec: argv, or with Shell one script for /bin/sh -c
	Shell   bool
}

// Defaults is the Spec of kind with every default filled in.
func Defaults(kind string) Spec {
	s := Spec{Kind: kind}
	if kind == KindNone {
		return s
	}
	s.Interval, s.Timeout, s.Rise, s.Fall = DefaultInterval, DefaultTimeout, DefaultRise, DefaultFall
	switch kind {
	case KindHTTP:
		s.Path, s.StatusMin, s.StatusMax = DefaultPath, DefaultStatusMin, DefaultStatusMax
	case KindDNS:
		s.Type, s.Proto = DefaultDNSType, DefaultDNSProto
	}
	return s
}

// Probe is the probe of s for a service at host whose port is port (the
// group's local port; s.Port overrides it). It is nil for KindNone. An exec
// command finds the address in its environment as PIAS_CHECK_ADDR.
func (s *Spec) Probe(host netip.Addr, port uint16) Probe {
	if s.Port != 0 {
		port = s.Port
	}
	addr := netip.AddrPortFrom(host, port).String()
	switch s.Kind {
	case KindTCP:
		return TCP(addr)
	case KindHTTP:
		return HTTP(addr, s.Path, s.StatusMin, s.StatusMax)
	case KindDNS:
		return DNS(addr, s.Proto, s.Name, s.Type)
	case KindUDP:
		return UDP(addr, s.Payload)
	case KindExec:
		return Exec(s.Command, s.Shell, "PIAS_CHECK_ADDR="+addr)
	}
	return nil
}

// TCP passes when a connection to address opens.
func TCP(address string) Probe {
	return func(ctx context.Context, dial Dialer) Result {
		c, err := dial.DialContext(ctx, "tcp", address)
		if err != nil {
			return fail(ctx, err)
		}
		c.Close()
		return Result{OK: true, Detail: "connected"}
	}
}

// UDP passes when address answers payload with any datagram.
func UDP(address string, payload []byte) Probe {
	return func(ctx context.Context, dial Dialer) Result {
		c, err := dial.DialContext(ctx, "udp", address)
		if err != nil {
			return fail(ctx, err)
		}
		defer c.Close()
		defer bind(ctx, c)()
		if _, err := c.Write(payload); err != nil {
			return fail(ctx, err)
		}
		var buf [1500]byte
		n, err := c.Read(buf[:])
		if err != nil {
			return fail(ctx, err)
		}
		return Result{OK: true, Detail: fmt.Sprintf("reply of %d bytes", n)}
	}
}

// bind makes c's reads and writes end with ctx; call the result when done.
func bind(ctx context.Context, c net.Conn) (stop func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	return context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
}

// fail is the Result of err, which ended a probe with context ctx.
func fail(ctx context.Context, err error) Result {
	if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return Result{Detail: "timeout: " + err.Error()}
	}
	return Result{Detail: err.Error()}
}
