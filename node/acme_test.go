package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/internal/pebbletest"
)

// End-to-end tests of a node with ACME certificates from a real pebble: the node's own
// plain HTTP and HTTPS listeners answer pebble's HTTP-01 and TLS-ALPN-01 validations (pebble
// resolves every name to 127.0.0.1 and connects to the node's ports), and clients that
// trust only pebble's issuing root talk HTTP/1.1, HTTP/2 and HTTP/3 to the node.

const (
	acmeHost  = "api.meridian.test"
	acmeHost2 = "api2.meridian.test"
	// obtainTimeout bounds how long a certificate may take to be obtained and served.
	obtainTimeout = 90 * time.Second
)

// acmeSetup describes a node under test.
type acmeSetup struct {
	challenges []string // default http-01
	onDemand   bool
	// routes is the YAML of gateway.routes; default one route "api" for acmeHost.
	routes string
	// viaRelay puts a counting relay between the node and pebble's ACME API.
	viaRelay bool
	// backend handles the upstream requests; default answers "app <path>".
	backend http.Handler
}

// acmeNode is a running node with its pebble.
type acmeNode struct {
	n         *Node
	p         *pebbletest.Pebble
	relay     *pebbletest.Relay // nil without viaRelay
	backend   *httptest.Server
	httpPort  int
	httpsPort int
	log       *pebbletest.SyncBuffer
	// goroutines is runtime.NumGoroutine just before the node started (pebble, the DNS
	// responder and the backend already running).
	goroutines int
	drainOnce  sync.Once
	drainErr   error
}

func defaultRoutes() string {
	return fmt.Sprintf("[{name: api, match: {hosts: [%s]}, service: app}]", acmeHost)
}

