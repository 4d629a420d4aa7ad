package edge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// echoUpgradeBackend answers an Upgrade: websocket request with 101 and
// then echoes bytes on the taken-over connection. It reports on ended when
// the echo loop stops (the gateway closed its side).
func echoUpgradeBackend(t *testing.T, ended chan<- struct{}, seen chan<- http.Header) string {
	t.Helper()
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if seen != nil {
			seen <- r.Header.Clone()
		}
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("backend hijack: %v", err)
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Backend: yes\r\n\r\n")
		// Echo until the gateway closes the connection.
		io.Copy(conn, brw.Reader)
		if ended != nil {
			ended <- struct{}{}
		}
	})
	return be.URL
}

const upgradeRequest = "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"

func TestWebSocketUpgradeEchoBothWays(t *testing.T) {
	ended := make(chan struct{}, 1)
	seen := make(chan http.Header, 1)
	gw := startGateway(t, oneRoute(echoUpgradeBackend(t, ended, seen), ""))
	c := dialGateway(t, gw.addr)
	// Bytes sent right behind the request belong to the new protocol and
	// must reach the backend too.
	if _, err := io.WriteString(c, upgradeRequest+"early;"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("reading the 101: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d; want 101", resp.StatusCode)
	}
	if got := resp.Header.Get("Upgrade"); got != "websocket" {
		t.Errorf("Upgrade = %q; want websocket", got)
	}
	if got := resp.Header.Get("Connection"); got != "Upgrade" {
		t.Errorf("Connection = %q; want Upgrade", got)
	}
	if got := resp.Header.Get("Via"); got != "1.1 meridian" {
		t.Errorf("Via = %q; want \"1.1 meridian\"", got)
	}
	if got := resp.Header.Get("X-Backend"); got != "yes" {
		t.Errorf("X-Backend = %q; want yes (backend headers are relayed)", got)
	}
	h := recv(t, seen, "the backend to see the upgrade request")
	if got := h.Get("Upgrade"); got != "websocket" {
		t.Errorf("backend saw Upgrade %q; want websocket", got)
	}
	if got := h.Get("Sec-Websocket-Key"); got != "dGhlIHNhbXBsZSBub25jZQ==" {
		t.Errorf("backend saw Sec-WebSocket-Key %q", got)
	}

	buf := make([]byte, len("early;"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "early;" {
		t.Fatalf("echo of early bytes = %q, %v; want \"early;\"", buf, err)
	}
	for i := range 3 {
		msg := fmt.Sprintf("message %d", i)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatalf("reading echo %d: %v", i, err)
		}
		if string(buf) != msg {
			t.Errorf("echo = %q; want %q", buf, msg)
		}
	}
	if n := gw.g.hijackedCount(); n != 1 {
		t.Errorf("hijacked connections = %d; want 1 while the WebSocket is open", n)
	}

	// Closing the client ends the backend side and the gateway's copies.
	c.Close()
	recv(t, ended, "the backend connection to end after the client closed")
	waitFor(t, 5*time.Second, "the gateway to forget the taken-over connection", func() bool {
		return gw.g.hijackedCount() == 0
	})
}

// A backend that refuses the upgrade answers normally; the client gets
// its answer.
func TestUpgradeRefusedByBackend(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no websockets here", http.StatusForbidden)
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	c := dialGateway(t, gw.addr)
	io.WriteString(c, upgradeRequest)
	resp, body := readResponse(t, bufio.NewReader(c), http.MethodGet)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "no websockets here") {
		t.Errorf("got %d %q; want 403 from the backend", resp.StatusCode, body)
	}
}

// A 101 to a protocol other than the one asked for, to a request that asked
// for none, or naming none, is refused, and the answer says which.
func TestUpgradeToOtherProtocolRefused(t *testing.T) {
	for _, tc := range []struct{ name, request, answer, detail string }{
		{"another protocol", upgradeRequest, "Upgrade: h2c\r\nConnection: Upgrade\r\n", "the upstream switched to h2c, not the websocket the client asked for"},
		{"no switch asked for", "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "Upgrade: websocket\r\nConnection: Upgrade\r\n", "the upstream switched protocols (to websocket) though the client asked for no switch"},
		{"no protocol named", upgradeRequest, "Connection: Upgrade\r\n", "the upstream switched protocols without naming one (no Upgrade field); the client asked for websocket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer conn.Close()
				io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\n"+tc.answer+"\r\n")
			})
			gw := startGateway(t, oneRoute(be.URL, ""))
			c := dialGateway(t, gw.addr)
			io.WriteString(c, tc.request)
			resp, body := readResponse(t, bufio.NewReader(c), http.MethodGet)
			checkProblem(t, resp, body, http.StatusBadGateway, "http_upgrade_failed")
			if !strings.Contains(string(body), tc.detail) {
				t.Errorf("body %s; want the detail %q", body, tc.detail)
			}
		})
	}
}

