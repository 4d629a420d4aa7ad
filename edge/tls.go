package edge

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// TLSListenerOptions configure the HTTPS listener: TLS over TCP (HTTP/1.1
// and HTTP/2 by ALPN) and, when HTTP3 is set, QUIC on the UDP port of the
// same number.
type TLSListenerOptions struct {
	ListenerOptions
	// TLSConfig supplies certificates (GetCertificate) and policy; it is
	// cloned, never modified.
	TLSConfig *tls.Config
	// HTTP3 also serves HTTP/3 on UDP and announces it with Alt-Svc on
	// TCP responses.
	HTTP3 bool
	// Allow0RTT accepts QUIC 0-RTT early data; requests that arrive in
	// early data with an unsafe method are answered 425 Too Early
	// (RFC 8470), because early data can be replayed.
	Allow0RTT bool
	// QUICConfig tunes QUIC (stateless reset and token keys in a
	// cluster); nil takes quic-go's defaults.
	QUICConfig *quic.Config
	// ClientAuth asks clients of some hosts for certificates (mutual
	// TLS). The verified identity is forwarded upstream in
	// X-Forwarded-Client-Cert.
	ClientAuth []ClientAuthPolicy
	// StatelessResetKey and TokenKey, when set, make QUIC stateless
	// resets and address-validation tokens valid across every node that
	// shares them (an anycast PoP): a client that lands on another node
	// is reset cleanly or keeps its token. Nil: random per process.
	StatelessResetKey *quic.StatelessResetKey
	TokenKey          *quic.TokenGeneratorKey
}

// ClientAuthPolicy is mutual TLS for a set of server names.
type ClientAuthPolicy struct {
	// Hosts are exact names or "*.example.com" wildcards (one label or
	// more, as for routes).
	Hosts []string
	// CAs verify client certificates.
	CAs *x509.CertPool
	// Required refuses the handshake without a valid certificate; else a
	// certificate is verified if given.
	Required bool
}

// rank says how closely the policy's hosts name name, as the router ranks
// hosts: an exact name above any wildcard, a longer wildcard suffix above
// a shorter; -1 for none. A wildcard matches one or more labels, as it
// does for routes (*.example.com matches a.b.example.com): a route the
// policy protects is never reached under a name the policy does not hold.
func (p *ClientAuthPolicy) rank(name string) int {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	best := -1
	for _, h := range p.Hosts {
		if h == name {
			return 1 << 30
		}
		if suffix, ok := strings.CutPrefix(h, "*"); ok && strings.HasSuffix(name, suffix) && len(name) > len(suffix) && len(suffix) > best {
			best = len(suffix)
		}
	}
	return best
}

// clientAuthPolicyFor is the index of the policy that governs name (the
// closest, clientAuthPolicy.rank), -1 for none.
func clientAuthPolicyFor(policies []ClientAuthPolicy, name string) int {
	at, best := -1, -1
	for i := range policies {
		if r := policies[i].rank(name); r > best {
			at, best = i, r
		}
	}
	return at
}

// withClientAuth makes c ask for client certificates on the hosts of the
// policies; the per-host configs are clones of c, so certificates and
// handshake counting stay the same.
func withClientAuth(c *tls.Config, policies []ClientAuthPolicy) *tls.Config {
	if len(policies) == 0 {
		return c
	}
	base := c.Clone()
	prev := c.GetConfigForClient
	perPolicy := make([]*tls.Config, len(policies))
	for i, p := range policies {
		pc := base.Clone()
		pc.ClientCAs = p.CAs
		pc.ClientAuth = tls.VerifyClientCertIfGiven
		if p.Required {
			pc.ClientAuth = tls.RequireAndVerifyClientCert
		}
		perPolicy[i] = pc
	}
	c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if i := clientAuthPolicyFor(policies, hello.ServerName); i >= 0 {
			return perPolicy[i], nil
		}
		if prev != nil {
			return prev(hello)
		}
		return nil, nil
	}
	return c
}

// TLSServer is a running HTTPS listener.
type TLSServer struct {
	g      *Gateway
	srv    *h1Server
	ln     *guardListener
	h3     *http3.Server
	udp    net.PacketConn
	qtr    *quic.Transport
	qln    *quic.EarlyListener
	confs  []*tls.Config // the configs handshakes use, for ticket keys
	altSvc string
	wg     sync.WaitGroup

	h3Active atomic.Int64 // HTTP/3 requests being served
	quic     *quicGuard   // nil without HTTP/3
	// h3Cut cancels every HTTP/3 request, at a drain's deadline: each
	// connection's context (the parent of its requests') ends with it
	// (h3CutConn).
	h3CutCtx context.Context
	h3Cut    context.CancelFunc
}

