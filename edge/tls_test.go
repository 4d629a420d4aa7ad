package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// selfSigned makes a certificate for localhost and 127.0.0.1 and a pool
// that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

type tlsGateway struct {
	g     *Gateway
	srv   *TLSServer
	addr  string
	pool  *x509.CertPool
	certs []*x509.Certificate
}

func startTLSGateway(t *testing.T, yaml string, h3 bool) *tlsGateway {
	t.Helper()
	return startTLSGatewayWith(t, gatewaySetup{}, yaml, h3)
}

func startTLSGatewayWith(t *testing.T, setup gatewaySetup, yaml string, h3 bool) *tlsGateway {
	t.Helper()
	cert, pool := selfSigned(t)
	g := New(setup.opts)
	g.Swap(compileDoc(t, g, yaml, 1, nil))
	lo := setup.listener
	lo.Addr = "127.0.0.1:0"
	srv, err := g.ListenTLS(TLSListenerOptions{
		ListenerOptions: lo,
		TLSConfig:       &tls.Config{Certificates: []tls.Certificate{cert}},
		HTTP3:           h3,
		QUICConfig:      setup.quic,
	})
	if err != nil {
		t.Fatalf("ListenTLS: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		g.Close()
	})
	return &tlsGateway{g: g, srv: srv, addr: srv.Addr().String(), pool: pool, certs: []*x509.Certificate{cert.Leaf}}
}

func (tg *tlsGateway) client(t *testing.T, proto string) *http.Client {
	t.Helper()
	tc := &tls.Config{RootCAs: tg.pool, ServerName: "localhost"}
	var rt http.RoundTripper
	switch proto {
	case "h1":
		tr := &http.Transport{TLSClientConfig: tc}
		var p http.Protocols
		p.SetHTTP1(true)
		tr.Protocols = &p
		rt = tr
	case "h2":
		tr := &http.Transport{TLSClientConfig: tc}
		var p http.Protocols
		p.SetHTTP2(true)
		tr.Protocols = &p
		rt = tr
	case "h3":
		rt = &http3.Transport{TLSClientConfig: tc}
	}
	t.Cleanup(func() {
		if c, ok := rt.(io.Closer); ok {
			c.Close()
		}
		if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	})
	return &http.Client{Transport: rt, Timeout: 20 * time.Second}
}

