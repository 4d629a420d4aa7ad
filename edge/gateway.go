// Package edge is Meridian's data plane: the client-facing listener, the
// router, the proxy with its balancers, health checks, retries and limits,
// the admin API, metrics and the access log.
//
// A Gateway serves HTTP from one immutable Snapshot at a time. The control
// plane (the node) parses a gateway document, compiles it with
// Gateway.Compile and installs it with Gateway.Swap; the hot path reads the
// current snapshot with one atomic load and never takes a lock for
// configuration.
//
//	g := edge.New(edge.Options{Logger: log})
//	snap, err := g.Compile(doc, edge.CompileInput{Version: 1, Raw: raw})
//	g.Swap(snap)
//	srv, err := g.Listen(edge.ListenerOptions{Addr: "127.0.0.1:8080"})
//	go srv.Serve()
package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure a Gateway. The zero value is usable.
type Options struct {
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
	// AccessLog receives one record per request; nil means no access log.
	AccessLog *slog.Logger
	// Region is this node's region, the region of targets that name none.
	Region string
	// ProxyName names this hop in Via and Proxy-Status; default "meridian".
	ProxyName string
	// TrustedProxies are the networks whose Forwarded and X-Forwarded-*
	// headers are extended rather than replaced. Empty trusts nobody.
	TrustedProxies trustedProxies
	// SendTimeout bounds how long one write of a response body to an
	// HTTP/2 or HTTP/3 client may wait (a stream held back by flow
	// control); default 60s. The HTTP/1 server and the HTTP/2 connection
	// take theirs from ListenerOptions.SendTimeout.
	SendTimeout time.Duration
	// ReadBodyTimeout is how long one read of a request body may wait for
	// the client before the request is cut with a 408 (nginx's
	// client_body_timeout: it bounds the time between two reads, not the
	// whole body). It applies until the response's head is sent, and only
	// while the gateway waits on the client, not while it waits for the
	// upstream to take more. Default 60s.
	ReadBodyTimeout time.Duration
	// MaxHeaderCount caps the header fields of a request (431 beyond);
	// default 100.
	MaxHeaderCount int
	// Underscores is what happens to request header fields whose names
	// contain "_"; the zero value allows them.
	Underscores UnderscorePolicy
	// MaxRequestBody is the request body limit of routes that set none;
	// default 10 MiB.
	MaxRequestBody int64
	// HealthClient performs active health checks; nil means each pool's
	// own default client.
	HealthClient *http.Client
}

// UnderscorePolicy is what happens to request header fields with "_" in
// their names: some backends (CGI, PHP, WSGI) fold "_" and "-" together,
// so X_Forwarded_For would reach them as the X-Forwarded-For the gateway
// vouches for.
type UnderscorePolicy string

const (
	UnderscoresAllow  UnderscorePolicy = "allow"  // forward them (default; Envoy, Caddy)
	UnderscoresDrop   UnderscorePolicy = "drop"   // remove them (nginx)
	UnderscoresReject UnderscorePolicy = "reject" // answer 400
)

// Gateway is the data plane of one node.
type Gateway struct {
	opts         Options
	log          *slog.Logger
	snap         atomic.Pointer[Snapshot]
	metrics      *metrics
	healthClient *http.Client

	tmu        sync.Mutex
	transports map[transportKey]upstreamTransport

	hmu          sync.Mutex
	hijacked     map[net.Conn]io.Closer
	hijackClosed bool
	hwg          sync.WaitGroup // upgraded exchanges still running

	// cut is set when a drain's deadline passed and the requests left are
	// being cut off: their log lines say drain_timeout, not that the
	// client left.
	cut atomic.Bool

	lmu       sync.Mutex
	listeners []*guardListener

	// clientAuth is set when some TLS listener asks for client
	// certificates, so the hot path looks for them only then.
	clientAuth atomic.Bool

	via11  string   // "1.1 " + ProxyName
	via10  string   // "1.0 " + ProxyName
	via11s []string // {via11}, capacity 1: the Via of an HTTP/1.1 response
}