// ListenTLS binds the HTTPS listener (TCP, and UDP for HTTP/3). Call Serve.
func (g *Gateway) ListenTLS(o TLSListenerOptions) (*TLSServer, error) {
	if o.TLSConfig == nil {
		return nil, errors.New("edge: ListenTLS needs a TLS config")
	}
	o.ListenerOptions = o.ListenerOptions.withDefaults()
	tcp := o.Listener
	if tcp == nil {
		var err error
		if tcp, err = net.Listen("tcp", o.Addr); err != nil {
			return nil, err
		}
	}
	s := &TLSServer{g: g, ln: newGuardListener(tcp, o.MaxConnections, g.log)}
	s.h3CutCtx, s.h3Cut = context.WithCancel(context.Background())
	tcpConf := withClientAuth(g.countHandshakes(o.TLSConfig.Clone(), "tcp"), o.ClientAuth)
	g.clientAuth.Store(len(o.ClientAuth) > 0)
	if len(tcpConf.NextProtos) == 0 {
		tcpConf.NextProtos = []string{"h2", "http/1.1", "http/1.0"}
	}
	if tcpConf.MinVersion == 0 {
		tcpConf.MinVersion = tls.VersionTLS12
	}
	s.ln.tlsConf = tcpConf
	s.confs = append(s.confs, tcpConf)
	var handler http.Handler = g
	if o.HTTP3 {
		port := tcp.Addr().(*net.TCPAddr).Port
		udpAddr := net.JoinHostPort(tcp.Addr().(*net.TCPAddr).IP.String(), strconv.Itoa(port))
		udp, err := net.ListenPacket("udp", udpAddr)
		if err != nil {
			tcp.Close()
			return nil, err
		}
		s.udp = udp
		qconf := o.QUICConfig
		if qconf == nil {
			qconf = &quic.Config{}
		} else {
			qconf = qconf.Clone()
		}
		qconf.Allow0RTT = o.Allow0RTT
		if qconf.MaxIdleTimeout == 0 {
			qconf.MaxIdleTimeout = o.IdleTimeout
		}
		if qconf.KeepAlivePeriod == 0 {
			// The transport's idle timeout would otherwise cut a
			// request whose stream is quiet for that long (an event
			// stream between events), whatever the service's read
			// timeout: PINGs keep a connection whose client answers
			// alive, and the HTTP/3 idle timeout (quicguard.go) closes
			// it once no request has been served for idle_timeout. A
			// client gone silent still times out.
			qconf.KeepAlivePeriod = o.IdleTimeout / 2
		}
		// Its handshakes are counted when they complete (quicguard.go):
		// VerifyConnection runs once the server's flight is sent, before
		// the client's Finished, which a spoofed address never sends.
		h3conf := withClientAuth(o.TLSConfig.Clone(), o.ClientAuth)
		h3conf.NextProtos = nil // http3 sets "h3"
		h3conf = http3.ConfigureTLSConfig(h3conf)
		// QUIC connections count against the listener's cap with its TCP
		// ones; the HTTP/3 idle timeout is the guard's (quicguard.go).
		qg := newQUICGuard(s.ln, o.MaxConnections, o.IdleTimeout)
		qg.onHandshake = func(cs tls.ConnectionState) { g.countHandshake("quic", cs) }
		s.quic = qg
		s.qtr = &quic.Transport{Conn: udp, StatelessResetKey: o.StatelessResetKey, TokenGeneratorKey: o.TokenKey,
			ConnContext: qg.connContext, VerifySourceAddress: qg.verifySourceAddress}
		s.h3 = &http3.Server{
			Handler: g.headerSizeGuard(g.optionsStar(g.sniGuard(o.ClientAuth, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s.h3Active.Add(1)
				defer s.h3Active.Add(-1)
				if qc := quicConnOf(r.Context()); qc != nil {
					qc.begin()
					defer qc.end()
				}
				g.serveHTTP3(w, r)
			}))), o.MaxHeaderBytes),
			TLSConfig:      h3conf,
			QUICConfig:     qconf,
			MaxHeaderBytes: 2 * o.MaxHeaderBytes, // see headerSizeGuard
			ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
				return s.h3CutConn(qg.h3ConnContext(ctx, c))
			},
			Logger: g.log,
		}
		qln, err := s.qtr.ListenEarly(h3conf, qconf)
		if err != nil {
			udp.Close()
			tcp.Close()
			return nil, err
		}
		s.qln = qln
		s.confs = append(s.confs, h3conf)
		s.altSvc = `h3=":` + strconv.Itoa(port) + `"; ma=86400`
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Alt-Svc"] = []string{s.altSvc}
			g.ServeHTTP(w, r)
		})
	}
	s.srv = g.newHTTPServer(o.ListenerOptions, g.sniGuard(o.ClientAuth, handler), s.ln)
	if len(o.ClientAuth) == 0 {
		// The span lane (h1lane.go) does what handler does; sniGuard
		// has nothing to guard without client-certificate policies.
		s.srv.lane = &tlsLane{g: g, altSvc: s.altSvc}
	}
	return s, nil
}