func TestTLSListenerServesH1H2H3(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "path=%s fwd=%s xfp=%s", r.URL.Path, r.Header.Get("Forwarded"), r.Header.Get("X-Forwarded-Proto"))
	})
	tg := startTLSGateway(t, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes: [{name: r, match: {path_prefix: /api}, service: be}]
`, be.URL), true)
	for _, proto := range []string{"h1", "h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			c := tg.client(t, proto)
			resp, err := c.Get("https://localhost:" + portOf(tg.addr) + "/api/x")
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantMajor := map[string]int{"h1": 1, "h2": 2, "h3": 3}[proto]
			if resp.StatusCode != 200 || resp.ProtoMajor != wantMajor {
				t.Fatalf("got %d over HTTP/%d; want 200 over HTTP/%d", resp.StatusCode, resp.ProtoMajor, wantMajor)
			}
			if !strings.Contains(string(body), "path=/api/x") || !strings.Contains(string(body), "proto=https") || !strings.Contains(string(body), "xfp=https") {
				t.Errorf("backend saw %q; want the path and proto https", body)
			}
			if proto != "h3" {
				if got, want := resp.Header.Get("Alt-Svc"), `h3=":`+portOf(tg.addr)+`"; ma=86400`; got != want {
					t.Errorf("Alt-Svc: got %q; want %q", got, want)
				}
			}
		})
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// HTTP/3: streaming, a large body both ways, and many concurrent streams on
// one connection.
func TestHTTP3StreamingLargeAndConcurrent(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				<-streamGate
			}
		default:
			io.WriteString(w, r.URL.Path)
		}
	})
	tg := startTLSGateway(t, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes: [{name: r, service: be, limits: {max_request_body: 64MiB}}]
`, be.URL), true)
	c := tg.client(t, "h3")
	base := "https://localhost:" + portOf(tg.addr)

	// Large upload, checked by hash.
	payload := make([]byte, 16<<20)
	rand.Read(payload)
	sum := sha256.Sum256(payload)
	resp, err := c.Post(base+"/echo", "application/octet-stream", strings.NewReader(string(payload)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d %x", len(payload), sum); string(b) != want {
		t.Fatalf("echo over h3: got %q; want %q", b, want)
	}

	// Streaming: each event arrives before the backend sends the next.
	resp, err = c.Get(base + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", i) {
			t.Fatalf("event %d: got %q %v", i, line, err)
		}
		br.ReadString('\n')
		streamGate <- struct{}{}
	}
	resp.Body.Close()

	// Concurrent streams.
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(fmt.Sprintf("%s/n/%d", base, i))
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != fmt.Sprintf("/n/%d", i) {
				errs <- fmt.Errorf("stream %d got %q", i, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

var streamGate = make(chan struct{})

// The request smuggling guard works behind TLS too.
func TestTLSSmugglingRefused(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tg := startTLSGateway(t, fmt.Sprintf("services: [{name: be, targets: [{url: %q}]}]\nroutes: [{name: r, service: be}]\n", be.URL), false)
	conn, err := tls.Dial("tcp", tg.addr, &tls.Config{RootCAs: tg.pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\nPOST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	br := bufio.NewReader(conn)
	r1, err := http.ReadResponse(br, nil)
	if err != nil || r1.StatusCode != 200 {
		t.Fatalf("first request: %v %v", r1, err)
	}
	io.Copy(io.Discard, r1.Body)
	r2, err := http.ReadResponse(br, nil)
	if err != nil || r2.StatusCode != 400 {
		t.Fatalf("smuggling request over TLS: got %v %v; want 400", r2, err)
	}
	io.Copy(io.Discard, r2.Body)
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("connection still open after the 400; want it closed")
	}
}

// The plain listener redirects to HTTPS with 308, keeping path and query,
// except for routes that allow plain HTTP.
// startRedirectPort serves g's plain-port handler of a node with HTTPS on
// (which redirects to port 8443) on a loopback listener, until the test
// ends.
func startRedirectPort(t *testing.T, g *Gateway) *Server {
	t.Helper()
	srv, err := g.Listen(ListenerOptions{Addr: "127.0.0.1:0", Handler: g.RedirectHandler(8443)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}

func TestRedirectHandler(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain ok") })
	var logBuf syncBuffer
	g := New(Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))})
	g.Swap(compileDoc(t, g, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes:
  - {name: secure, match: {path_prefix: /}, service: be}
  - {name: open, match: {path_prefix: /public}, service: be, allow_plain_http: true}
`, be.URL), 1, nil))
	defer g.Close()
	srv := startRedirectPort(t, g)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.Addr().String()+"/a/b?x=1&y=2", nil)
	req.Header.Set("X-Request-Id", "redirect-1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://127.0.0.1:8443/a/b?x=1&y=2" {
		t.Fatalf("got %d Location %q; want 308 https://127.0.0.1:8443/a/b?x=1&y=2", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The redirect is logged and counted like any request, without a route.
	var recs map[string]map[string]any
	waitFor(t, 5*time.Second, "the redirect's access log record", func() bool {
		recs = logBuf.records(t)
		return recs["redirect-1"] != nil
	})
	if rec := recs["redirect-1"]; rec["status"] != float64(308) || rec["route"] != "" || rec["path"] != "/a/b" || rec["bytes_out"] != float64(len(body)) {
		t.Errorf("access log record of the redirect: %v", rec)
	}
	if v := metricValue(t, g, `meridian_requests_total{code="3xx",method="GET",route=""}`); v != 1 {
		t.Errorf("redirects counted in meridian_requests_total: %v; want 1", v)
	}
	// A target that is not a path cannot be redirected.
	conn, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "GET * HTTP/1.1\r\nHost: x\r\n\r\n")
	star, err := http.ReadResponse(bufio.NewReader(conn), nil)
	conn.Close()
	if err != nil || star.StatusCode != http.StatusBadRequest || star.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("GET *: got %v %v; want a 400 problem", star, err)
	}
	// CONNECT is refused as on any port: 501, not a redirect or a 400.
	conn, err = net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	cr, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	conn.Close()
	if err != nil || cr.StatusCode != http.StatusNotImplemented || !cr.Close {
		t.Fatalf("CONNECT: got %v %v; want 501 and the connection closed", cr, err)
	}
	// What ServeHTTP would refuse is refused here too, not redirected:
	// a malformed authority, a fragment (over h2c, where the HTTP/1
	// parser is not in the way for the authority).
	h2 := newH2CClient(t)
	for _, tc := range []struct{ host, target string }{{"a:1:80", "/zzz"}, {"x..example.com", "/zzz"}, {"ok.example", "/zzz#frag"}} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+srv.Addr().String()+"/", nil)
		req.Host = tc.host
		req.URL.Opaque = tc.target // sent as written, # included
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("h2c %s %s on the redirecting port: %d, Location %q; want 400", tc.host, tc.target, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	resp, err = c.Get("http://" + srv.Addr().String() + "/public/z")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "plain ok" {
		t.Fatalf("allow_plain_http route: got %d %q; want 200 plain ok", resp.StatusCode, b)
	}
}

// Mutual TLS on a host: without a certificate the handshake fails; with one
// the backend gets the verified identity, and a forged header is dropped.
func TestClientAuthForwardsIdentity(t *testing.T) {
	certFile, keyFile, clientCert := writeClientCert(t, t.TempDir())
	port, roots := startClientAuthGateway(t, clientCert, false, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-Client-Cert"))
	})
	url := "https://localhost:" + port + "/"

	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer noCert.CloseIdleConnections()
	if resp, err := noCert.Get(url); err == nil {
		resp.Body.Close()
		t.Fatalf("request without a client certificate: got %d; want a failed handshake", resp.StatusCode)
	}

	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}}}}
	defer withCert.CloseIdleConnections()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Forwarded-Client-Cert", "Hash=forged")
	resp, err := withCert.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256(clientCert.Raw)
	want := fmt.Sprintf("Hash=%x;Subject=\"CN=meridian-gateway\"", sum)
	if string(b) != want {
		t.Fatalf("backend saw X-Forwarded-Client-Cert %q; want %q", b, want)
	}
	// Over HTTP/1.1 with nothing forged: a request the lean path would
	// take (h1lean.go) gets the identity too.
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	defer h1.CloseIdleConnections()
	resp, err = h1.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 1 || string(b) != want {
		t.Fatalf("HTTP/%d: backend saw X-Forwarded-Client-Cert %q; want %q", resp.ProtoMajor, b, want)
	}
}

// Two nodes with the same session ticket keys: a client that got its ticket
// from one resumes on the other; with different keys it cannot.
func TestSessionTicketKeysShared(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	doc := fmt.Sprintf("services: [{name: be, targets: [{url: %q}]}]\nroutes: [{name: r, service: be}]\n", be.URL)
	a := startTLSGateway(t, doc, false)
	b := startTLSGateway(t, doc, false)
	roots := x509.NewCertPool()
	for _, tg := range []*tlsGateway{a, b} {
		for _, c := range tg.certs {
			roots.AddCert(c)
		}
	}
	// get makes one request on a new connection and reports whether the
	// TLS session was resumed.
	get := func(tg *tlsGateway, cache tls.ClientSessionCache) bool {
		t.Helper()
		c, err := tls.Dial("tcp", tg.addr, &tls.Config{ServerName: "localhost", ClientSessionCache: cache, RootCAs: roots, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
		if b, _ := io.ReadAll(c); !strings.Contains(string(b), "ok") { // reading takes in the ticket too
			t.Fatalf("response %q", b)
		}
		return c.ConnectionState().DidResume
	}

	a.srv.SetSessionTicketKeys([][32]byte{{1}, {2}})
	b.srv.SetSessionTicketKeys([][32]byte{{3}})
	cache := tls.NewLRUClientSessionCache(4)
	get(a, cache)
	if get(b, cache) {
		t.Fatal("resumed on a node with other ticket keys")
	}

	b.srv.SetSessionTicketKeys([][32]byte{{1}, {2}})
	cache = tls.NewLRUClientSessionCache(4)
	if get(a, cache) {
		t.Fatal("first connection cannot be resumed")
	}
	if !get(b, cache) {
		t.Fatal("session from node A not resumed on node B with the same ticket keys")
	}
}

// A request without a body reaches an HTTP/1.1 upstream without one, over
// every client protocol: HTTP/2 and HTTP/3 servers give each request a
// Body even when its headers ended the stream, and forwarding that as is
// would send an empty chunked body with every GET. Requests that do carry
// a body (of known or unknown length, a GET's included) still send it.
func TestBodilessRequestsStayBodilessUpstream(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "te=%v cl=%d body=%q", r.TransferEncoding, r.ContentLength, b)
	})
	tg := startTLSGateway(t, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes: [{name: r, service: be}]
`, be.URL), true)
	url := "https://localhost:" + portOf(tg.addr) + "/x"
	for _, proto := range []string{"h1", "h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			c := tg.client(t, proto)
			for _, tc := range []struct {
				name, method string
				body         func() io.Reader
				want         []string // any of
			}{
				{"GET", http.MethodGet, nil, []string{`te=[] cl=0 body=""`}},
				{"DELETE", http.MethodDelete, nil, []string{`te=[] cl=0 body=""`}},
				{"POST empty", http.MethodPost, func() io.Reader { return strings.NewReader("") }, []string{`te=[] cl=0 body=""`}},
				{"POST", http.MethodPost, func() io.Reader { return strings.NewReader("abc") }, []string{`te=[] cl=3 body="abc"`}},
				// A reader of unknown length: streamed (chunked), or sized
				// where the client sends it at once.
				{"POST streamed", http.MethodPost, func() io.Reader { return io.MultiReader(strings.NewReader("ab"), strings.NewReader("c")) },
					[]string{`te=[chunked] cl=-1 body="abc"`, `te=[] cl=3 body="abc"`}},
				{"GET with a body", http.MethodGet, func() io.Reader { return io.MultiReader(strings.NewReader("q")) },
					[]string{`te=[chunked] cl=-1 body="q"`, `te=[] cl=1 body="q"`}},
			} {
				var body io.Reader
				if tc.body != nil {
					body = tc.body()
				}
				req, _ := http.NewRequest(tc.method, url, body)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !slices.Contains(tc.want, string(got)) {
					t.Errorf("%s over %s: upstream saw %s; want %q", tc.name, proto, got, tc.want)
				}
			}
		})
	}
}