// startACMENode chooses the node's two ports, starts pebble validating on them, then the
// backend and the node. Cleanup drains the node (if the test did not), then closes the
// backend, then stops pebble.
func startACMENode(t *testing.T, s acmeSetup) *acmeNode {
	t.Helper()
	httpPort := pebbletest.FreePort(t)
	httpsPort := pebbletest.FreePort(t)
	for httpsPort == httpPort {
		httpsPort = pebbletest.FreePort(t)
	}
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: httpsPort})
	a := &acmeNode{p: p, httpPort: httpPort, httpsPort: httpsPort, log: &pebbletest.SyncBuffer{}}
	ca := p.DirectoryURL
	if s.viaRelay {
		a.relay = pebbletest.NewRelay(t, p.ACMEAddr)
		ca = p.DirectoryURLVia(a.relay.Addr())
	}
	h := s.backend
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "app "+r.URL.RequestURI())
		})
	}
	a.backend = httptest.NewServer(h)
	t.Cleanup(a.backend.Close)
	if len(s.challenges) == 0 {
		s.challenges = []string{"http-01"}
	}
	if s.routes == "" {
		s.routes = defaultRoutes()
	}
	content := fmt.Sprintf(`node:
  data_dir: %q
  listen: {http: "127.0.0.1:%d", https: "127.0.0.1:%d"}
  admin: {listen: "127.0.0.1:0", token: "0123456789abcdef0123"}
  access_log: {enabled: false}
  limits: {drain_timeout: 15s}
  tls:
    acme: {email: test@meridian.test, ca: %q, ca_root: %q, challenges: [%s]}
    on_demand: {enabled: %v}
gateway:
  services: [{name: app, targets: [{url: %q}]}]
  routes: %s
`, t.TempDir(), httpPort, httpsPort, ca, p.MinicaFile, strings.Join(s.challenges, ", "), s.onDemand, a.backend.URL, s.routes)
	f, err := ParseFile([]byte(content))
	if err != nil {
		t.Fatalf("ParseFile: %v\n%s", err, content)
	}
	logger := slog.New(slog.NewTextHandler(a.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a.goroutines = runtime.NumGoroutine()
	n, err := New(f, Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(f, []byte(content)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	a.n = n
	t.Cleanup(func() {
		a.drain()
		if t.Failed() {
			t.Logf("node log:\n%s", pebbletest.Tail(a.log.String(), 16000))
		}
	})
	return a
}

// drain drains the node once; later calls return the first result.
func (a *acmeNode) drain() error {
	a.drainOnce.Do(func() { a.drainErr = a.n.Drain(context.Background()) })
	return a.drainErr
}

func (a *acmeNode) httpsAddr() string { return fmt.Sprintf("127.0.0.1:%d", a.httpsPort) }

func (a *acmeNode) url(host, path string) string {
	return fmt.Sprintf("https://%s:%d%s", host, a.httpsPort, path)
}

// handshake connects to the node's HTTPS port with SNI name, trusting only pebble's
// issuing root, and returns the verified chain (leaf first).
func (a *acmeNode) handshake(name string, timeout time.Duration) ([]*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: a.p.Roots, ServerName: name, NextProtos: []string{"h2", "http/1.1"}}}
	c, err := d.DialContext(ctx, "tcp", a.httpsAddr())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st := c.(*tls.Conn).ConnectionState()
	if len(st.VerifiedChains) == 0 {
		return nil, errors.New("no verified chain")
	}
	return st.VerifiedChains[0], nil
}

// waitServed polls until the node serves name a certificate that verifies against
// pebble's root, and checks the chain.
func (a *acmeNode) waitServed(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	var chain []*x509.Certificate
	pebbletest.WaitFor(t, obtainTimeout, "certificate for "+name+" served", func() error {
		var err error
		chain, err = a.handshake(name, 5*time.Second)
		return err
	})
	leaf := chain[0]
	if err := leaf.VerifyHostname(name); err != nil {
		t.Fatalf("served leaf: %v", err)
	}
	if err := a.p.ChainsToRoot(chain); err != nil {
		t.Fatalf("served chain for %s: %v", name, err)
	}
	if leaf.Issuer.String() == leaf.Subject.String() {
		t.Fatalf("served leaf for %s is self-signed: %v", name, leaf.Subject)
	}
	return leaf
}

// loopbackDial dials 127.0.0.1 at the port of addr, whatever its host: the test's names
// resolve nowhere else.
func loopbackDial(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}

// clients are HTTP/1.1, HTTP/2 and HTTP/3 clients trusting only pebble's issuing root,
// for which every name is 127.0.0.1.
type clients struct {
	h1, h2 *http.Transport
	h3     *http3.Transport
}

func newClients(t *testing.T, roots *x509.CertPool) *clients {
	t.Helper()
	tlsConf := &tls.Config{RootCAs: roots}
	var p1, p2 http.Protocols
	p1.SetHTTP1(true)
	p2.SetHTTP2(true)
	c := &clients{
		h1: &http.Transport{TLSClientConfig: tlsConf.Clone(), DialContext: loopbackDial, Protocols: &p1},
		h2: &http.Transport{TLSClientConfig: tlsConf.Clone(), DialContext: loopbackDial, Protocols: &p2},
		h3: &http3.Transport{
			TLSClientConfig: tlsConf.Clone(),
			Dial: func(ctx context.Context, addr string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
				_, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				return quic.DialAddrEarly(ctx, net.JoinHostPort("127.0.0.1", port), tc, qc)
			},
		},
	}
	t.Cleanup(c.close)
	return c
}

func (c *clients) close() {
	c.h1.CloseIdleConnections()
	c.h2.CloseIdleConnections()
	c.h3.Close()
}

type protoCase struct {
	name  string
	rt    http.RoundTripper
	major int
}

func (c *clients) all() []protoCase {
	return []protoCase{{"HTTP/1.1", c.h1, 1}, {"HTTP/2", c.h2, 2}, {"HTTP/3", c.h3, 3}}
}

// get sends GET url through rt and returns the response (body read) or an error.
func get3(rt http.RoundTripper, url string) (*http.Response, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// checkAllProtocols requests https://host:port/path over HTTP/1.1, HTTP/2 and HTTP/3 and
// checks the protocol, the backend's answer and the verified chain.
func (a *acmeNode) checkAllProtocols(t *testing.T, c *clients, host, path string) {
	t.Helper()
	for _, pc := range c.all() {
		resp, body, err := get3(pc.rt, a.url(host, path))
		if err != nil {
			t.Errorf("%s GET %s: %v", pc.name, a.url(host, path), err)
			continue
		}
		if resp.StatusCode != 200 || body != "app "+path {
			t.Errorf("%s GET %s: %d %q; want 200 %q", pc.name, a.url(host, path), resp.StatusCode, body, "app "+path)
		}
		if resp.ProtoMajor != pc.major {
			t.Errorf("%s GET: served over %s (ProtoMajor %d)", pc.name, resp.Proto, resp.ProtoMajor)
		}
		if resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 {
			t.Errorf("%s GET: no verified TLS chain", pc.name)
			continue
		}
		if err := a.p.ChainsToRoot(resp.TLS.VerifiedChains[0]); err != nil {
			t.Errorf("%s GET: %v", pc.name, err)
		}
		if err := resp.TLS.VerifiedChains[0][0].VerifyHostname(host); err != nil {
			t.Errorf("%s GET: %v", pc.name, err)
		}
	}
}

// HTTP-01: the node obtains a certificate through a real HTTP-01 validation of its plain
// HTTP listener, serves it on TCP and QUIC, and its plain listener redirects to HTTPS.
func TestACMENodeHTTP01(t *testing.T) {
	a := startACMENode(t, acmeSetup{challenges: []string{"http-01"}})
	a.waitServed(t, acmeHost)
	c := newClients(t, a.p.Roots)
	a.checkAllProtocols(t, c, acmeHost, "/v1/items?id=7")
	log := a.log.String()
	if !strings.Contains(log, "answered http-01 challenge") {
		t.Error("certificate served but the node log shows no HTTP-01 challenge answered")
	}
	if strings.Contains(log, "answering tls-alpn-01 challenge") {
		t.Error("a TLS-ALPN-01 challenge was answered although only http-01 is configured")
	}

	// The plain HTTP listener: 308 to HTTPS on the node's HTTPS port, path and query kept
	// (the method too: 308 forbids changing it), and the target serves.
	noFollow := &http.Client{
		Transport:     &http.Transport{DialContext: loopbackDial},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	defer noFollow.CloseIdleConnections()
	const pathQuery = "/v1/items/a%20b?id=7&tag=x&tag=y"
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, _ := http.NewRequest(method, fmt.Sprintf("http://%s:%d%s", acmeHost, a.httpPort, pathQuery), strings.NewReader("body"))
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatalf("plain %s: %v", method, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		want := a.url(acmeHost, pathQuery)
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
			t.Errorf("plain %s %s: %d Location %q; want 308 %q", method, pathQuery, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
	resp, body, err := get3(c.h2, a.url(acmeHost, pathQuery))
	if err != nil || resp.StatusCode != 200 || body != "app "+pathQuery {
		t.Errorf("following the redirect: %v %q %v", resp, body, err)
	}
}

// TLS-ALPN-01: the same through a validation of the node's HTTPS listener only.
func TestACMENodeTLSALPN01(t *testing.T) {
	a := startACMENode(t, acmeSetup{challenges: []string{"tls-alpn-01"}})
	a.waitServed(t, acmeHost)
	c := newClients(t, a.p.Roots)
	a.checkAllProtocols(t, c, acmeHost, "/hello?x=1")
	log := a.log.String()
	if !strings.Contains(log, "answering tls-alpn-01 challenge") {
		t.Error("certificate served but the node log shows no TLS-ALPN-01 challenge answered")
	}
	if strings.Contains(log, "answered http-01 challenge") {
		t.Error("an HTTP-01 challenge was answered although only tls-alpn-01 is configured")
	}
}

// On demand at node level: a server name no route names is refused in the handshake,
// at once and without any byte reaching the CA; a name a route names (by wildcard, so the
// node does not manage it ahead) gets its certificate during its first handshake.
func TestACMENodeOnDemand(t *testing.T) {
	a := startACMENode(t, acmeSetup{
		onDemand: true,
		viaRelay: true,
		routes:   `[{name: shops, match: {hosts: ["*.shop.meridian.test"]}, service: app}]`,
	})
	for _, name := range []string{"evil.example.com", "shop.meridian.test", "a.b.other.meridian.test"} {
		start := time.Now()
		if _, err := a.handshake(name, 10*time.Second); err == nil {
			t.Fatalf("handshake for %s, which no route names, succeeded", name)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("refusing %s took %v", name, d)
		}
	}
	if n, c := a.relay.Sent(), a.relay.Conns(); n != 0 || c != 0 {
		t.Fatalf("the CA was contacted for refused names: %d bytes over %d connections", n, c)
	}

	// The first handshake for an allowed name waits for the certificate.
	const name = "eu.shop.meridian.test"
	chain, err := a.handshake(name, obtainTimeout)
	if err != nil {
		t.Fatalf("on-demand handshake for %s: %v", name, err)
	}
	if err := chain[0].VerifyHostname(name); err != nil {
		t.Fatal(err)
	}
	if err := a.p.ChainsToRoot(chain); err != nil {
		t.Fatal(err)
	}
	if a.relay.Sent() == 0 {
		t.Fatal("certificate obtained without the relay seeing traffic: the relay is not in the path")
	}
	c := newClients(t, a.p.Roots)
	a.checkAllProtocols(t, c, name, "/cart")
}

// A reload adding a route for a new host makes the node obtain and serve its
// certificate, while the first host keeps being served.
func TestACMENodeReloadAddsHost(t *testing.T) {
	a := startACMENode(t, acmeSetup{})
	first := a.waitServed(t, acmeHost)
	if _, err := a.handshake(acmeHost2, 5*time.Second); err == nil {
		t.Fatalf("%s served before any route names it", acmeHost2)
	}
	doc := fmt.Sprintf(`services: [{name: app, targets: [{url: %q}]}]
routes:
  - {name: api, match: {hosts: [%s]}, service: app}
  - {name: api2, match: {hosts: [%s]}, service: app}
`, a.backend.URL, acmeHost, acmeHost2)
	before := a.n.Gateway().Current().Version
	snap, err := a.n.Apply(context.Background(), []byte(doc), edge.ApplyOptions{})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if snap.Version != before+1 {
		t.Errorf("version %d after Apply; want %d", snap.Version, before+1)
	}
	leaf2 := a.waitServed(t, acmeHost2)
	if leaf2.DNSNames[0] != acmeHost2 {
		t.Errorf("served %v for %s", leaf2.DNSNames, acmeHost2)
	}
	c := newClients(t, a.p.Roots)
	a.checkAllProtocols(t, c, acmeHost2, "/two")
	a.checkAllProtocols(t, c, acmeHost, "/one")
	again := a.waitServed(t, acmeHost)
	if again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("the reload replaced %s's certificate (serial %x -> %x)", acmeHost, first.SerialNumber, again.SerialNumber)
	}
}

// Draining with an HTTP/3 request in flight: the request completes, the drain ends
// without cutting anything off, nothing listens afterwards and every goroutine the node
// started is gone.
func TestACMENodeDrainHTTP3InFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	a := startACMENode(t, acmeSetup{backend: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			once.Do(func() { close(started) })
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "app "+r.URL.RequestURI())
	})})
	var releaseOnce sync.Once
	releaseBackend := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseBackend) // runs before the backend's Close, which waits for handlers
	a.waitServed(t, acmeHost)
	c := newClients(t, a.p.Roots)

	type result struct {
		resp *http.Response
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, body, err := get3(c.h3, a.url(acmeHost, "/slow"))
		res <- result{resp, body, err}
	}()
	select {
	case <-started:
	case r := <-res:
		t.Fatalf("HTTP/3 request ended before reaching the backend: %v", r.err)
	case <-time.After(15 * time.Second):
		t.Fatal("HTTP/3 request did not reach the backend")
	}

	drained := make(chan error, 1)
	go func() { drained <- a.drain() }()
	// The drain has started once readiness is false and the TCP listener refuses.
	pebbletest.WaitFor(t, 10*time.Second, "drain started", func() error {
		if a.n.Ready() {
			return errors.New("still ready")
		}
		conn, err := net.DialTimeout("tcp", a.httpsAddr(), time.Second)
		if err == nil {
			conn.Close()
			return errors.New("HTTPS listener still accepts")
		}
		return nil
	})
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while an HTTP/3 request was in flight", err)
	default:
	}
	releaseBackend()
	r := <-res
	if r.err != nil {
		t.Fatalf("in-flight HTTP/3 request during drain: %v", r.err)
	}
	if r.resp.StatusCode != 200 || r.body != "app /slow" || r.resp.ProtoMajor != 3 {
		t.Fatalf("in-flight request: %d %q over %s; want 200 \"app /slow\" over HTTP/3", r.resp.StatusCode, r.body, r.resp.Proto)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Drain did not return after the in-flight request completed")
	}

	// Nothing answers any more, on TCP or QUIC.
	if conn, err := net.DialTimeout("tcp", a.httpsAddr(), time.Second); err == nil {
		conn.Close()
		t.Error("HTTPS TCP listener still accepts after the drain")
	}
	c.close()
	h3 := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: a.p.Roots}, QUICConfig: &quic.Config{HandshakeIdleTimeout: time.Second},
		Dial: c.h3.Dial}
	if _, _, err := get3(h3, a.url(acmeHost, "/after")); err == nil {
		t.Error("HTTP/3 request after the drain succeeded")
	}
	h3.Close()

	base := a.goroutines
	pebbletest.WaitFor(t, 20*time.Second, "goroutines back to the baseline", func() error {
		if n := runtime.NumGoroutine(); n > base {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, baseline %d:\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}