// sniGuard answers 421 Misdirected Request (RFC 9110 15.5.20) to a request
// whose host has another client-certificate policy than the name its TLS
// connection was made for (SNI): otherwise a connection made for a host
// that asks for no certificate, or made with no name at all, could carry
// requests to a host that requires one (Caddy turns strict SNI-Host
// matching on with client authentication for the same reason). A client
// that reused a connection for another host opens one for it.
func (g *Gateway) sniGuard(policies []ClientAuthPolicy, next http.Handler) http.Handler {
	if len(policies) == 0 {
		return next
	}
	policyOf := func(name string) int { return clientAuthPolicyFor(policies, name) }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st := tlsState(r); st != nil { // HTTP/2 requests carry none in r.TLS (handed over)
			host := normalizeHost(r.Host)
			if policyOf(host) != policyOf(st.ServerName) {
				sni := st.ServerName
				if sni == "" {
					sni = "no name"
				}
				g.answerLocal(w, r, http.StatusMisdirectedRequest, "the request is for "+host+", but its TLS connection was made for "+sni+
					", whose client-certificate policy differs: connect with "+host+" as the TLS server name (SNI)")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// SetSessionTicketKeys installs TLS session ticket keys on both transports
// (the first encrypts, all decrypt), so that a client resumes its session on
// any node holding the same keys. Safe to call while serving.
func (s *TLSServer) SetSessionTicketKeys(keys [][32]byte) {
	for _, c := range s.confs {
		c.SetSessionTicketKeys(keys)
	}
}

// serveHTTP3 refuses unsafe requests sent in 0-RTT early data, which an
// attacker could replay, and serves the rest like any other request, those
// in early data marked so for the upstream.
func (g *Gateway) serveHTTP3(w http.ResponseWriter, r *http.Request) {
	if r.TLS != nil && !r.TLS.HandshakeComplete {
		if !safeMethod(r.Method) {
			x := &exchange{start: monoNow(), reqID: newID(), host: normalizeHost(r.Host)}
			g.fail(w, r, x, &proxyError{status: http.StatusTooEarly, title: "Too Early", detail: r.Method + " requests are not accepted in TLS early data; retry after the handshake"})
			g.finish(r, x)
			return
		}
		// RFC 8470 5.1: a request forwarded before the handshake with
		// its client completed carries Early-Data: 1, so that an origin
		// to which even a GET may not be replayed can answer 425.
		r.Header.Set("Early-Data", "1")
	}
	g.ServeHTTP(w, r)
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions || m == http.MethodTrace
}

// Addr is the bound TCP address (the UDP port has the same number).
func (s *TLSServer) Addr() net.Addr { return s.ln.Addr() }

// Serve answers on TCP and, if enabled, QUIC until Shutdown.
func (s *TLSServer) Serve() error {
	errc := make(chan error, 2)
	if s.h3 != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.h3.ServeListener(s.qln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	s.wg.Wait()
	select {
	case e := <-errc:
		if err == nil {
			err = e
		}
	default:
	}
	return err
}

// Shutdown drains both transports: no new connections; in-flight requests
// (HTTP/3 ones after a GOAWAY) finish until ctx ends.
func (s *TLSServer) Shutdown(ctx context.Context) error {
	var h3err error
	var wg sync.WaitGroup
	if s.h3 != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Stop accepting, then let the connections drain (GOAWAY).
			// quic-go waits for the clients to close them; once no
			// request is left, those still open are idle, and a client
			// that vanished would hold the drain until the QUIC idle
			// timeout: they are closed after a moment instead. The
			// server stops accepting (a listener given to it, it leaves
			// open), and the listener stays open until the end, so
			// that new clients are refused (a closed one drops their
			// packets, and they wait out their handshake timeout).
			s.quic.draining.Store(true)
			// Not derived from ctx: at its deadline the requests left
			// are marked the drain's cut (logged drain_timeout) before
			// quic-go closes their connections.
			hctx, hcancel := context.WithCancel(context.Background())
			go s.cancelWhenH3Idle(hctx, hcancel)
			stop := context.AfterFunc(ctx, func() {
				s.g.cut.Store(true)
				// The requests left are cancelled, so that one still
				// waiting for its upstream is answered (a 503, as over
				// HTTP/1 and HTTP/2); the connections close once no
				// request has run for h3IdleGrace (cancelWhenH3Idle),
				// their answers sent, or, for requests that do not end,
				// after cutGrace more.
				s.h3Cut()
				select {
				case <-hctx.Done():
				case <-time.After(cutGrace + h3IdleGrace):
				}
				hcancel()
			})
			h3err = s.h3.Shutdown(hctx)
			stop()
			hcancel()
			if errors.Is(h3err, context.Canceled) {
				h3err = ctx.Err() // nil: only idle connections were closed
			}
			s.qln.Close()
			s.qtr.Close()
			s.udp.Close()
		}()
	}
	err := s.srv.Shutdown(ctx)
	s.ln.Close() // in case Serve never ran
	wg.Wait()
	if err == nil {
		err = h3err
	}
	return err
}

// h3CutConn returns an HTTP/3 connection's context (ctx, the parent of
// its requests' contexts) made to end at the drain's cut too. quic-go's
// request is not copied to change its context: quic-go sets the trailers
// on the request it made, which a copy would not see.
func (s *TLSServer) h3CutConn(ctx context.Context) context.Context {
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.h3CutCtx, cancel)
	context.AfterFunc(cctx, func() { stop() }) // the connection ended: nothing to cut
	return cctx
}

// h3IdleGrace is how long a draining HTTP/3 listener with no request left
// lets clients close their connections after the GOAWAY before it closes
// them.
const h3IdleGrace = 200 * time.Millisecond

// cancelWhenH3Idle calls cancel once no HTTP/3 request has been in flight
// for h3IdleGrace, or returns when ctx ends.
func (s *TLSServer) cancelWhenH3Idle(ctx context.Context, cancel context.CancelFunc) {
	t := time.NewTicker(h3IdleGrace / 4)
	defer t.Stop()
	var idleSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			switch {
			case s.h3Active.Load() > 0:
				idleSince = time.Time{}
			case idleSince.IsZero():
				idleSince = now
			case now.Sub(idleSince) >= h3IdleGrace:
				cancel()
				return
			}
		}
	}
}

