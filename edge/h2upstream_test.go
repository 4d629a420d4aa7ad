package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawH2cUpstream is an h2c upstream that reads the client preface and
// SETTINGS and hands each connection's framer to serve (after its own
// SETTINGS), counting connections.
func rawH2cUpstream(t *testing.T, serve func(fr *http2.Framer)) (addr string, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	addr = rawUpstream(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(br, preface); err != nil {
			return
		}
		fr := http2.NewFramer(c, br)
		fr.WriteSettings()
		serve(fr)
	})
	return addr, conns
}

// h2cGateway starts a gateway whose one route goes to an h2c service at
// addr; extra is more of the service's settings (a timeouts line), or "".
func h2cGateway(t *testing.T, addr any, extra string) *testGateway {
	t.Helper()
	if extra != "" {
		extra = "    " + extra + "\n"
	}
	return startGateway(t, fmt.Sprintf("services:\n  - name: s\n    protocol: h2c\n    targets: [{url: \"http://%s\"}]\n%sroutes:\n  - {name: r, match: {path_prefix: /}, service: s}\n", addr, extra))
}

// h2cServer serves h with HTTP/2 with prior knowledge only, as a gRPC
// server does; it returns the address.
func h2cServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: h}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// noWindowUpstream is an h2c upstream that grants no stream a window for
// its request body; answer says it sends a 200 head for each stream at
// once (and nothing more).
func noWindowUpstream(t *testing.T, answer bool) string {
	up, _ := rawH2cUpstream(t, func(fr *http2.Framer) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.HeadersFrame:
				if answer {
					var hb bytes.Buffer
					hpack.NewEncoder(&hb).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
					fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hb.Bytes(), EndHeaders: true})
				}
			}
		}
	})
	return up
}

// caFileOf writes cert's certificate to a PEM file, for a service's
// tls.ca_file.
func caFileOf(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// readHeaders reads frames until a HEADERS frame and returns its stream.
func readHeaders(fr *http2.Framer) (uint32, bool) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, false
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			return f.StreamID, true
		}
	}
}

// An HTTP/2 upstream that sends GOAWAY on every new connection before
// taking a stream: net/http's transport would try again on a new
// connection, again and again (one GET opened 46,000 connections in 15 s);
// each attempt opens a few, and the client gets a 502.
func TestH2UpstreamGoawayOnEveryConnectionIsBounded(t *testing.T) {
	up, conns := rawH2cUpstream(t, func(fr *http2.Framer) {
		if _, ok := readHeaders(fr); ok {
			fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}
	})
	tg := h2cGateway(t, up, "")
	c := newClient(t)
	c.Timeout = 20 * time.Second
	resp, body := get(t, c, tg.url+"/x")
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d (%s); want 502", resp.StatusCode, body)
	}
	if n := conns.Load(); n > 4 {
		t.Errorf("%d upstream connections for one GET; want at most 4", n)
	}
}

// A stream the upstream refuses (REFUSED_STREAM) again and again: net/http
// tries again with a backoff, each try restarting the response header
// timeout; the head is waited for no longer than that timeout in all.
func TestH2UpstreamRefusedStreamWithinResponseHeaderTimeout(t *testing.T) {
	up, _ := rawH2cUpstream(t, func(fr *http2.Framer) {
		for {
			id, ok := readHeaders(fr)
			if !ok {
				return
			}
			fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		}
	})
	tg := h2cGateway(t, up, "timeouts: {response_header: 1s}")
	c := newClient(t)
	c.Timeout = 15 * time.Second // net/http's own backoff alone runs past that
	resp, body := get(t, c, tg.url+"/x")
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(resp.Header.Get("Proxy-Status"), "http_response_timeout") {
		t.Fatalf("status %d, Proxy-Status %q (%s); want 504 http_response_timeout", resp.StatusCode, resp.Header.Get("Proxy-Status"), body)
	}
}