// probeBody tells an empty body from one with content, keeps the probed
// byte, and streams a body that does not answer within the wait.
func TestProbeBody(t *testing.T) {
	if b := probeBody(io.NopCloser(strings.NewReader("")), time.Second); b != nil {
		t.Errorf("empty body probed as %T; want nil", b)
	}
	b := probeBody(io.NopCloser(strings.NewReader("hello")), time.Second)
	if got, err := io.ReadAll(b); err != nil || string(got) != "hello" {
		t.Errorf("probed body reads %q, %v; want hello", got, err)
	}
	pr, pw := io.Pipe()
	b = probeBody(pr, 10*time.Millisecond) // nothing comes in time: streamed
	if b == nil {
		t.Fatal("a slow body was dropped")
	}
	go func() {
		time.Sleep(30 * time.Millisecond)
		pw.Write([]byte("late"))
		pw.Close()
	}()
	if got, err := io.ReadAll(b); err != nil || string(got) != "late" {
		t.Errorf("slow body reads %q, %v; want late", got, err)
	}
	pr, pw = io.Pipe()
	pw.CloseWithError(errors.New("client gone"))
	b = probeBody(pr, time.Second)
	if _, err := io.ReadAll(b); err == nil || err.Error() != "client gone" {
		t.Errorf("failing body: %v; want the client's error", err)
	}
}

// trailerAtEOF is a request body that sets its request's trailer once the
// body has been read, as a client computing a checksum would.
type trailerAtEOF struct {
	r   io.Reader
	req *http.Request
}

func (b *trailerAtEOF) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.req.Trailer.Set("X-Req-Trail", "sum-42")
	}
	return n, err
}

