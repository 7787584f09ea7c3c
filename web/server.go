// Package web serves a node's HTTP listener: Prometheus metrics, a JSON
// API, a stream of control-plane events, and the live map, a page
// embedded in the binary. It reads what the node keeps anyway (counters,
// snapshots) when asked, and adds nothing to the data path.
package web

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pias-net/pias/node"
	"github.com/pias-net/pias/overlay"
)

// Source is the node a server shows: a running proxy or edge, or a whole
// in-process lab (the demo).
type Source interface {
	View(now time.Time) View
	WriteMetrics(m *Metrics)
}

// ProxySource shows a proxy from its own view.
func ProxySource(p *node.Proxy) Source { return proxySource{p} }

// EdgeSource shows a target or client: itself and its candidates.
func EdgeSource(e *node.Edge) Source { return edgeSource{e} }

type proxySource struct{ p *node.Proxy }

func (s proxySource) View(now time.Time) View { return proxyView(s.p, now) }
func (s proxySource) WriteMetrics(m *Metrics) { writeProxyMetrics(m, s.p) }

type edgeSource struct{ e *node.Edge }

func (s edgeSource) View(now time.Time) View { return edgeView(s.e, now) }
func (s edgeSource) WriteMetrics(m *Metrics) { writeEdgeMetrics(m, s.e) }

// Server is a node's HTTP listener.
type Server struct {
	ln    net.Listener
	srv   *http.Server
	token string
	hub   *hub
	src   atomic.Pointer[Source] // nil until Serve
	now   func() time.Time
	done  chan struct{} // closed by Close: event streams end
	once  sync.Once
}

// Timeouts and sizes of the listener.
const (
	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 10 * time.Second // every answer but an event stream
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 8 << 10
	// streamPing is how often an idle event stream sends a comment, so
	// that a dead client is noticed (its write fails).
	streamPing  = 15 * time.Second
	tokenCookie = "pias_token"
)

// ErrTokenRequired: a listener on an address other than loopback needs a
// bearer token.
var ErrTokenRequired = errors.New("an address other than loopback needs a token (http_token_file)")

// Listen binds addr now, so that a bad address or a port in use is an
// error at start, and answers 503 until Serve. token, if not empty, is
// the bearer token every request must carry; an address other than
// loopback requires one.
func Listen(addr netip.AddrPort, token string) (*Server, error) {
	if !addr.Addr().IsLoopback() && token == "" {
		return nil, ErrTokenRequired
	}
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		var se *os.SyscallError
		if errors.As(err, &se) {
			err = se.Err // "address already in use", without the call and address
		}
		return nil, err
	}
	s := &Server{ln: ln, token: token, hub: newHub(), now: time.Now, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("GET /api/view", s.view)
	mux.HandleFunc("GET /api/events", s.events)
	mux.HandleFunc("GET /events", s.stream)
	mux.HandleFunc("GET /{$}", s.page)
	mux.Handle("GET /static/", http.FileServerFS(static))
	s.srv = &http.Server{Handler: s.auth(mux), ReadHeaderTimeout: readHeaderTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes}
	go s.srv.Serve(ln)
	return s, nil
}

// Serve starts answering for src.
func (s *Server) Serve(src Source) { s.src.Store(&src) }

// Event hears a control-plane event (node.Options.OnEvent); it never
// blocks.
func (s *Server) Event(e overlay.Event) { s.hub.publish(e, s.now()) }

// Addr is the address the server listens on.
func (s *Server) Addr() netip.AddrPort {
	return s.ln.Addr().(*net.TCPAddr).AddrPort()
}

// URL is the server's base URL, e.g. "http://127.0.0.1:9586/".
func (s *Server) URL() string { return "http://" + s.Addr().String() + "/" }

// Close stops the server; open event streams end.
func (s *Server) Close() error {
	s.once.Do(func() { close(s.done) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.srv.SetKeepAlivesEnabled(false)
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	return err
}

// auth lets a request through if it carries the token: as a bearer token
// (Prometheus: authorization.credentials_file), or as the cookie the page
// sets. A browser opens the map once as /?token=TOKEN; the server sets
// the cookie and sends it to / without the token in the address.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if s.token == "" {
			next.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/" && r.URL.Query().Has("token") {
			if !s.tokenOK(r.URL.Query().Get("token")) {
				http.Error(w, "wrong token", http.StatusUnauthorized)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: s.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		got := ""
		if h := r.Header.Get("Authorization"); h != "" {
			got, _ = strings.CutPrefix(h, "Bearer ")
		} else if c, err := r.Cookie(tokenCookie); err == nil {
			got = c.Value
		}
		if !s.tokenOK(got) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pias"`)
			http.Error(w, "a bearer token is required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) tokenOK(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) == 1
}

// source is what the server shows, or nil (503) before Serve.
func (s *Server) source(w http.ResponseWriter) Source {
	p := s.src.Load()
	if p == nil {
		http.Error(w, "the node is starting", http.StatusServiceUnavailable)
		return nil
	}
	return *p
}

func (s *Server) deadline(w http.ResponseWriter) {
	http.NewResponseController(w).SetWriteDeadline(s.now().Add(writeTimeout))
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	src := s.source(w)
	if src == nil {
		return
	}
	s.deadline(w)
	var m Metrics
	src.WriteMetrics(&m)
	writeServer(&m, s.hub)
	writeBuild(&m)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(m.Bytes())
}

func (s *Server) view(w http.ResponseWriter, r *http.Request) {
	src := s.source(w)
	if src == nil {
		return
	}
	s.deadline(w)
	writeJSON(w, src.View(s.now()))
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	s.deadline(w)
	writeJSON(w, s.hub.recent())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// stream is the event stream (Server-Sent Events): one "data:" line of
// JSON per event.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	c := s.hub.subscribe()
	if c == nil {
		http.Error(w, "too many event streams", http.StatusServiceUnavailable)
		return
	}
	defer s.hub.unsubscribe(c)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	send := func(b []byte) bool {
		rc.SetWriteDeadline(s.now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send([]byte(": pias events\n\n")) {
		return
	}
	ping := time.NewTicker(streamPing)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-ping.C:
			if !send([]byte(": ping\n\n")) {
				return
			}
		case ev := <-c:
			b, _ := json.Marshal(ev)
			if !send(append(append([]byte("data: "), b...), '\n', '\n')) {
				return
			}
		}
	}
}

//go:embed static
var static embed.FS

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	b, err := static.ReadFile("static/map.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
	w.Write(b)
}