// An upgrade asked of an h2c or h2 service is refused before any upstream
// is asked (an h2c transport would refuse it, an h2 one might send it
// over HTTP/1.1), and a 101 sent before the request's body was taken is
// an upgrade that failed, not a broken connection.
func TestUpgradeFailuresSaidAsSuch(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.inc()
		if r.Header.Get("Upgrade") == "" {
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		// No byte of the body read: the gateway is still sending it.
		time.Sleep(100 * time.Millisecond)
	})
	gw := startGateway(t, fmt.Sprintf(`
services:
  - {name: one, targets: [{url: %[1]q}]}
  - {name: cleartext2, protocol: h2c, targets: [{url: %[1]q}]}
  - {name: tls2, protocol: h2, targets: [{url: %[2]q}]}
routes:
  - {name: one, service: one, match: {path_prefix: /one}}
  - {name: c2, service: cleartext2, match: {path_prefix: /c2}}
  - {name: t2, service: tls2, match: {path_prefix: /t2}}
`, be.URL, strings.Replace(be.URL, "http:", "https:", 1)))
	for _, tc := range []struct{ request, detail string }{
		{"GET /c2 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "service cleartext2 speaks HTTP/2 (protocol h2c): an Upgrade (websocket) is relayed only to an http1 service"},
		{"GET /t2 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "service tls2 speaks HTTP/2 (protocol h2): an Upgrade (websocket) is relayed only to an http1 service"},
		{"POST /one HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 200000\r\n\r\n" + strings.Repeat("b", 200000), "the upstream switched protocols before it took the request's body"},
	} {
		c := dialGateway(t, gw.addr)
		io.WriteString(c, tc.request)
		resp, body := readResponse(t, bufio.NewReader(c), http.MethodGet)
		checkProblem(t, resp, body, http.StatusBadGateway, "http_upgrade_failed")
		if !strings.Contains(string(body), tc.detail) {
			t.Errorf("body %s; want the detail %q", body, tc.detail)
		}
		c.Close()
	}
	if n := hits.get(); n != 1 {
		t.Errorf("the backend got %d requests; want 1 (none for the HTTP/2 services)", n)
	}
}

// Shutdown closes WebSocket connections that outlive its deadline.
func TestShutdownClosesWebSockets(t *testing.T) {
	ended := make(chan struct{}, 1)
	var logBuf syncBuffer
	g := New(Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))})
	g.Swap(compileDoc(t, g, oneRoute(echoUpgradeBackend(t, ended, nil), ""), 1, nil))
	defer g.Close()
	srv, err := g.Listen(ListenerOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	c := dialGateway(t, srv.Addr().String())
	io.WriteString(c, upgradeRequest)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		// The WebSocket was still open at the deadline and was cut: not
		// a clean drain.
		t.Errorf("Shutdown = %v; want context.DeadlineExceeded", err)
	}
	// Its log line is out by the time Shutdown returns, saying the drain
	// cut it.
	if rec := logBuf.only(t, "the WebSocket's record"); rec["status"] != float64(101) || rec["error"] != "drain_timeout" {
		t.Errorf("the WebSocket's record: %v; want status 101, error drain_timeout", rec)
	}
	if n := g.hijackedCount(); n != 0 {
		t.Errorf("%d taken-over connections left after Shutdown", n)
	}
	if err := recv(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve = %v; want nil", err)
	}
	expectEOF(t, c, br, 5*time.Second)
	recv(t, ended, "the backend side to be closed")
}

// An upgrade to h2c is not relayed: the upstream sees a plain request
// without Upgrade, Connection or HTTP2-Settings, and would it answer 101
// anyway, that is refused too. Relaying it would give the client an
// HTTP/2 connection to the upstream on which later streams bypass the
// gateway (h2c smuggling).
func TestH2CUpgradeNotRelayed(t *testing.T) {
	// A backend that would switch: it must never get the chance.
	seen, be := switchingBackend(t, "h2c")
	gw := startGateway(t, oneRoute(be.URL, ""))
	for _, up := range []string{"h2c", "H2C", "h2c, websocket"} {
		c := dialGateway(t, gw.addr)
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: "+up+"\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
		resp, body := readResponse(t, bufio.NewReader(c), http.MethodGet)
		if resp.StatusCode != http.StatusOK || string(body) != "plain" {
			t.Errorf("Upgrade: %s: got %d %q; want the upstream's plain 200", up, resp.StatusCode, body)
		}
		h := recv(t, seen, "the upstream request")
		for _, name := range []string{"Upgrade", "Connection", "Http2-Settings"} {
			if v := h.Get(name); v != "" {
				t.Errorf("Upgrade: %s: the upstream got %s: %q", up, name, v)
			}
		}
		c.Close()
	}
}