// Request trailers reach the upstream from every protocol (quic-go hands
// HTTP/3 trailers over in a new map), and an error that closes an HTTP/1
// connection carries no Connection field over HTTP/2 and HTTP/3, where
// there is none (HTTP/3 clients refuse the answer otherwise, and net/http
// would end every stream of the HTTP/2 connection).
func TestTLSRequestTrailersAndErrorsPerProtocol(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d trailer=%q", n, r.Trailer.Get("X-Req-Trail"))
	})
	tg := startTLSGateway(t, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes:
  - {name: r, match: {path_prefix: /}, service: be}
  - {name: small, match: {path_prefix: /small}, service: be, limits: {max_request_body: 1KiB}}
`, be.URL), true)
	for _, proto := range []string{"h1", "h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			c := tg.client(t, proto)
			base := "https://localhost:" + portOf(tg.addr)
			req, _ := http.NewRequest(http.MethodPost, base+"/trail", nil)
			req.Body = io.NopCloser(&trailerAtEOF{r: strings.NewReader(strings.Repeat("x", 5000)), req: req})
			req.ContentLength = -1
			req.Trailer = http.Header{"X-Req-Trail": nil}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("POST with a trailer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := `5000 trailer="sum-42"`; resp.StatusCode != 200 || string(body) != want {
				t.Errorf("POST with a trailer: %d %q; want 200 %q", resp.StatusCode, body, want)
			}

			resp, err = c.Post(base+"/small", "text/plain", strings.NewReader(strings.Repeat("x", 2000)))
			if err != nil {
				t.Fatalf("POST over the limit: %v", err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("POST over the limit: %d %q %s; want a 413 problem", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if proto == "h1" && !resp.Close {
				t.Error("HTTP/1.1 413 leaves the connection open; want it closed (the rest of the body is not read)")
			}
			if proto != "h1" && resp.Header.Get("Connection") != "" {
				t.Errorf("Connection: %q over %s; want none", resp.Header.Get("Connection"), proto)
			}
		})
	}
}

// A response the upstream sent without a Content-Type reaches the client
// without one over every protocol: net/http's HTTP/2 server and quic-go
// would otherwise guess one from the body, and an upload served untyped
// (with nosniff) would become HTML in the browser.
func TestNoContentTypeGuessedPerProtocol(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/typed" {
			w.Header().Set("Content-Type", "text/plain")
		} else {
			w.Header()["Content-Type"] = nil // no type, and no guess by net/http here either
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		io.WriteString(w, "<html><script>alert(1)</script></html>")
	})
	// The route removing the upstream's type must not let a guess in.
	tg := startTLSGateway(t, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes:
  - {name: r, match: {path_prefix: /}, service: be}
  - {name: untyped, match: {path_prefix: /typed}, service: be, response_headers: {remove: [Content-Type]}}
`, be.URL), true)
	for _, proto := range []string{"h1", "h2", "h3"} {
		for _, path := range []string{"/upload", "/typed"} {
			t.Run(proto+path, func(t *testing.T) {
				resp, err := tg.client(t, proto).Get("https://localhost:" + portOf(tg.addr) + path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(string(body), "<script>") {
					t.Fatalf("got %d %q; want the upstream's 200 and body", resp.StatusCode, body)
				}
				if ct, ok := resp.Header["Content-Type"]; ok {
					t.Errorf("Content-Type %q over %s; want none, as the upstream sent or the route left", ct, proto)
				}
			})
		}
	}
}

// A drain does not wait for an HTTP/3 client that vanished after its
// request (its connection would stay open until the QUIC idle timeout):
// once no request is left, connections still open are closed.
func TestDrainClosesIdleHTTP3ConnectionOfVanishedClient(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tg := startTLSGatewayWith(t, gatewaySetup{listener: ListenerOptions{IdleTimeout: time.Minute}}, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes: [{name: r, match: {path_prefix: /}, service: be}]
`, be.URL), true)
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	qtr := &quic.Transport{Conn: udp}
	rt := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: tg.pool, ServerName: "localhost"},
		Dial: func(ctx context.Context, addr string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			ua, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				return nil, err
			}
			return qtr.DialEarly(ctx, ua, tc, qc)
		},
	}
	resp, err := (&http.Client{Transport: rt, Timeout: 10 * time.Second}).Get("https://localhost:" + portOf(tg.addr) + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	udp.Close() // gone without a CONNECTION_CLOSE, as a phone that lost its network

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := tg.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v; want nil: no request was in flight", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v; want about the idle grace (%v), not the QUIC idle timeout", d, h3IdleGrace)
	}
}

// Over HTTP/2 and HTTP/3, header fields over the limit get the gateway's
// 431 problem and an access-log line, as over HTTP/1.1, not the page of
// net/http or quic-go.
func TestHeaderSizeLimitOverHTTP2AndHTTP3(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	var logBuf syncBuffer
	tg := startTLSGatewayWith(t, gatewaySetup{
		opts:     Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))},
		listener: ListenerOptions{MaxHeaderBytes: 8 << 10},
	}, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes: [{name: r, match: {path_prefix: /}, service: be}]
`, be.URL), true)
	for _, proto := range []string{"h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "https://localhost:"+portOf(tg.addr)+"/big-"+proto, nil)
			req.Header.Set("X-Big", strings.Repeat("a", 10<<10))
			resp, err := tg.client(t, proto).Do(req)
			if err != nil {
				t.Fatalf("GET with 10 KiB of header: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("GET with 10 KiB of header: %d %q %s; want a 431 problem", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			waitFor(t, 5*time.Second, "the refusal's log line", func() bool {
				for _, rec := range logBuf.records(t) {
					if rec["path"] == "/big-"+proto && rec["status"] == float64(431) && rec["error"] == "http_request_error" {
						return true
					}
				}
				return false
			})
			// The path counts as much as a field does.
			resp, err = tg.client(t, proto).Get("https://localhost:" + portOf(tg.addr) + "/" + strings.Repeat("p", 10<<10))
			if err != nil {
				t.Fatalf("GET of a 10 KiB path: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("GET of a 10 KiB path over %s: %d; want 431", proto, resp.StatusCode)
			}
		})
	}
}