// New makes a Gateway with no snapshot; until Swap installs one it answers
// 503.
func New(opts Options) *Gateway {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ProxyName == "" {
		opts.ProxyName = "meridian"
	}
	if opts.MaxHeaderCount == 0 {
		opts.MaxHeaderCount = 100
	}
	if opts.SendTimeout == 0 {
		opts.SendTimeout = 60 * time.Second
	}
	if opts.ReadBodyTimeout == 0 {
		opts.ReadBodyTimeout = 60 * time.Second
	}
	if opts.MaxRequestBody == 0 {
		opts.MaxRequestBody = DefaultMaxRequestBody
	}
	g := &Gateway{
		opts:         opts,
		log:          opts.Logger,
		healthClient: opts.HealthClient,
		transports:   map[transportKey]upstreamTransport{},
		hijacked:     map[net.Conn]io.Closer{},
	}
	g.via11 = "1.1 " + opts.ProxyName
	g.via10 = "1.0 " + opts.ProxyName
	g.via11s = []string{g.via11}[:1:1]
	g.metrics = newMetrics(g)
	return g
}

// Current returns the snapshot being served, or nil.
func (g *Gateway) Current() *Snapshot { return g.snap.Load() }

// Swap installs s as the snapshot for new requests: it starts s's health
// checks, switches atomically, then stops the old snapshot's health checks.
// Requests already running keep the snapshot they started with. It returns
// the old snapshot.
func (g *Gateway) Swap(s *Snapshot) *Snapshot {
	s.start()
	old := g.snap.Swap(s)
	if old != nil {
		old.stop()
	}
	g.metrics.prune(s)
	g.metrics.configVersion.Set(float64(s.Version))
	g.metrics.configApplied.WithLabelValues("applied").Inc()
	g.closeUnusedTransports(s, old)
	return old
}

// RecordRejected counts a document that failed to parse, validate or
// compile, for the metrics.
func (g *Gateway) RecordRejected() { g.metrics.configApplied.WithLabelValues("rejected").Inc() }

// closeUnusedTransports drops the idle connections of transports that the
// new snapshot s no longer uses, and forgets those that neither s nor the
// snapshot it replaced (old) uses. Those of old stay cached, so that a
// reload back to it finds its pools; requests still running on an older
// snapshot keep the transport they hold, and whatever connections they
// give back are swept at the idle timeout. Without the forgetting, every
// distinct combination of timeouts and TLS files ever applied would stay.
func (g *Gateway) closeUnusedTransports(s, old *Snapshot) {
	keep := make(map[transportKey]upstreamTransport, len(g.transports))
	if old != nil {
		for _, svc := range old.order {
			keep[svc.tkey] = svc.transport
		}
	}
	used := map[upstreamTransport]bool{}
	dests := map[upstreamTransport]map[poolKey]bool{} // the targets each transport still serves
	for _, svc := range s.order {
		used[svc.transport] = true
		keep[svc.tkey] = svc.transport
		d := dests[svc.transport]
		if d == nil {
			d = map[poolKey]bool{}
			dests[svc.transport] = d
		}
		for _, tg := range svc.pool.Targets() {
			d[poolKey{tg.URL.Scheme, tg.URL.Host}] = true
		}
	}
	g.tmu.Lock()
	all := g.transports
	g.transports = keep
	g.tmu.Unlock()
	for _, t := range all {
		if !used[t] {
			if h1, ok := t.(*h1Transport); ok {
				h1.serving.Store(&map[poolKey]bool{}) // busy ones close as they come back
			}
			t.CloseIdleConnections()
			continue
		}
		// Still used, maybe not for every target it had: the idle
		// connections to the targets the document dropped go now rather
		// than at the idle timeout.
		switch t := t.(type) {
		case *h1Transport:
			t.closeIdleExcept(dests[t])
		default:
			if old != nil && droppedTarget(old, t, dests[t]) {
				t.CloseIdleConnections() // net/http's pools cannot be closed one host at a time
			}
		}
	}
}