// The upstream response-header deadline is left on a connection after the
// head (h1Conn.Read): on an upgraded connection that idles longer than
// the timeout, it must not cut the tunnel.
func TestUpgradeOutlivesResponseHeaderTimeout(t *testing.T) {
	const timeout = 150 * time.Millisecond
	gw := startGateway(t, oneRouteService(echoUpgradeBackend(t, nil, nil), "    timeouts: {response_header: 150ms}"))
	c := dialGateway(t, gw.addr)
	if _, err := io.WriteString(c, upgradeRequest); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v; want 101", resp, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for i := range 3 {
		time.Sleep(2 * timeout) // idle past the header deadline: the scenario
		msg := fmt.Sprintf("message %d;", i)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("echo %d after %v idle: %v", i, 2*timeout, err)
		}
		if string(got) != msg {
			t.Fatalf("echo %d = %q; want %q", i, got, msg)
		}
	}
}

// A tunnel whose client has gone, to an upstream that never closes its
// side, is closed after upgradeCloseGrace: its goroutines, sockets and
// in-flight count do not stay for ever.
func TestUpgradeTunnelClosedWhenOneSideEndsAndTheOtherNever(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	sawEOF := make(chan struct{}, 1)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		io.Copy(io.Discard, brw.Reader) // the client's end comes as EOF
		sawEOF <- struct{}{}
		<-release // and this side stays open, silent
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	c := dialGateway(t, gw.addr)
	io.WriteString(c, upgradeRequest)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v; want 101", resp, err)
	}
	start := time.Now()
	c.Close() // the client goes
	recv(t, sawEOF, "the client's end to reach the upstream")
	waitFor(t, upgradeCloseGrace+5*time.Second, "no request in flight", func() bool {
		return metricValue(t, gw.g, "meridian_requests_in_flight") == 0
	})
	if d := time.Since(start); d < upgradeCloseGrace-time.Second {
		t.Errorf("the tunnel ended after %v; want the grace of %v first", d, upgradeCloseGrace)
	}
}

// An HTTP/1.0 request's Upgrade is ignored (RFC 9110 7.8): the upstream
// gets a plain request, and the client no 101 (15.2).
func TestUpgradeFromHTTP10Ignored(t *testing.T) {
	seen, be := switchingBackend(t, "websocket")
	gw := startGateway(t, oneRoute(be.URL, ""))
	c := dialGateway(t, gw.addr)
	defer c.Close()
	io.WriteString(c, "GET /ws HTTP/1.0\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, body := readResponse(t, bufio.NewReader(c), http.MethodGet)
	if resp.StatusCode != http.StatusOK || string(body) != "plain" {
		t.Errorf("HTTP/1.0 with Upgrade: got %d %q; want the upstream's plain 200", resp.StatusCode, body)
	}
	h := recv(t, seen, "the upstream request")
	for _, name := range []string{"Upgrade", "Connection"} {
		if v := h.Get(name); v != "" {
			t.Errorf("the upstream got %s: %q", name, v)
		}
	}
}

// switchingBackend answers a request with Upgrade with a 101 to proto, and
// any other with "plain"; each request's header comes on seen.
func switchingBackend(t *testing.T, proto string) (chan http.Header, *httptest.Server) {
	seen := make(chan http.Header, 4)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		if r.Header.Get("Upgrade") != "" {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "+proto+"\r\nConnection: Upgrade\r\n\r\n")
				conn.Close()
			}
			return
		}
		io.WriteString(w, "plain")
	})
	return seen, be
}

// A tunnel whose client stops reading while the upstream writes, or whose
// upstream stops reading while the client writes, ends at that side's send
// timeout (as nginx's proxy_send_timeout ends it), logged as that side's:
// it held both sockets and their goroutines for ever.
func TestUpgradeTunnelCutWhenOneSideStopsReading(t *testing.T) {
	for _, tc := range []struct {
		name, want string
	}{
		{"client stops reading", "client_send_timeout"},
		{"upstream stops reading", "connection_write_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			up := rawUpstream(t, func(c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				if tc.want == "client_send_timeout" {
					io.Copy(c, zeros{}) // writes until cut
					return
				}
				<-release // reads nothing
			})
			setup, log := withReuseLog()
			setup.listener.SendTimeout = 400 * time.Millisecond
			setup.opts.SendTimeout = 400 * time.Millisecond
			gw := startGatewayWith(t, setup, oneRouteService("http://"+up, "    timeouts: {send: 400ms}"))
			c := dialGateway(t, gw.addr)
			c.(*net.TCPConn).SetReadBuffer(32 << 10)
			io.WriteString(c, upgradeRequest)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v, %v; want 101", resp, err)
			}
			if tc.want == "connection_write_timeout" {
				go io.Copy(c, zeros{}) // the client writes until cut, and reads on
				go io.Copy(io.Discard, c)
			}
			rec := onlyRecord(t, log)
			if rec["status"] != int64(101) || rec["error"] != tc.want {
				t.Errorf("access log: status %v, error %v; want 101, %s", rec["status"], rec["error"], tc.want)
			}
			waitFor(t, 5*time.Second, "no request in flight", func() bool {
				return metricValue(t, gw.g, "meridian_requests_in_flight") == 0
			})
		})
	}
}