// countHandshakes counts completed handshakes by transport, ALPN and TLS
// version.
func (g *Gateway) countHandshakes(c *tls.Config, transport string) *tls.Config {
	prev := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		g.countHandshake(transport, cs)
		return nil
	}
	return c
}

// countHandshake counts one completed handshake.
func (g *Gateway) countHandshake(transport string, cs tls.ConnectionState) {
	alpn := cs.NegotiatedProtocol
	if alpn == "" {
		alpn = "none"
	}
	g.metrics.handshakes.WithLabelValues(transport, alpn, tls.VersionName(cs.Version)).Inc()
}

// RedirectHandler is the plain-HTTP listener's handler when HTTPS is on:
// requests for routes that allow plain HTTP are served; everything else is
// redirected to HTTPS with 308, keeping path and query. httpsPort 443 is
// left out of the URL.
func (g *Gateway) RedirectHandler(httpsPort int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := g.snap.Load(); s != nil {
			path := removeDotSegments(r.URL.Path)
			if path == "" {
				path = "/"
			}
			mr := r
			if s.table.ReadsHeaders() {
				peer, _ := clientAddr(r.RemoteAddr)
				mr = routeView(r, g.trustedPeer(peer))
			}
			if m, ok := s.table.Match(mr, normalizeHost(r.Host), path); ok && m.Route.Value.(*route).allowPlainHTTP {
				g.ServeHTTP(w, r)
				return
			}
		}
		if r.Method == http.MethodConnect || !validHost(r.Host) || strings.IndexByte(r.RequestURI, '#') >= 0 || strings.IndexByte(r.URL.Path, 0) >= 0 ||
			r.ProtoMajor >= 2 && !validPseudoPath(r.Method, r.RequestURI) {
			// Refused there as on any port: CONNECT (501), a malformed
			// Host, a fragment, an encoded NUL, an h2c :path that is not
			// an absolute path or holds a space (400); none is a place
			// to redirect to.
			g.ServeHTTP(w, r)
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/") {
			// "GET *" and the like: nothing to redirect to.
			g.answerLocal(w, r, http.StatusBadRequest, "the request target must be an absolute path\n")
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			g.answerLocal(w, r, http.StatusBadRequest, "a Host header is needed to redirect to HTTPS\n")
			return
		}
		if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
			host = "[" + host + "]"
		}
		target := "https://" + host
		if httpsPort != 443 {
			target += ":" + strconv.Itoa(httpsPort)
		}
		target += r.URL.RequestURI()
		w.Header().Set("Location", target)
		g.answerLocal(w, r, http.StatusPermanentRedirect, "Use HTTPS: "+target+"\n")
	})
}