// OPTIONS * asks about the server, not a resource: over HTTP/2 and HTTP/3
// too it is answered by the gateway itself, 200 with no body, logged and
// counted like over HTTP/1.1 (TestH1ServerOptionsStar), never routed.
func TestOptionsStarOverH2AndH3(t *testing.T) {
	var hits hitCounter
	var logBuf syncBuffer
	setup := gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}}
	tg := startTLSGatewayWith(t, setup, oneRoute(countingBackend(t, &hits), ""), true)
	gw := startGatewayWith(t, setup, oneRoute(countingBackend(t, &hits), ""))
	for _, tc := range []struct {
		name, addr string
		client     *http.Client
	}{
		{"h2c", gw.addr, newH2CClient(t)},
		{"h2", tg.addr, tg.client(t, "h2")},
		{"h3", tg.addr, tg.client(t, "h3")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scheme := "https"
			if tc.name == "h2c" {
				scheme = "http"
			}
			req := &http.Request{Method: http.MethodOptions, URL: &url.URL{Scheme: scheme, Host: tc.addr, Opaque: "*"}, Host: "localhost", Header: http.Header{"X-Request-Id": {"star-" + tc.name}}}
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || len(body) != 0 {
				t.Errorf("OPTIONS *: %d %q; want 200 and no body", resp.StatusCode, body)
			}
			waitFor(t, 5*time.Second, "the access log record", func() bool { return logBuf.records(t)["star-"+tc.name] != nil })
			if rec := logBuf.records(t)["star-"+tc.name]; rec["path"] != "*" || rec["status"] != float64(200) || rec["route"] != "" {
				t.Errorf("OPTIONS * record: %v", rec)
			}
		})
	}
	if n := hits.get(); n != 0 {
		t.Errorf("backend hits after OPTIONS * = %d; want 0", n)
	}
}