// droppedTarget reports whether a service of old sent requests to a target
// through t that dests (what t serves now) no longer holds.
func droppedTarget(old *Snapshot, t upstreamTransport, dests map[poolKey]bool) bool {
	for _, svc := range old.order {
		if svc.transport != t {
			continue
		}
		for _, tg := range svc.pool.Targets() {
			if !dests[poolKey{tg.URL.Scheme, tg.URL.Host}] {
				return true
			}
		}
	}
	return false
}

// MetricsHandler serves the Prometheus exposition of the gateway's metrics.
func (g *Gateway) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{Registry: g.metrics.reg})
}

// Registerer lets other parts of the node add their metrics beside the
// gateway's.
func (g *Gateway) Registerer() prometheus.Registerer { return g.metrics.reg }

// Close stops the current snapshot's health checks, closes taken-over
// (WebSocket) connections and idle upstream connections.
func (g *Gateway) Close() {
	if s := g.snap.Load(); s != nil {
		s.stop()
	}
	g.closeHijacked()
	g.tmu.Lock()
	for _, t := range g.transports {
		t.CloseIdleConnections()
	}
	g.tmu.Unlock()
}

// fail answers with an error the gateway made.
func (g *Gateway) fail(w http.ResponseWriter, r *http.Request, x *exchange, pe *proxyError) {
	x.status = pe.status
	x.errDetail = pe.cause
	switch {
	case pe.proxyStatus != "":
		x.errKind = pe.proxyStatus
	case pe.status == http.StatusBadRequest || pe.status == http.StatusRequestEntityTooLarge || pe.status == http.StatusRequestHeaderFieldsTooLarge,
		pe.status == http.StatusNotImplemented || pe.status == http.StatusHTTPVersionNotSupported || pe.status == http.StatusExpectationFailed:
		x.errKind = "http_request_error" // logged; no Proxy-Status, which is about the upstream
	}
	name := ""
	if x.route != nil {
		name = x.route.name
	}
	x.bytesOut = writeProblem(w, r, pe, name, x.requestID(), g.opts.ProxyName)
}

// finish records metrics and the access log for an exchange, once.
func (g *Gateway) finish(r *http.Request, x *exchange) {
	if x.finished {
		return
	}
	status := x.status
	if status == 0 {
		status = 499
	}
	if r.ProtoMajor == 2 {
		if gc, ok := r.Context().Value(connKey{}).(*guardConn); ok && gc.noteStream(status == 499 && x.bytesOut == 0) {
			g.log.Warn("closed an HTTP/2 connection whose client reset most of its streams before any answer (rapid reset)",
				"client", r.RemoteAddr, "streams", gc.streams.Load(), "resets", gc.resets.Load())
			g.metrics.resetFloods.Inc()
		}
	}
	if x.traceID == "" && g.opts.AccessLog != nil {
		// Answered before the upstream request was built (no route,
		// the concurrency cap, a body too large): the client's own
		// trace, if it sent one, still ties the line to it.
		// Two traceparent fields are no trace (W3C), here as upstream.
		if v := r.Header["Traceparent"]; len(v) == 1 {
			if tid, _, ok := parseTraceparent(v[0]); ok {
				x.traceID = tid
			}
		}
	}
	g.record(x, status, r.Method, r.RemoteAddr, r.Proto, r.Host, r, "")
}