// answerLocal writes a plain-text answer the gateway makes itself, outside
// any route (the HTTPS redirect and its refusals), and logs and counts it
// as it does proxied requests: an access log line with its request id and
// no route, and the request metrics under route "".
func (g *Gateway) answerLocal(w http.ResponseWriter, r *http.Request, status int, body string) {
	c := calls.Get().(*call)
	defer c.release() // after finish
	x := &c.x
	x.identify(r)
	g.identifyClient(x, r)
	x.status = status
	if status >= 400 {
		// Refusals are problems, as everywhere else.
		g.fail(w, r, x, &proxyError{status: status, title: http.StatusText(status), detail: strings.TrimSuffix(body, "\n")})
		g.finish(r, x)
		return
	}
	if isGRPC(r) {
		// A gRPC client cannot follow a redirect or show a text body:
		// it gets the reason as a gRPC status (Unavailable for the
		// redirect, which is what it would see dialing a TLS-only port).
		writeGRPCStatus(w, &proxyError{status: status, title: http.StatusText(status), detail: strings.TrimSuffix(body, "\n")})
		g.finish(r, x)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		n, _ := io.WriteString(w, body)
		x.bytesOut = int64(n)
	}
	g.finish(r, x)
}

// clientCertHeader formats a verified client certificate as an
// X-Forwarded-Client-Cert element (the format Envoy uses): the SHA-256 of
// the certificate, its subject and its URI and DNS SANs.
func clientCertHeader(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	var b strings.Builder
	b.WriteString("Hash=")
	b.WriteString(hex.EncodeToString(sum[:]))
	b.WriteString(";Subject=")
	writeXFCCValue(&b, cert.Subject.String(), true)
	for _, u := range cert.URIs {
		b.WriteString(";URI=")
		writeXFCCValue(&b, u.String(), false)
	}
	for _, d := range cert.DNSNames {
		b.WriteString(";DNS=")
		writeXFCCValue(&b, d, false)
	}
	return b.String()
}

// writeXFCCValue writes an X-Forwarded-Client-Cert value as Envoy's format
// has it: double-quoted when it holds ',', ';', '=' or '"' (always, if
// quote), with '"' and '\\' escaped by a backslash, so that no certificate
// field (a Subject with a quote, a URI SAN with ";URI=") can end its value
// early and add an element of its own. Control bytes, which no field line
// may carry, become '?'.
func writeXFCCValue(b *strings.Builder, v string, quote bool) {
	if !quote && !strings.ContainsAny(v, ",;=\"\\ ") {
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 0x20 || c == 0x7f {
				quote = true
				break
			}
		}
		if !quote {
			b.WriteString(v)
			return
		}
	}
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

type clientCertKey struct{}

// ClientCertificate returns the verified client certificate of a request
// made over mutual TLS, or nil. Policies (authentication) use it.
func ClientCertificate(r *http.Request) *x509.Certificate {
	c, _ := r.Context().Value(clientCertKey{}).(*x509.Certificate)
	return c
}