// A client's trailers reach the upstream only as its head announced them,
// over every protocol: not a field it did not announce, nor one a trailer
// cannot carry or the gateway writes itself (forged forwarding fields, a
// credential), nor more values than the head may have.
func TestRequestTrailersFilteredPerProtocol(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		var names []string
		for k, v := range r.Trailer {
			if len(v) > 0 {
				names = append(names, fmt.Sprintf("%s=%d", k, len(v)))
			}
		}
		slices.Sort(names)
		fmt.Fprint(w, strings.Join(names, " "))
	})
	tg := startTLSGateway(t, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes:
  - {name: r, match: {path_prefix: /}, service: be}
`, be.URL), true)
	many := make([]string, 101) // the default max_header_count is 100
	for i := range many {
		many[i] = strconv.Itoa(i)
	}
	for _, proto := range []string{"h1", "h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, "https://localhost:"+portOf(tg.addr)+"/trail", nil)
			req.Trailer = http.Header{"X-Sum": nil, "X-Many": nil, "X-Forwarded-For": nil, "X-Real-Ip": nil, "Traceparent": nil}
			if proto != "h2" {
				// (net/http's HTTP/2 server refuses the stream itself)
				req.Trailer["Authorization"] = nil
			}
			req.Body = io.NopCloser(&setAtEOF{r: strings.NewReader("payload"), set: func() {
				req.Trailer.Set("X-Sum", "42")
				req.Trailer["X-Many"] = many
				req.Trailer.Set("X-Forwarded-For", "6.6.6.6")
				req.Trailer.Set("X-Real-Ip", "6.6.6.6")
				if proto != "h2" {
					req.Trailer.Set("Authorization", "Bearer forged")
				}
				req.Trailer.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
				req.Trailer.Set("X-Unannounced", "1") // sent, though not in the head
			}})
			req.ContentLength = -1
			resp, err := tg.client(t, proto).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "X-Sum=1" {
				t.Errorf("trailers the upstream got: %d %q; want only X-Sum=1", resp.StatusCode, body)
			}
		})
	}
}

// setAtEOF is a request body that calls set as it ends (to fill in the
// request's trailers).
type setAtEOF struct {
	r   io.Reader
	set func()
}

func (b *setAtEOF) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && b.set != nil {
		b.set()
		b.set = nil
	}
	return n, err
}

// Requests still running over HTTP/2 and HTTP/3 when a drain's deadline
// passes are logged as the drain's cut (drain_timeout), as HTTP/1 ones
// are, not as their clients leaving.
func TestDrainCutIsLoggedPerProtocol(t *testing.T) {
	entered := make(chan struct{}, 2)
	canceled := make(chan struct{}, 2)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { waitForCancel(r, entered, canceled) })
	var logBuf syncBuffer
	tg := startTLSGatewayWith(t, gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}},
		fmt.Sprintf("services: [{name: be, targets: [{url: %q}]}]\nroutes: [{name: r, match: {path_prefix: /}, service: be}]\n", be.URL), true)
	answers := make(chan string, 2)
	for _, proto := range []string{"h2", "h3"} {
		c := tg.client(t, proto)
		go func() {
			resp, err := c.Get("https://localhost:" + portOf(tg.addr) + "/" + proto)
			if err != nil {
				answers <- proto + ": " + err.Error()
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			answers <- proto + ": " + resp.Status
		}()
		recv(t, entered, "the "+proto+" request to reach the backend")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := tg.srv.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned nil; want the deadline's error (requests were cut)")
	}
	// Still waiting for their upstream, both were answered as an HTTP/1
	// request is (a 503 to retry elsewhere), before their connections
	// closed (logged 503, they had only a GOAWAY).
	for range 2 {
		select {
		case a := <-answers:
			if !strings.HasSuffix(a, "503 Service Unavailable") {
				t.Errorf("%s; want the drain's 503", a)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a client still waits for its answer")
		}
	}
	// Written by the time Shutdown returns: a node closes its access log
	// then (an outside check saw HTTP/2 streams' lines lost).
	if recs := logBuf.records(t); len(recs) != 2 {
		t.Fatalf("%d log records when Shutdown returned; want both requests'", len(recs))
	}
	for _, rec := range logBuf.records(t) {
		if rec["error"] != "drain_timeout" {
			t.Errorf("%v %v: error %v; want drain_timeout", rec["proto"], rec["path"], rec["error"])
		}
	}
}

// A request for a host that requires a client certificate, sent on a TLS
// connection made for another name (or none) with no certificate asked
// for, is answered 421 Misdirected Request, over HTTP/1.1 and HTTP/2: the
// host's mutual TLS cannot be bypassed by the name the handshake used.
func TestClientAuthNotBypassedByAnotherServerName(t *testing.T) {
	_, _, clientCert := writeClientCert(t, t.TempDir())
	port, _ := startClientAuthGateway(t, clientCert, true, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "reached") })
	h3 := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "other.test"}}
	defer h3.Close()
	if resp, err := (&http.Client{Transport: h3}).Get("https://localhost:" + port + "/x"); err != nil {
		t.Fatalf("HTTP/3: %v", err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest || strings.Contains(string(body), "reached") {
			t.Errorf("another name over HTTP/3: %d %q; want 421 and the backend not reached", resp.StatusCode, body)
		}
	}
	for _, tc := range []struct{ name, sni string }{{"another name", "other.test"}, {"no name", ""}} {
		for _, h2 := range []bool{false, true} {
			tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: tc.sni}, ForceAttemptHTTP2: h2}
			if !h2 {
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
			if tc.sni == "" {
				// An address for a name: Go sends no SNI for one.
				tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					conf := tr.TLSClientConfig.Clone()
					if h2 {
						conf.NextProtos = []string{"h2"}
					}
					return tls.Dial(network, "127.0.0.1:"+port, conf)
				}
			}
			req, _ := http.NewRequest(http.MethodGet, "https://localhost:"+port+"/x", nil)
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatalf("%s, h2 %v: %v", tc.name, h2, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			tr.CloseIdleConnections()
			if resp.StatusCode != http.StatusMisdirectedRequest || strings.Contains(string(body), "reached") {
				t.Errorf("%s (proto %s): %d %q; want 421 and the backend not reached", tc.name, resp.Proto, resp.StatusCode, body)
			}
		}
	}
	// A host with no policy, on a connection made for another such name,
	// is served as before.
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "other.test"}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://127.0.0.1:"+port+"/x", nil)
	req.Host = "plain.test"
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "reached" {
		t.Errorf("a host without client auth: %d %q; want 200 reached", resp.StatusCode, body)
	}
}

// startClientAuthGateway serves one route to a backend answering with h,
// over TLS (HTTP/3 too if h3) with a certificate for localhost, whose
// clients must present one signed as clientCert (itself). It returns the
// port and the roots that trust the server; all ends with the test.
func startClientAuthGateway(t *testing.T, clientCert *x509.Certificate, h3 bool, h http.HandlerFunc) (port string, roots *x509.CertPool) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(clientCert)
	be := newBackend(t, h)
	cert, roots := selfSigned(t)
	g := New(Options{})
	g.Swap(compileDoc(t, g, fmt.Sprintf("services: [{name: be, targets: [{url: %q}]}]\nroutes: [{name: r, service: be}]\n", be.URL), 1, nil))
	srv, err := g.ListenTLS(TLSListenerOptions{
		ListenerOptions: ListenerOptions{Addr: "127.0.0.1:0"},
		TLSConfig:       &tls.Config{Certificates: []tls.Certificate{cert}},
		ClientAuth:      []ClientAuthPolicy{{Hosts: []string{"localhost"}, CAs: pool, Required: true}},
		HTTP3:           h3,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		g.Close()
	})
	return portOf(srv.Addr().String()), roots
}

// A connection that chose "h2" by ALPN and then sends something other than
// HTTP/2's preface is closed without a byte in answer (RFC 9113, 3.4), as
// h2spec's 3.5/2 checks; HTTP/2 goes on working for the next one.
func TestTLSBadH2PrefaceClosed(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tg := startTLSGateway(t, fmt.Sprintf("services: [{name: be, targets: [{url: %q}]}]\nroutes: [{name: r, service: be}]\n", be.URL), false)
	for _, junk := range []string{"INVALID CONNECTION PREFACE\r\n\r\n", "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"} {
		conn, err := tls.Dial("tcp", tg.addr, &tls.Config{RootCAs: tg.pool, ServerName: "localhost", NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Fatalf("ALPN chose %q; want h2", p)
		}
		io.WriteString(conn, junk)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(conn)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("after %q: connection still open; want it closed", junk)
		}
		if len(got) > 0 {
			t.Errorf("after %q: got %q; want the connection closed with nothing sent", junk, got)
		}
		conn.Close()
	}
	resp, body := get(t, tg.client(t, "h2"), "https://"+tg.addr+"/")
	if resp.ProtoMajor != 2 || string(body) != "ok" {
		t.Fatalf("after the bad prefaces: %s %q; want HTTP/2 and ok", resp.Proto, body)
	}
}

// The gateway takes frames of up to 16 KiB, the protocol's default, and
// says nothing larger (RFC 9113, 4.2): a HEADERS frame one byte over is a
// connection error FRAME_SIZE_ERROR, on h2c as over TLS.
func TestH2FrameSizeLimit(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	yaml := fmt.Sprintf("services: [{name: be, targets: [{url: %q}]}]\nroutes: [{name: r, service: be}]\n", be.URL)
	tg := startTLSGateway(t, yaml, false)
	gw := startGateway(t, yaml)
	dials := map[string]func() net.Conn{
		"h2c": func() net.Conn { return dialGateway(t, gw.addr) },
		"h2": func() net.Conn {
			c, err := tls.Dial("tcp", tg.addr, &tls.Config{RootCAs: tg.pool, ServerName: "localhost", NextProtos: []string{"h2"}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		},
	}
	for name, dial := range dials {
		t.Run(name, func(t *testing.T) {
			for _, size := range []int{16 << 10, 16<<10 + 1} {
				c := dial()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, http2.ClientPreface)
				fr := http2.NewFramer(c, c)
				fr.WriteSettings()
				block := paddedHeaderBlock(t, size)
				fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1, block)
				var got string
				for got == "" {
					f, err := fr.ReadFrame()
					if err != nil {
						got = "read error: " + err.Error()
						break
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if v, ok := f.Value(http2.SettingMaxFrameSize); ok && v != 16<<10 {
							t.Errorf("SETTINGS_MAX_FRAME_SIZE = %d; want 16384", v)
						}
					case *http2.GoAwayFrame:
						got = "GOAWAY " + f.ErrCode.String()
					case *http2.HeadersFrame:
						got = "HEADERS"
					}
				}
				want := "HEADERS"
				if size > 16<<10 {
					want = "GOAWAY FRAME_SIZE_ERROR"
				}
				if got != want {
					t.Errorf("a %d-byte HEADERS frame: got %s; want %s", size, got, want)
				}
				c.Close()
			}
		})
	}
}

// paddedHeaderBlock is an HPACK block of exactly size bytes: a GET of /
// and an x-pad field long enough to fill it.
func paddedHeaderBlock(t *testing.T, size int) []byte {
	t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "localhost"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	// A literal field without indexing, new name (RFC 7541, 6.2.2): its
	// first byte, the name's length and 5 bytes, then the value's length
	// in 3 bytes (127 and two 7-bit continuation bytes) for values of
	// 255 to 16510 bytes, then the value.
	n := size - hb.Len() - 10
	if n < 255 || n > 16510 {
		t.Fatalf("size %d out of reach", size)
	}
	hb.WriteString("\x00\x05x-pad")
	v := n - 127
	hb.WriteByte(0x7f)
	hb.WriteByte(byte(v&0x7f | 0x80))
	hb.WriteByte(byte(v >> 7))
	hb.WriteString(strings.Repeat("p", n))
	if hb.Len() != size {
		t.Fatalf("block is %d bytes; want %d", hb.Len(), size)
	}
	return hb.Bytes()
}

// A connection that chose h2 by ALPN and has sent nothing (a browser's
// pre-opened connection) holds no request: a drain does not wait for it
// to its deadline.
func TestDrainNotHeldBySilentH2Connection(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	// A header timeout past the drain's deadline: a drain that waited for
	// the connection's first bytes would miss its deadline.
	setup := gatewaySetup{listener: ListenerOptions{ReadHeaderTimeout: time.Minute}}
	tg := startTLSGatewayWith(t, setup, fmt.Sprintf("services: [{name: be, targets: [{url: %q}]}]\nroutes: [{name: r, service: be}]\n", be.URL), false)
	conn, err := tls.Dial("tcp", tg.addr, &tls.Config{RootCAs: tg.pool, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Handed over to the HTTP/2 server, which waits for its preface.
	h1 := tg.srv.srv
	waitFor(t, 5*time.Second, "the connection to reach the HTTP/2 server", func() bool {
		h1.h2mu.Lock()
		defer h1.h2mu.Unlock()
		return len(h1.h2New) == 1
	})
	// Well under the 5 s net/http's Shutdown gives a connection that has
	// sent nothing before it counts as idle.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := tg.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v; want it done before its deadline", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("after the drain: %v; want the connection closed", err)
	}
}

// A request that came in QUIC 0-RTT early data (the handshake with the
// client not complete when it arrived) goes upstream with Early-Data: 1
// (RFC 8470 5.1) if its method is safe, and is answered 425 otherwise; one
// after the handshake goes as it came. Whether a real client's request
// arrives before the handshake completes is a matter of timing, so the
// requests are handed to the HTTP/3 handler as quic-go's server would.
func TestEarlyDataMarkedForTheUpstream(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.inc()
		fmt.Fprintf(w, "early=%q", r.Header.Values("Early-Data"))
	})
	g := New(Options{})
	g.Swap(compileDoc(t, g, oneRoute(be.URL, ""), 1, nil))
	t.Cleanup(g.Close)
	for _, tc := range []struct {
		method   string
		complete bool
		status   int
		body     string
	}{
		{http.MethodGet, false, 200, `early=["1"]`},
		{http.MethodHead, false, 200, ""},
		{http.MethodGet, true, 200, `early=[]`},
		{http.MethodPost, false, http.StatusTooEarly, ""},
		{http.MethodPost, true, 200, `early=[]`},
	} {
		before := hits.get()
		r := httptest.NewRequest(tc.method, "https://localhost/x", nil)
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/3.0", 3, 0
		r.RequestURI = "/x" // :path, as quic-go sets it
		r.TLS = &tls.ConnectionState{HandshakeComplete: tc.complete, Version: tls.VersionTLS13}
		rec := httptest.NewRecorder()
		g.serveHTTP3(rec, r)
		if rec.Code != tc.status || tc.body != "" && rec.Body.String() != tc.body {
			t.Errorf("%s, handshake complete %v: %d %q; want %d %q", tc.method, tc.complete, rec.Code, rec.Body.String(), tc.status, tc.body)
		}
		if tc.status == http.StatusTooEarly && hits.get() != before {
			t.Errorf("%s in early data reached the backend", tc.method)
		}
	}
}

// A plain HTTP request on the TLS port gets a 400 that says to use https
// (as nginx and net/http answer), not a silent close, and is logged.
func TestPlainHTTPOnTLSPort(t *testing.T) {
	var logBuf syncBuffer
	tg := startTLSGatewayWith(t, gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}},
		oneRoute(newBackend(t, func(w http.ResponseWriter, r *http.Request) {}).URL, ""), false)
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("a", 5000),
	} {
		c, br := h1Raw(t, tg.addr)
		h1Write(t, c, req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, body := readResponse(t, br, http.MethodGet)
		checkProblem(t, resp, body, http.StatusBadRequest, "")
		if !strings.Contains(string(body), "https://") {
			t.Errorf("the 400 does not say to use https: %s", body)
		}
		c.Close()
	}
	waitFor(t, 5*time.Second, "two log lines", func() bool { return len(logBuf.records(t)) == 2 })
	for _, rec := range logBuf.records(t) {
		if rec["status"] != float64(400) || rec["error"] != "http_request_error" {
			t.Errorf("logged %v; want status 400, error http_request_error", rec)
		}
	}
	// TLS still works.
	if resp, err := tg.client(t, "h1").Get("https://" + tg.addr + "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTPS after the plain requests: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// A wildcard client-certificate policy covers every name its route's
// wildcard does (one or more labels), and the closest policy governs a
// name: a route protected by mutual TLS is not reached under a deeper
// name without a certificate.
func TestClientAuthPolicyWildcardDepth(t *testing.T) {
	policies := []ClientAuthPolicy{
		{Hosts: []string{"*.sec.test"}, Required: true},
		{Hosts: []string{"*.open.sec.test"}},
		{Hosts: []string{"exact.open.sec.test"}, Required: true},
	}
	for name, want := range map[string]int{
		"a.sec.test": 0, "a.b.sec.test": 0, "A.B.SEC.TEST.": 0, "sec.test": -1, "x.test": -1,
		"a.open.sec.test": 1, "a.b.open.sec.test": 1, "exact.open.sec.test": 2, "open.sec.test": 0,
	} {
		if got := clientAuthPolicyFor(policies, name); got != want {
			t.Errorf("policy for %q: %d; want %d", name, got, want)
		}
	}
}

// X-Forwarded-Client-Cert values are quoted and escaped so that no
// certificate field can end its value early and add an element: a parser
// of the format (quoted strings with backslash escapes) reads back exactly
// the certificate's fields.
func TestClientCertHeaderCannotBeForged(t *testing.T) {
	admin, _ := url.Parse("spiffe://partners/bob;URI=spiffe://prod/admin")
	cert := &x509.Certificate{
		Raw:      []byte("raw"),
		Subject:  pkix.Name{CommonName: `x";URI=spiffe://prod/admin;y=`, Organization: []string{`Partners, "Inc" \ Co`}},
		URIs:     []*url.URL{admin},
		DNSNames: []string{"bob.example"},
	}
	h := clientCertHeader(cert)
	// Split into key=value pairs, honouring quotes and escapes.
	var keys, vals []string
	var cur strings.Builder
	key, inQ, esc := "", false, false
	flush := func() { keys, vals = append(keys, key), append(vals, cur.String()); cur.Reset() }
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case esc:
			cur.WriteByte(c)
			esc = false
		case inQ && c == '\\':
			esc = true
		case c == '"':
			inQ = !inQ
		case !inQ && c == '=' && key == "":
			key = cur.String()
			cur.Reset()
		case !inQ && c == ';':
			flush()
			key = ""
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	want := []string{"Hash", "Subject", "URI", "DNS"}
	if strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Fatalf("%s\nparses to keys %q; want %q", h, keys, want)
	}
	if vals[1] != cert.Subject.String() || vals[2] != admin.String() || vals[3] != "bob.example" {
		t.Errorf("%s\nparses to %q; want the certificate's own fields", h, vals)
	}
}