// record is finish's metrics and log line, for a request whose method,
// peer address, protocol and Host are given, and whose path is logPath(r),
// or path when r is nil (the span lane's, h1lane.go).
func (g *Gateway) record(x *exchange, status int, method, remote, proto, host string, r *http.Request, path string) {
	x.finished = true
	end := x.end
	if end == 0 {
		end = monoNow()
	}
	d := end - x.start
	var rs *routeStats
	routeName, service := "", ""
	if x.route != nil {
		rs = x.route.stats
		routeName = x.route.name
		service = x.route.svc.name
	} else {
		rs = g.metrics.route("")
	}
	rs.observe(method, status, d.Seconds())
	if x.upstreamHead && service != "" {
		rs.observeUpstream(service, x.upstreamDur.Seconds())
	}
	if x.errKind != "" {
		g.metrics.countError(rs, x.errKind)
	}
	if al := g.opts.AccessLog; al != nil {
		g.logAccess(al, x, d, status, routeName, service, method, remote, proto, host, r, path)
	}
}

// logAccess writes the access log's line for an exchange that record
// ends (d its duration). It is a function of its own so that record's
// stack frame stays small: the attributes take 1.5 KiB of this one's,
// which a node without an access log never touches.
func (g *Gateway) logAccess(al *slog.Logger, x *exchange, d time.Duration, status int, routeName, service, method, remote, proto, host string, r *http.Request, path string) {
	if r != nil {
		path = logPath(r)
	}
	// Through trusted proxies, the client is the one they forwarded
	// and the peer the proxy that connected.
	client := remote
	if x.origin != "" {
		client = x.origin
	}
	attrs := []slog.Attr{
		slog.String("request_id", x.requestID()),
		slog.String("trace_id", x.traceID),
		slog.String("client", client),
		slog.String("proto", proto),
		slog.String("method", method),
		slog.String("host", host),
		slog.String("path", path),
		slog.String("route", routeName),
		slog.String("service", service),
		slog.String("target", x.target),
		slog.Int("status", status),
		slog.Int64("bytes_in", x.bytesIn),
		slog.Int64("bytes_out", x.bytesOut),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.Float64("upstream_ms", float64(x.upstreamDur.Microseconds())/1000),
	}
	if x.origin != "" {
		attrs = append(attrs, slog.String("peer", remote))
	}
	if x.attempts > 1 {
		attrs = append(attrs, slog.Int("attempts", x.attempts))
	}
	if x.retriedOn != "" {
		attrs = append(attrs, slog.String("retried_on", x.retriedOn))
	}
	if x.retryRefused {
		attrs = append(attrs, slog.Bool("retry_budget_exhausted", true))
	}
	if x.errKind != "" {
		attrs = append(attrs, slog.String("error", x.errKind))
	}
	if x.errDetail != "" {
		attrs = append(attrs, slog.String("error_detail", x.errDetail))
	}
	al.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

// logPath is the request's path as the access log shows it: as the client
// spelled it, percent-encoding kept; an absolute-form target without one
// ("GET http://a") is forwarded as "/".
func logPath(r *http.Request) string {
	if r.URL.Path == "" && r.URL.Host != "" && r.Method != http.MethodConnect {
		return "/"
	}
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	// As the client spelled it (EscapedPath is the path itself when
	// nothing in it needs escaping): decoded, /a%2Fb and /a/b, or %3F and
	// a query, would log alike.
	return r.URL.EscapedPath()
}

// ListenerOptions harden the client-facing HTTP listener. Zero values take
// the defaults given.
type ListenerOptions struct {
	// Addr to listen on, such as "127.0.0.1:8080". Ignored if Listener is
	// set.
	Addr string
	// Listener, if set, is used instead of listening on Addr.
	Listener net.Listener
	// MaxHeaderBytes caps the request line and headers; default 64 KiB.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds reading a request's headers (slowloris);
	// default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle that long; default
	// 120s.
	IdleTimeout time.Duration
	// SendTimeout is how long writing a response to a client may make no
	// progress (a client that stopped reading) before the connection is
	// closed: nginx's send_timeout. HTTP/1.x: each write (of up to 32 KiB)
	// has at least seven eighths of it; HTTP/2: no byte written to the
	// connection for that long. Default 60s.
	SendTimeout time.Duration
	// MaxConnections caps concurrent client connections (beyond it new ones
	// are closed at once); default 0, no cap.
	MaxConnections int
	// Handler, if set, serves instead of the gateway (Listen only).
	Handler http.Handler

	// parkAfter is how long a keep-alive connection is idle before it is
	// parked (h1park.go); 0: defaultParkAfter, below 0: never (tests).
	parkAfter time.Duration
}

// Server is one client-facing HTTP listener (HTTP/1.1 and h2c).
type Server struct {
	g   *Gateway
	srv *h1Server
	ln  *guardListener
}

func (o ListenerOptions) withDefaults() ListenerOptions {
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if o.ReadHeaderTimeout == 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 120 * time.Second
	}
	if o.SendTimeout == 0 {
		o.SendTimeout = 60 * time.Second
	}
	return o
}

func newServerErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}

func http2Config(sendTimeout time.Duration) *http.HTTP2Config {
	return &http.HTTP2Config{
		WriteByteTimeout:     sendTimeout,
		MaxConcurrentStreams: 250,
		// The protocol's initial value (RFC 9113, 4.2): browsers, curl
		// and gRPC send frames of 16 KiB anyway, and a peer that holds
		// the limit to be that value until it reads ours (h2spec 4.2/3)
		// sees a larger frame refused, as it expects.
		MaxReadFrameSize: 16 << 10,
		// The connection's window is several streams' worth: with the two
		// equal (net/http's default), one upload whose upstream is slow
		// to take it holds the whole connection's credit, and the other
		// streams' clients cannot send a byte: head-of-line blocking,
		// which the read body timeout would blame on them. Seven stalled
		// uploads at a full window still leave room; this is also what a
		// connection may make the gateway buffer at most.
		MaxReceiveBufferPerConnection: 8 << 20,
		MaxReceiveBufferPerStream:     1 << 20,
	}
}

// Listen binds a client-facing listener that serves HTTP/1.1 and HTTP/2
// with prior knowledge (h2c). Call Serve to start answering. With
// o.Handler set, that handler serves instead of the gateway itself (the
// node wraps the gateway with ACME challenges and the HTTPS redirect).
func (g *Gateway) Listen(o ListenerOptions) (*Server, error) {
	o = o.withDefaults()
	ln := o.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", o.Addr)
		if err != nil {
			return nil, err
		}
	}
	gl := newGuardListener(ln, o.MaxConnections, g.log)
	var h http.Handler = g
	if o.Handler != nil {
		h = o.Handler
	}
	return &Server{g: g, srv: g.newHTTPServer(o, h, gl), ln: gl}, nil
}

// newHTTPServer makes the server of a client-facing listener with its
// hardening: HTTP/1 is served by h1Server, HTTP/2 by net/http's server
// (prior knowledge, after the preface or ALPN "h2"). It registers the
// listener for the connection metrics.
func (g *Gateway) newHTTPServer(o ListenerOptions, h http.Handler, gl *guardListener) *h1Server {
	g.lmu.Lock()
	g.listeners = append(g.listeners, gl)
	g.lmu.Unlock()
	// HTTP/2 alone: h1Server hands this server only connections that
	// chose h2 by ALPN or began with the prior-knowledge preface. One
	// whose first bytes then turn out not to be HTTP/2's whole preface
	// is closed without an answer (RFC 9113, 3.4), rather than read as
	// an HTTP/1 request by the fallback net/http would otherwise make.
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	h2 := &http.Server{
		Handler:        g.headerSizeGuard(g.optionsStar(h), o.MaxHeaderBytes),
		MaxHeaderBytes: 2 * o.MaxHeaderBytes, // see headerSizeGuard
		// Ours answers it, logged (net/http's would answer unseen).
		DisableGeneralOptionsHandler: true,
		ReadHeaderTimeout:            o.ReadHeaderTimeout,
		IdleTimeout:                  o.IdleTimeout,
		ConnContext:                  connContext,
		Protocols:                    &protos,
		ErrorLog:                     newServerErrorLog(g.log),
		HTTP2:                        http2Config(o.SendTimeout),
	}
	s := newH1Server(h, o, g.log, h2)
	gl.parked = &s.parkedN
	s.refused = g.logRefused
	s.onCut = func() { g.cut.Store(true) }
	s.optionsStar = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.answerLocal(w, r, http.StatusOK, "") // logged and counted, no route
	})
	return s
}

