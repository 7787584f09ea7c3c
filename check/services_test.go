package check

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

// Local services for the probes, each switched between modes by the test.

type mode int32

const (
	modeUp   mode = iota
	modeDown      // the service answers that it is broken, or is gone
	modeSlow      // the service takes the request and never answers
)

// tcpService listens while up, is closed while down, and while slow holds a
// listener whose accept queue is full (slow_linux_test.go).
type tcpService struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	ln   net.Listener
	stop func()
}

func newTCPService(t *testing.T) *tcpService {
	s := &tcpService{t: t}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(func() { s.set(modeDown) })
	return s
}

func (s *tcpService) serve(ln net.Listener) {
	s.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func (s *tcpService) set(m mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
	switch m {
	case modeUp:
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			s.t.Fatal(err)
		}
		s.serve(ln)
	case modeSlow:
		s.stop = fullListener(s.t, s.addr)
	}
}

// httpService answers 200 when up, 503 when down, and nothing when slow.
type httpService struct {
	addr string
	m    atomic.Int32
}

func newHTTPService(t *testing.T) *httpService {
	s := &httpService{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || r.Header.Get("User-Agent") != "pias-check" {
			http.NotFound(w, r)
			return
		}
		switch mode(s.m.Load()) {
		case modeDown:
			w.WriteHeader(http.StatusServiceUnavailable)
		case modeSlow:
			<-r.Context().Done()
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *httpService) set(m mode) { s.m.Store(int32(m)) }

// dnsService answers queries over UDP and TCP on one port: NOERROR with an
// A record when up, SERVFAIL when down, nothing when slow. It builds its
// answers by hand, not with the package's codec. forge, when set, makes
// it send a reply with a wrong id first.
type dnsService struct {
	addr  string
	m     atomic.Int32
	rcode atomic.Int32 // the rcode when down
	noAns atomic.Bool  // up, but no answer record (NODATA)
	forge atomic.Bool
}

func newDNSService(t *testing.T) *dnsService {
	s := &dnsService{}
	s.rcode.Store(rcodeServFail)
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 10 { // a port free for both UDP and TCP
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	s.addr = pc.LocalAddr().String()
	t.Cleanup(func() { pc.Close(); ln.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if s.forge.Load() {
				if r := s.reply(buf[:n]); r != nil {
					r[0] ^= 0xff
					pc.WriteTo(r, from)
				}
			}
			if r := s.reply(buf[:n]); r != nil {
				pc.WriteTo(r, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				r := s.reply(q)
				if r == nil {
					io.Copy(io.Discard, c) // slow: hold the connection
					return
				}
				c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(r))))
				c.Write(r)
			}()
		}
	}()
	return s
}

func (s *dnsService) set(m mode) { s.m.Store(int32(m)) }

// reply answers the query q, or returns nil (slow, or q malformed).
func (s *dnsService) reply(q []byte) []byte {
	if len(q) < 12 || mode(s.m.Load()) == modeSlow {
		return nil
	}
	end := 12 // the end of the question
	for end < len(q) && q[end] != 0 {
		end += 1 + int(q[end])
	}
	end += 5
	if end > len(q) {
		return nil
	}
	r := append([]byte{}, q[:end]...)
	r[2] |= 0x80 // QR
	r[3] = 0x80  // RA, rcode 0
	switch {
	case mode(s.m.Load()) == modeDown:
		r[3] |= byte(s.rcode.Load())
	case s.noAns.Load():
	default:
		r[7] = 1                                               // ANCOUNT
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4) // name → the question's, A IN, TTL 60
		r = append(r, 192, 0, 2, 1)
	}
	return r
}

// udpService echoes while up, is closed while down, and reads without
// answering while slow.
type udpService struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	pc   net.PacketConn
	m    atomic.Int32
}

func newUDPService(t *testing.T) *udpService {
	s := &udpService{t: t}
	s.open("127.0.0.1:0")
	s.addr = s.pc.LocalAddr().String()
	t.Cleanup(func() { s.set(modeDown) })
	return s
}

func (s *udpService) open(addr string) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.pc = pc
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil && mode(s.m.Load()) == modeUp {
				pc.WriteTo(buf[:n], from)
			}
		}
	}()
}

func (s *udpService) set(m mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.Store(int32(m))
	switch {
	case m == modeDown && s.pc != nil:
		s.pc.Close()
		s.pc = nil
	case m != modeDown && s.pc == nil:
		s.open(s.addr)
	}
}