// A client that offers ALPN http/1.0 alone (curl --http1.0) is served,
// as nginx serves it.
func TestALPNHTTP10(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tg := startTLSGatewayWith(t, gatewaySetup{}, oneRoute(be.URL, ""), false)
	c, err := tls.Dial("tcp", tg.addr, &tls.Config{RootCAs: tg.pool, ServerName: "localhost", NextProtos: []string{"http/1.0"}})
	if err != nil {
		t.Fatalf("handshake offering http/1.0 alone: %v", err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.0" {
		t.Errorf("ALPN %q; want http/1.0", p)
	}
	io.WriteString(c, "GET /x HTTP/1.0\r\nHost: localhost\r\n\r\n")
	resp, body := readResponse(t, bufio.NewReader(c), http.MethodGet)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Errorf("%d %q; want 200 ok", resp.StatusCode, body)
	}
}

// HTTP/3 streams still streaming at a drain's deadline are logged by the
// time Shutdown returns, as HTTP/2 ones are.
func TestDrainCutH3StreamsLoggedBeforeShutdownReturns(t *testing.T) {
	var logBuf syncBuffer
	tg := startTLSGatewayWith(t, gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}},
		fmt.Sprintf("services: [{name: be, targets: [{url: %q}]}]\nroutes: [{name: r, match: {path_prefix: /}, service: be}]\n", tickingBackend(t)), true)
	const n = 10
	openStreams(t, n, tg.client(t, "h3"), "https://localhost:"+portOf(tg.addr)+"/sse")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	tg.srv.Shutdown(ctx)
	if recs := logBuf.records(t); len(recs) != n {
		t.Fatalf("%d log records when Shutdown returned; want %d", len(recs), n)
	}
}