// optionsStar answers OPTIONS * over HTTP/2 and HTTP/3 as the HTTP/1
// server does (h1server.go): it asks about the server, not a resource, so
// it gets a 200 of the gateway's own, logged and counted, with no route.
func (g *Gateway) optionsStar(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions && r.RequestURI == "*" {
			g.answerLocal(w, r, http.StatusOK, "")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// headerSizeGuard refuses HTTP/2 and HTTP/3 requests whose header fields
// take more than max bytes (as HPACK and QPACK count them: name, value and
// 32 each) with a 431 problem, logged and counted like other refusals.
// net/http and quic-go, given twice max, would otherwise answer with a page
// of their own that no log sees.
func (g *Gateway) headerSizeGuard(h http.Handler, max int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor >= 2 && max > 0 {
			// The pseudo-header fields count too: a 100 KB :path or
			// :authority is as large a head as a 100 KB field.
			size := len(":method") + len(r.Method) + len(":path") + len(r.RequestURI) + len(":authority") + len(r.Host) + 3*32
			for k, vs := range r.Header {
				for _, v := range vs {
					size += len(k) + len(v) + 32
				}
			}
			if size > max {
				g.answerLocal(w, r, http.StatusRequestHeaderFieldsTooLarge,
					"the request's header fields take "+strconv.Itoa(size)+" bytes; the limit is "+strconv.Itoa(max))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// logRefused logs and counts a request the HTTP/1 server refused before
// any handler saw it (a malformed head, oversized headers, a head that
// came too slowly, or one the client stopped sending halfway), as nginx
// logs its 400s: no route, the parts of the request that were read, and
// the refusal as the error.
func (g *Gateway) logRefused(remote string, cs *tls.ConnectionState, pe *parseError) {
	r := &http.Request{Method: pe.method, Proto: pe.proto, Host: pe.host, RemoteAddr: remote, Header: http.Header{}, TLS: cs, URL: &url.URL{}}
	r.URL.RawPath, _, _ = strings.Cut(pe.target, "?") // as read (logPath)
	c := calls.Get().(*call)
	defer c.release()
	x := &c.x
	x.identify(r)
	if pe.reqID != "" {
		x.reqID = pe.reqID // as the answer said
	}
	if pe.start != 0 {
		x.start = pe.start
	}
	x.status = pe.status
	x.bytesOut = int64(pe.sent)
	switch pe.status {
	case 0: // nothing answered: the client went, or the drain cut it
		g.clientGone(x)
	case http.StatusRequestTimeout:
		x.errKind = "client_header_timeout"
	default:
		x.errKind = "http_request_error"
	}
	g.finish(r, x)
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until Shutdown; it returns nil after a Shutdown.
func (s *Server) Serve() error {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// then closes what is left (including WebSocket connections). It returns
// ctx's error if requests had to be cut off.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	// Taken-over connections are not tracked by http.Server: give them the
	// rest of the deadline, then close them.
	for s.g.hijackedCount() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	if s.g.hijackedCount() > 0 {
		s.g.cut.Store(true)
		if err == nil {
			err = ctx.Err()
		}
	}
	s.g.closeHijacked()
	s.g.hwg.Wait() // their log lines are out before the drain ends
	return err
}
