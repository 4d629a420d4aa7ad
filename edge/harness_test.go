package edge

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/edge/config"
	"github.com/quic-go/quic-go"
)

// The tests count which requests took the lean path and the lane (set
// before any test runs, so never written while a server reads it).
func init() {
	countPaths = true
	// A route whose name ends in "twin" is the general path's twin of a
	// lean one, to compare them.
	notLean = func(route string) bool { return strings.HasSuffix(route, "twin") }
}

// testGateway is a gateway serving a YAML document on a real loopback
// listener, shut down when the test ends.
type testGateway struct {
	t    testing.TB
	g    *Gateway
	srv  *Server
	addr string // host:port of the listener
	url  string // http://addr
}

// gatewaySetup is what startGateway needs besides the document.
type gatewaySetup struct {
	opts     Options
	listener ListenerOptions
	quic     *quic.Config // an HTTPS listener's (startTLSGatewayWith)
}

// startGateway compiles yaml, installs it and serves it on 127.0.0.1:0.
// Cleanup shuts the server down (checking that Serve returns nil) and
// closes the gateway.
func startGateway(t testing.TB, yaml string) *testGateway {
	t.Helper()
	return startGatewayWith(t, gatewaySetup{}, yaml)
}

func startGatewayWith(t testing.TB, setup gatewaySetup, yaml string) *testGateway {
	t.Helper()
	g := New(setup.opts)
	if yaml != "" {
		g.Swap(compileDoc(t, g, yaml, 1, nil))
	}
	lo := setup.listener
	if lo.Addr == "" && lo.Listener == nil {
		lo.Addr = "127.0.0.1:0"
	}
	srv, err := g.Listen(lo)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	tg := &testGateway{t: t, g: g, srv: srv, addr: srv.Addr().String()}
	tg.url = "http://" + tg.addr
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v; want nil after Shutdown", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after Shutdown")
		}
		g.Close()
	})
	return tg
}

// compileDoc parses and compiles a gateway document, failing the test on
// any error.
func compileDoc(t testing.TB, g *Gateway, yaml string, version uint64, prev *Snapshot) *Snapshot {
	t.Helper()
	raw := []byte(yaml)
	doc, err := config.Parse(raw)
	if err != nil {
		t.Fatalf("config.Parse: %v\n%s", err, yaml)
	}
	snap, err := g.Compile(doc, CompileInput{Version: version, Raw: raw, Prev: prev})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return snap
}

// newBackend starts an httptest server closed at the end of the test.
func newBackend(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// newClient returns an HTTP/1.1 client with its own connection pool.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// newH2CClient returns a client that speaks HTTP/2 with prior knowledge.
func newH2CClient(t testing.TB) *http.Client {
	t.Helper()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Proxy: nil, DisableCompression: true, Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// do sends a request and returns the response with its body read.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, c, req)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recv waits for a value on ch or fails the test.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// problemBody is the problem+json body the gateway answers errors with.
type problemBody struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Instance  string `json:"instance"`
	Route     string `json:"route"`
	RequestID string `json:"request_id"`
}

// checkProblem asserts a gateway error answer: status, problem+json body
// and, if proxyStatus is not empty, a Proxy-Status naming that error.
func checkProblem(t *testing.T, resp *http.Response, body []byte, status int, proxyStatus string) problemBody {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d; want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q; want application/problem+json", ct)
	}
	var p problemBody
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %q: %v", body, err)
	}
	if p.Status != status {
		t.Errorf("problem status = %d; want %d", p.Status, status)
	}
	ps := resp.Header.Get("Proxy-Status")
	if proxyStatus == "" {
		if ps != "" {
			t.Errorf("Proxy-Status = %q; want none", ps)
		}
	} else {
		if !strings.HasPrefix(ps, "meridian; ") || !strings.Contains(ps, "error="+proxyStatus) {
			t.Errorf("Proxy-Status = %q; want meridian; error=%s", ps, proxyStatus)
		}
		if want := problemTypeBase + proxyStatus; p.Type != want {
			t.Errorf("problem type = %q; want %q", p.Type, want)
		}
	}
	return p
}

// hitCounter counts requests a backend answered, safely across goroutines.
type hitCounter struct {
	mu sync.Mutex
	n  int
}

func (c *hitCounter) inc() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *hitCounter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// dialGateway opens a raw TCP connection with an overall deadline.
func dialGateway(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// readResponse reads one HTTP/1 response and its whole body from br.
func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading response body: %v", err)
	}
	return resp, body
}

// expectEOF reads from br until the peer closes the connection; it fails if
// the connection is still open at the deadline.
func expectEOF(t *testing.T, c net.Conn, br io.Reader, within time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v; want it closed", within)
	}
	// nil (EOF) or a reset both mean the gateway closed the connection.
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// rawUpstream is a TCP upstream on loopback that hands each accepted
// connection to serve (on its own goroutine, closing it after), for tests
// that need bytes net/http would not send. It returns the address and
// stops accepting when the test ends.
func rawUpstream(t testing.TB, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// rawKeepAlive is a rawUpstream that reads request after request on each
// connection: answer writes the response to c and returns false to close.
func rawKeepAlive(t testing.TB, answer func(c net.Conn, req *http.Request) bool) string {
	t.Helper()
	return rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil || !answer(c, req) {
				return
			}
		}
	})
}

// waitForCancel is a backend's request that says it arrived (entered), then
// waits up to 10 s for its cancellation, which it reports (canceled, and
// true).
func waitForCancel(r *http.Request, entered, canceled chan<- struct{}) bool {
	entered <- struct{}{}
	select {
	case <-r.Context().Done():
		canceled <- struct{}{}
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}