// TLS with the upstream that fails is said as such: a handshake that does
// not end within the connect timeout is a connection timeout (retried
// under connect_failure), an alert the upstream sends (it offers no
// protocol the service asks for) a TLS protocol error, not retried.
func TestUpstreamTLSFailuresNamed(t *testing.T) {
	silent := rawUpstream(t, func(c net.Conn) { io.Copy(io.Discard, c) }) // takes TCP, never TLS
	cert, _ := selfSigned(t)
	caFile := caFileOf(t, cert)
	h1Only := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	tlsAddr := rawUpstream(t, func(c net.Conn) { tls.Server(c, h1Only).Handshake() })
	for _, tc := range []struct {
		name, service string
		status        int
		proxyStatus   string
	}{
		{"h1 handshake never ends", fmt.Sprintf(`targets: [{url: "https://%s"}]
    timeouts: {connect: 300ms}`, silent), 504, "connection_timeout"},
		{"h2 handshake never ends", fmt.Sprintf(`protocol: h2
    targets: [{url: "https://%s"}]
    timeouts: {connect: 300ms}`, silent), 504, "connection_timeout"},
		{"h2 to an upstream without h2", fmt.Sprintf(`protocol: h2
    targets: [{url: "https://%s"}]
    tls: {ca_file: %q}
    retries: {attempts: 2}`, tlsAddr, caFile), 502, "tls_protocol_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := startGateway(t, fmt.Sprintf(`
services:
  - name: s
    %s
routes:
  - {name: r, match: {path_prefix: /}, service: s}
`, tc.service))
			resp, body := get(t, newClient(t), tg.url+"/x")
			if resp.StatusCode != tc.status || !strings.Contains(resp.Header.Get("Proxy-Status"), "error="+tc.proxyStatus) {
				t.Errorf("status %d, Proxy-Status %q (%s); want %d %s", resp.StatusCode, resp.Header.Get("Proxy-Status"), body, tc.status, tc.proxyStatus)
			}
		})
	}
}

// Health checks speak to a target as the proxied requests do: HTTP/2 with
// prior knowledge to an h2c-only server (a gRPC server takes nothing
// else), and the service's own TLS settings (a private CA) to an https
// one. Checked the generic way, both targets were found down and every
// request answered 503.
func TestHealthChecksUseTheServiceProtocolAndTLS(t *testing.T) {
	h2cOnly := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			w.WriteHeader(http.StatusHTTPVersionNotSupported)
			return
		}
		io.WriteString(w, "h2c ok")
	}))

	cert, _ := selfSigned(t)
	caFile := caFileOf(t, cert)
	tlsSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls ok") }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go tlsSrv.ServeTLS(tln, "", "")
	t.Cleanup(func() { tlsSrv.Close() })

	tg := startGateway(t, fmt.Sprintf(`
services:
  - name: grpcish
    protocol: h2c
    targets: [{url: "http://%s"}]
    health_check: {path: /health, interval: 100ms, timeout: 1s}
  - name: private
    targets: [{url: "https://%s"}]
    tls: {ca_file: %q}
    health_check: {path: /health, interval: 100ms, timeout: 1s}
routes:
  - {name: a, match: {path_prefix: /a}, service: grpcish}
  - {name: b, match: {path_prefix: /b}, service: private}
`, h2cOnly, tln.Addr(), caFile))
	c := newClient(t)
	for _, tc := range []struct{ path, want string }{{"/a", "h2c ok"}, {"/b", "tls ok"}} {
		// A new target passing its first check is in at once; one failing
		// it gets no traffic.
		waitFor(t, 5*time.Second, tc.path+"'s target checked", func() bool {
			for _, s := range tg.g.Current().services {
				for _, st := range s.pool.Status() {
					if st.LastCheck.IsZero() {
						return false
					}
				}
			}
			return true
		})
		resp, body := get(t, c, tg.url+tc.path)
		if resp.StatusCode != 200 || string(body) != tc.want {
			t.Errorf("%s: %d %q; want 200 %q (the target healthy)", tc.path, resp.StatusCode, body, tc.want)
		}
	}
}

// An HTTP/2 upstream that grants no window for a request body and never
// answers: the attempt ends after the send timeout with a 504, as on
// HTTP/1.1 (it held the request until the upstream went away).
func TestH2UpstreamTakingNoBodyEndsAtTheSendTimeout(t *testing.T) {
	up := noWindowUpstream(t, false)
	tg := h2cGateway(t, up, "timeouts: {send: 500ms, response_header: 30s}")
	c := newClient(t)
	c.Timeout = 15 * time.Second
	req, _ := http.NewRequest("POST", tg.url+"/x", strings.NewReader(strings.Repeat("b", 200<<10)))
	resp, body := do(t, c, req)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(resp.Header.Get("Proxy-Status"), "connection_write_timeout") {
		t.Fatalf("status %d, Proxy-Status %q (%s); want 504 connection_write_timeout", resp.StatusCode, resp.Header.Get("Proxy-Status"), body)
	}
}

// The response head is waited for from the end of the request body: a
// body streamed for longer than response_header (a gRPC client stream) is
// not cut.
func TestH2UpstreamHeadWaitedForFromTheBodysEnd(t *testing.T) {
	up := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "collected %d", n)
	}))
	tg := h2cGateway(t, up, "timeouts: {response_header: 500ms, send: 5s}")
	pr, pw := io.Pipe()
	go func() {
		for range 3 {
			pw.Write([]byte(strings.Repeat("b", 1000)))
			time.Sleep(400 * time.Millisecond) // 1.2 s in all, over response_header
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", tg.url+"/x", pr)
	resp, body := do(t, newClient(t), req)
	if resp.StatusCode != 200 || string(body) != "collected 3000" {
		t.Fatalf("%d %q; want 200 \"collected 3000\"", resp.StatusCode, body)
	}
}

// An HTTP/2 upstream that answers at once and then takes none of the
// request body: the send timeout still ends it (the stream is cut), where
// it held the request for good, its client gone or not.
func TestH2UpstreamAnsweringAndTakingNoBodyIsCut(t *testing.T) {
	up := noWindowUpstream(t, true)
	tg := h2cGateway(t, up, "timeouts: {send: 500ms, read: 30s}")
	c := newClient(t)
	c.Timeout = 10 * time.Second
	req, _ := http.NewRequest("POST", tg.url+"/x", strings.NewReader(strings.Repeat("b", 200<<10)))
	resp, err := c.Do(req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout") {
		t.Fatalf("the answer ended with %v; want it cut by the gateway before the client's timeout", err)
	}
	waitFor(t, 5*time.Second, "no request in flight", func() bool {
		return metricValue(t, tg.g, "meridian_requests_in_flight") == 0
	})
}

// A service with protocol h2 speaks HTTP/2 to a TLS server that picks no
// protocol by ALPN (one that does not look at it, or a TLS terminator in
// front of an h2c server), as Envoy does for a cluster configured for
// HTTP/2, in its requests and its health checks alike; net/http's client
// fell back to HTTP/1.1 without a word, which such a server does not
// speak.
func TestH2ServiceSpeaksHTTP2WithoutALPN(t *testing.T) {
	cert, _ := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}}) // no NextProtos
	if err != nil {
		t.Fatal(err)
	}
	var alpn atomic.Value
	// HTTP/2 only, with prior knowledge, on the TLS connections handed
	// over as plain ones (net/http's server would look at their ALPN).
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s over %s", r.URL.Path, r.Proto)
	})}
	go srv.Serve(handshaken{ln, &alpn})
	t.Cleanup(func() { srv.Close() })
	tg := startGateway(t, fmt.Sprintf(`
services:
  - name: h2only
    protocol: h2
    targets: [{url: "https://%s"}]
    tls: {ca_file: %q}
    health_check: {path: /health, interval: 100ms, timeout: 1s}
routes:
  - {name: a, match: {path_prefix: /}, service: h2only}
`, ln.Addr(), caFileOf(t, cert)))
	waitFor(t, 5*time.Second, "the target checked", func() bool {
		st := tg.g.Current().services["h2only"].pool.Status()
		return !st[0].LastCheck.IsZero()
	})
	if st := tg.g.Current().services["h2only"].pool.Status(); !st[0].Healthy {
		t.Errorf("target status %+v; want healthy (its check spoken in HTTP/2)", st[0])
	}
	resp, body := get(t, newClient(t), tg.url+"/x")
	if resp.StatusCode != 200 || string(body) != "/x over HTTP/2.0" {
		t.Fatalf("%d %q; want 200 \"/x over HTTP/2.0\"", resp.StatusCode, body)
	}
	if p := alpn.Load(); p != "" {
		t.Fatalf("the server negotiated %q; the test wants none", p)
	}
}

// handshaken is a TLS listener whose connections come handshaken and
// hidden as plain ones, the protocol each negotiated noted in alpn.
type handshaken struct {
	net.Listener
	alpn *atomic.Value
}

func (l handshaken) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := c.(*tls.Conn)
		if tc.Handshake() != nil {
			c.Close()
			continue
		}
		l.alpn.Store(tc.ConnectionState().NegotiatedProtocol)
		return struct{ net.Conn }{tc}, nil
	}
}

// Health checks of an h2 service whose target takes connections and never
// answers the TLS handshake end each handshake at the check's timeout:
// they left a connection (and a goroutine) behind at every check, for
// good (net/http dials apart from the request, whose timeout does not end
// the dial).
func TestH2HealthCheckHandshakeBounded(t *testing.T) {
	var accepted, open atomic.Int32
	stalled := rawUpstream(t, func(c net.Conn) {
		accepted.Add(1)
		open.Add(1)
		defer open.Add(-1)
		io.Copy(io.Discard, c) // never a byte of TLS back; ends when the gateway closes
	})
	startGateway(t, fmt.Sprintf(`
services:
  - name: s
    protocol: h2
    targets: [{url: "https://%s"}]
    health_check: {path: /hc, interval: 100ms, timeout: 100ms}
routes:
  - {name: r, match: {path_prefix: /}, service: s}
`, stalled))
	waitFor(t, 20*time.Second, "ten checks", func() bool { return accepted.Load() >= 10 })
	if n := open.Load(); n > 6 {
		t.Fatalf("%d of %d check connections still open; want each closed at the check's timeout", n, accepted.Load())
	}
}
