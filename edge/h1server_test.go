package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Tests of h1Server, the gateway's own HTTP/1.x server, over real loopback
// TCP: raw connections for hostile or unusual input, net/http clients and
// httptest backends otherwise.

// h1Raw dials addr and returns the connection with a reader on it.
func h1Raw(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := dialGateway(t, addr)
	return c, bufio.NewReader(c)
}

func h1Write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("writing to the server: %v", err)
	}
}

// h1ReadHead reads a response's status line and header fields exactly as
// sent, without interpreting the framing.
func h1ReadHead(t *testing.T, br *bufio.Reader) (string, http.Header) {
	t.Helper()
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		t.Fatalf("reading a status line: %v", err)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("reading the header after %q: %v", line, err)
	}
	return line, http.Header(h)
}

// startH1Handler serves h itself (no gateway routing) on a loopback
// listener through h1Server.
func startH1Handler(t *testing.T, lo ListenerOptions, h http.Handler) *testGateway {
	t.Helper()
	lo.Handler = h
	return startGatewayWith(t, gatewaySetup{listener: lo}, "")
}

// h1Echo answers with what the server made of the request, after reading
// its whole body.
func h1Echo(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s %s host=%s cl=%d te=%v body=%q trailer=%q",
		r.Method, r.RequestURI, r.Proto, r.Host, r.ContentLength, r.TransferEncoding, b, r.Trailer.Get("X-Trailer"))
}

// echoHostBackend answers with the request line and host it received.
func echoHostBackend(t *testing.T, hits *hitCounter) string {
	t.Helper()
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.inc()
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s host=%s xfh=%s body=%q", r.Method, r.RequestURI, r.Host, r.Header.Get("X-Forwarded-Host"), b)
	})
	return be.URL
}

// h1ServerOf returns the h1Server behind a test gateway.
func h1ServerOf(gw *testGateway) *h1Server { return gw.srv.srv }

// h1OnlyConn returns the one connection the server tracks, or nil.
func h1OnlyConn(s *h1Server) *serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) != 1 {
		return nil
	}
	for c := range s.conns {
		return c
	}
	return nil
}

// h1ActiveConns counts s's connections reading or serving a request.
func h1ActiveConns(s *h1Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if c.state.Load() == connActive {
			n++
		}
	}
	return n
}

func TestH1ServerRefusesMalformedRequests(t *testing.T) {
	var hits hitCounter
	gw := startGatewayWith(t, gatewaySetup{listener: ListenerOptions{MaxHeaderBytes: 1024}}, oneRoute(countingBackend(t, &hits), ""))
	manyFields := func() string {
		var b strings.Builder
		for i := range 40 {
			fmt.Fprintf(&b, "X-Field-%02d: %s\r\n", i, strings.Repeat("v", 20))
		}
		return b.String()
	}()
	// A part of the problem detail some refusals must carry, so that each
	// check is seen to be the one that refused.
	details := map[string]string{
		"obs-fold":                              "folding",
		"obs-fold with tab":                     "folding",
		"two differing Content-Length":          "conflicting",
		"Transfer-Encoding in HTTP/1.0":         "HTTP/1.0",
		"Content-Length then Transfer-Encoding": "smuggling",
		"Transfer-Encoding then Content-Length": "smuggling",
		"two Host headers":                      "more than one Host",
		"chunk size zz":                         "malformed chunked",
		"chunk size 17 hex digits":              "malformed chunked",
		"chunk size after a space":              "malformed chunked",
		"chunk extension with a bare CR":        "malformed chunked",
	}
	const post = "POST / HTTP/1.1\r\nHost: x\r\n"
	const chunked = post + "Transfer-Encoding: chunked\r\n\r\n"
	for _, tc := range []struct {
		name   string
		req    string
		status int
	}{
		// Header field syntax.
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400},
		{"obs-fold with tab", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb: c\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", 400},
		{"space before colon in Host", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
		{"parenthesis in name", "GET / HTTP/1.1\r\nHost: x\r\nX(A): a\r\n\r\n", 400},
		{"quote in name", "GET / HTTP/1.1\r\nHost: x\r\nX\"A: a\r\n\r\n", 400},
		{"empty name", "GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A a\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400},
		{"DEL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 400},
		// Content-Length.
		{"two differing Content-Length", post + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"Content-Length +5", post + "Content-Length: +5\r\n\r\nhello", 400},
		{"Content-Length 5 5", post + "Content-Length: 5 5\r\n\r\nhello", 400},
		{"Content-Length 0x5", post + "Content-Length: 0x5\r\n\r\nhello", 400},
		{"Content-Length -1", post + "Content-Length: -1\r\n\r\n", 400},
		{"Content-Length empty", post + "Content-Length:\r\n\r\n", 400},
		{"Content-Length list", post + "Content-Length: 5, 5\r\n\r\nhello", 400},
		{"Content-Length 19 digits", post + "Content-Length: 1000000000000000000\r\n\r\n", 400},
		// Transfer-Encoding.
		{"Transfer-Encoding gzip", post + "Transfer-Encoding: gzip\r\n\r\n", 501},
		{"Transfer-Encoding chunked, gzip", post + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 501},
		{"Transfer-Encoding gzip, chunked", post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"Transfer-Encoding twice", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501},
		{"Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"Content-Length then Transfer-Encoding", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"Transfer-Encoding then Content-Length", post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
		// Host.
		{"missing Host", "GET / HTTP/1.1\r\nX-A: a\r\n\r\n", 400},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", 400},
		{"two differing Host headers", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400},
		{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"Host with at sign", "GET / HTTP/1.1\r\nHost: user@x\r\n\r\n", 400},
		{"Host with quote", "GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n", 400},
		// Request line.
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"HTTP/3.0", "GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505},
		{"no version", "GET /\r\nHost: x\r\n\r\n", 400},
		{"double space", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"trailing space without version", "GET / \r\nHost: x\r\n\r\n", 400},
		{"lower-case version", "GET / http/1.1\r\nHost: x\r\n\r\n", 400},
		{"method only", "GET\r\nHost: x\r\n\r\n", 400},
		{"garbage line", "HELLO\r\n\r\n", 400},
		{"invalid method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"control char in target", "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"tab in target", "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"DEL in target", "GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"relative target", "GET a HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"too many empty lines", strings.Repeat("\r\n", 5) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		// Expect.
		{"Expect other", "GET / HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n\r\n", 417},
		{"Expect 100-continue and another", post + "Content-Length: 1\r\nExpect: 100-continue\r\nExpect: x\r\n\r\n", 417},
		// Size (MaxHeaderBytes is 1024 here).
		{"header line over the limit", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2000) + "\r\n\r\n", 431},
		{"header line over the read buffer", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 10000) + "\r\n\r\n", 431},
		{"many fields over the limit", "GET / HTTP/1.1\r\nHost: x\r\n" + manyFields + "\r\n", 431},
		{"request line over the limit", "GET /" + strings.Repeat("a", 2000) + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
		// Chunk sizes (found when the gateway reads the body).
		{"chunk size zz", chunked + "zz\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk size 17 hex digits", chunked + "10000000000000000\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk size empty", chunked + "\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk size negative", chunked + "-3\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk size 0x", chunked + "0x3\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk size after a space", chunked + " 3\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk size after a tab", chunked + "\t3\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk extension with a bare CR", chunked + "3;a\rb\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk extension with a NUL", chunked + "3;\x00\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk extension with an unclosed quote", chunked + "3;a=\"x\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk extension of words", chunked + "3;a b c d\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk extension with no name", chunked + "3;=1\r\nabc\r\n0\r\n\r\n", 400},
		{"chunk extension value missing", chunked + "3;a=\r\nabc\r\n0\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.get()
			c, br := h1Raw(t, gw.addr)
			h1Write(t, c, tc.req)
			resp, body := readResponse(t, br, http.MethodGet)
			p := checkProblem(t, resp, body, tc.status, "")
			if p.Title == "" || p.Detail == "" {
				t.Errorf("problem = %+v; want a title and a detail", p)
			}
			if d := details[tc.name]; !strings.Contains(p.Detail, d) {
				t.Errorf("problem detail = %q; want it to mention %q", p.Detail, d)
			}
			// (http.ReadResponse turns Connection: close into resp.Close.)
			if !resp.Close {
				t.Error("the answer lacks Connection: close")
			}
			expectEOF(t, c, br, 5*time.Second)
			if d := hits.get() - before; d != 0 {
				t.Errorf("backend hits = %d; want 0", d)
			}
		})
	}
}

// Headers that do not arrive within ReadHeaderTimeout are answered 408;
// an idle keep-alive connection is closed silently after IdleTimeout.
func TestH1ServerTimeouts(t *testing.T) {
	var hits hitCounter
	gw := startGatewayWith(t, gatewaySetup{listener: ListenerOptions{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}},
		oneRoute(countingBackend(t, &hits), ""))
	t.Run("header timeout", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		start := time.Now()
		h1Write(t, c, "GET / HTTP/1.1\r\nHost: x\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		checkProblem(t, resp, body, http.StatusRequestTimeout, "")
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("answered after %v; want at least the 200ms header timeout", d)
		}
		expectEOF(t, c, br, 5*time.Second)
	})
	t.Run("idle timeout", func(t *testing.T) {
		start := time.Now() // the server's idle wait begins after this
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != `GET /idle body=""` {
			t.Fatalf("got %d %q; want 200 from the backend", resp.StatusCode, body)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(br)
		if isTimeout(err) {
			t.Fatal("idle connection still open after 5s; want it closed after the 300ms idle timeout")
		}
		if len(rest) != 0 {
			t.Errorf("idle connection got %q; want nothing", rest)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("closed %v after the connection opened; want at least the 300ms idle timeout", d)
		}
	})
	t.Run("silent new connection", func(t *testing.T) {
		// Nothing sent at all: closed after the header timeout, not
		// kept for the idle timeout (here the longer one).
		slow := startGatewayWith(t, gatewaySetup{listener: ListenerOptions{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: time.Minute}}, "")
		start := time.Now()
		c, br := h1Raw(t, slow.addr)
		expectEOF(t, c, br, 10*time.Second)
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("closed after %v; want at least the 200ms header timeout", d)
		}
	})
	if n := hits.get(); n != 1 {
		t.Errorf("backend hits = %d; want 1", n)
	}
}

// HTTP/1.0 without Host is served; the connection closes after the answer
// unless the client asked for keep-alive.
func TestH1ServerHTTP10(t *testing.T) {
	var hits hitCounter
	beURL := echoHostBackend(t, &hits)
	beHost := strings.TrimPrefix(beURL, "http://")
	gw := startGateway(t, oneRoute(beURL, ""))

	t.Run("without keep-alive", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /a HTTP/1.0\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		// Without a Host the upstream request names the target itself.
		if want := `GET /a host=` + beHost + ` xfh= body=""`; resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("got %d %q; want 200 %q", resp.StatusCode, body, want)
		}
		// The status line says HTTP/1.1, so resp.Close means the answer
		// said Connection: close (which http.ReadResponse removes).
		if !resp.Close {
			t.Error("the answer lacks Connection: close")
		}
		expectEOF(t, c, br, 5*time.Second)
	})
	t.Run("keep-alive", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		for _, path := range []string{"/k1", "/k2"} {
			h1Write(t, c, "GET "+path+" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			resp, body := readResponse(t, br, http.MethodGet)
			if !strings.HasPrefix(string(body), "GET "+path+" ") || resp.StatusCode != 200 {
				t.Fatalf("%s: got %d %q; want 200 from the backend", path, resp.StatusCode, body)
			}
			if got := resp.Header.Get("Connection"); !strings.EqualFold(got, "keep-alive") {
				t.Errorf("%s: Connection = %q; want keep-alive", path, got)
			}
			if resp.ContentLength != int64(len(body)) {
				t.Errorf("%s: Content-Length = %d; want %d (an HTTP/1.0 keep-alive answer needs a length)", path, resp.ContentLength, len(body))
			}
		}
		// Without keep-alive the last request ends the connection.
		h1Write(t, c, "GET /k3 HTTP/1.0\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "GET /k3 ") {
			t.Fatalf("/k3: got %d %q", resp.StatusCode, body)
		}
		if !resp.Close {
			t.Error("/k3: the answer lacks Connection: close")
		}
		expectEOF(t, c, br, 5*time.Second)
	})
	t.Run("HTTP/1.1 Connection close", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, _ := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || !resp.Close {
			t.Errorf("got %d, Connection: close %v; want 200 with Connection: close", resp.StatusCode, resp.Close)
		}
		expectEOF(t, c, br, 5*time.Second)
	})
	if n := hits.get(); n != 5 {
		t.Errorf("backend hits = %d; want 5", n)
	}
}

// Pipelined requests, one with a chunked body carrying chunk extensions and
// a trailer, are answered in order, and the handler sees the trailer.
func TestH1ServerPipelinedRequests(t *testing.T) {
	reqs := "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"3;ext=1\r\nabc\r\n2;a=b;c=\"d;e\"\r\nde\r\n0;last\r\nX-Trailer: t\r\n\r\n" +
		"POST /3 HTTP/1.1\r\nHost: y\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
	want := []string{
		`GET /1 HTTP/1.1 host=x cl=0 te=[] body="" trailer=""`,
		`POST /2 HTTP/1.1 host=x cl=-1 te=[chunked] body="abcde" trailer="t"`,
		`POST /3 HTTP/1.1 host=y cl=5 te=[] body="hello" trailer=""`,
	}
	t.Run("handler", func(t *testing.T) {
		gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(h1Echo))
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, reqs) // one write
		for i, w := range want {
			resp, body := readResponse(t, br, http.MethodPost)
			if resp.StatusCode != 200 || string(body) != w {
				t.Errorf("response %d: %d %q; want 200 %q", i+1, resp.StatusCode, body, w)
			}
			if resp.Close {
				t.Errorf("response %d says Connection: close; want keep-alive", i+1)
			}
		}
	})
	t.Run("gateway", func(t *testing.T) {
		var hits hitCounter
		gw := startGateway(t, oneRoute(countingBackend(t, &hits), ""))
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, reqs)
		for i, w := range []string{`GET /1 body=""`, `POST /2 body="abcde"`, `POST /3 body="hello"`} {
			resp, body := readResponse(t, br, http.MethodPost)
			if resp.StatusCode != 200 || string(body) != w {
				t.Errorf("response %d: %d %q; want 200 %q", i+1, resp.StatusCode, body, w)
			}
		}
		if n := hits.get(); n != 3 {
			t.Errorf("backend hits = %d; want 3", n)
		}
	})
}

// Empty lines before a request line are skipped (RFC 9112 2.2), on a new
// connection and between requests.
func TestH1ServerLeadingEmptyLines(t *testing.T) {
	var hits hitCounter
	gw := startGateway(t, oneRoute(countingBackend(t, &hits), ""))
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := readResponse(t, br, http.MethodGet)
	if resp.StatusCode != 200 || string(body) != `GET /x body=""` {
		t.Errorf("first: %d %q; want 200 from the backend", resp.StatusCode, body)
	}
	h1Write(t, c, "\n\r\n\nGET /y HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body = readResponse(t, br, http.MethodGet)
	if resp.StatusCode != 200 || string(body) != `GET /y body=""` {
		t.Errorf("second: %d %q; want 200 from the backend", resp.StatusCode, body)
	}
	if n := hits.get(); n != 2 {
		t.Errorf("backend hits = %d; want 2", n)
	}
}

// An absolute-form target's authority replaces Host (RFC 9112 3.2.2); the
// upstream gets the origin form and that host.
func TestH1ServerAbsoluteFormTarget(t *testing.T) {
	var hits hitCounter
	var logBuf syncBuffer
	gw := startGatewayWith(t, gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}}, oneRoute(echoHostBackend(t, &hits), ""))
	for i, tc := range []struct{ target, want, logged string }{
		{"http://example.test/x?q=1", `GET /x?q=1 host=example.test xfh=example.test body=""`, "/x"},
		{"http://example.test:8080/y", `GET /y host=example.test:8080 xfh=example.test:8080 body=""`, "/y"},
		{"http://example.test", `GET / host=example.test xfh=example.test body=""`, "/"}, // logged as forwarded
	} {
		c, br := h1Raw(t, gw.addr)
		id := "abs-" + strconv.Itoa(i)
		h1Write(t, c, "GET "+tc.target+" HTTP/1.1\r\nHost: other.test\r\nX-Request-Id: "+id+"\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != tc.want {
			t.Errorf("GET %s: %d %q; want 200 %q", tc.target, resp.StatusCode, body, tc.want)
		}
		waitFor(t, 5*time.Second, "the access log record", func() bool { return logBuf.records(t)[id] != nil })
		if p := logBuf.records(t)[id]["path"]; p != tc.logged {
			t.Errorf("GET %s logged with path %v; want %q", tc.target, p, tc.logged)
		}
	}
	t.Run("handler", func(t *testing.T) {
		gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "host=%s uri=%s url.host=%s path=%s", r.Host, r.RequestURI, r.URL.Host, r.URL.Path)
		}))
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET http://example.test/x HTTP/1.1\r\nHost: other.test\r\n\r\n")
		_, body := readResponse(t, br, http.MethodGet)
		if want := "host=example.test uri=http://example.test/x url.host=example.test path=/x"; string(body) != want {
			t.Errorf("handler saw %q; want %q", body, want)
		}
	})
}

// A request target that is neither a path nor an http(s) URI with a host
// and no userinfo is refused (RFC 9112 3.2, RFC 9110 4.2.1 and 4.2.4),
// not routed by whatever path it holds; HTTPS:// in capitals is an https
// URI.
func TestH1ServerRefusesOtherTargets(t *testing.T) {
	var hits hitCounter
	gw := startGateway(t, oneRoute(countingBackend(t, &hits), ""))
	for _, tc := range []struct{ method, target string }{
		{"GET", "http:///api/x"},
		{"GET", "ftp://a/api/x"},
		{"GET", "javascript:alert(1)"},
		{"GET", "mailto:/api/x"},
		{"GET", "a:80"},
		{"connect", "a:443"}, // not CONNECT: methods are case-sensitive
		{"GET", "http://u:p@a/api/x"},
	} {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, tc.method+" "+tc.target+" HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := readResponse(t, br, tc.method)
		checkProblem(t, resp, body, http.StatusBadRequest, "")
		expectEOF(t, c, br, 5*time.Second)
	}
	if n := hits.get(); n != 0 {
		t.Errorf("backend hits = %d; want 0", n)
	}
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "GET HTTPS://a/x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := readResponse(t, br, http.MethodGet); resp.StatusCode != 200 {
		t.Errorf("GET HTTPS://a/x: %d %s; want 200", resp.StatusCode, body)
	}
}

// OPTIONS * is answered by the server itself (logged and counted like any
// request), and the connection goes on.
func TestH1ServerOptionsStar(t *testing.T) {
	var hits hitCounter
	var logBuf syncBuffer
	gw := startGatewayWith(t, gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}}, oneRoute(countingBackend(t, &hits), ""))
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := readResponse(t, br, http.MethodOptions)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") != "0" {
		t.Errorf("OPTIONS *: %d, Content-Length %q, body %q; want 200, 0, empty", resp.StatusCode, resp.Header.Get("Content-Length"), body)
	}
	if n := hits.get(); n != 0 {
		t.Errorf("backend hits after OPTIONS * = %d; want 0", n)
	}
	if rec := logBuf.only(t, "the OPTIONS * record"); rec["method"] != "OPTIONS" || rec["path"] != "*" || rec["status"] != float64(200) || rec["route"] != "" {
		t.Errorf("OPTIONS * record: %v", rec)
	}
	if v := metricValue(t, gw.g, `meridian_requests_total{code="2xx",method="OPTIONS",route=""}`); v != 1 {
		t.Errorf("OPTIONS * counted %v times; want 1", v)
	}
	h1Write(t, c, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body = readResponse(t, br, http.MethodGet)
	if resp.StatusCode != 200 || string(body) != `GET /after body=""` {
		t.Errorf("GET after OPTIONS *: %d %q", resp.StatusCode, body)
	}
	if n := hits.get(); n != 1 {
		t.Errorf("backend hits = %d; want 1", n)
	}
	// OPTIONS http://host, which a proxy forwards as OPTIONS * (RFC 9112
	// 3.2.4), is the same question; OPTIONS http://host/ asks about "/".
	h1Write(t, c, "OPTIONS http://x HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body = readResponse(t, br, http.MethodOptions); resp.StatusCode != 200 || len(body) != 0 || hits.get() != 1 {
		t.Errorf("OPTIONS http://x: %d %q, backend hits %d; want the server's own 200, 1 hit", resp.StatusCode, body, hits.get())
	}
	h1Write(t, c, "OPTIONS http://x/ HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ = readResponse(t, br, http.MethodOptions); resp.StatusCode != 200 || hits.get() != 2 {
		t.Errorf("OPTIONS http://x/: %d, backend hits %d; want the backend's answer, 2 hits", resp.StatusCode, hits.get())
	}
}

// HEAD is answered without a body, keeping Content-Length; the next
// response on the connection parses, which shows no body bytes were sent.
func TestH1ServerHead(t *testing.T) {
	t.Run("gateway", func(t *testing.T) {
		be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "11")
			io.WriteString(w, "hello world")
		})
		gw := startGateway(t, oneRoute(be.URL, ""))
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
		status, h := h1ReadHead(t, br)
		if status != "HTTP/1.1 200 OK" || h.Get("Content-Length") != "11" || h.Get("Transfer-Encoding") != "" {
			t.Errorf("HEAD: %q, Content-Length %q, Transfer-Encoding %q; want 200, 11, none", status, h.Get("Content-Length"), h.Get("Transfer-Encoding"))
		}
		h1Write(t, c, "GET /h HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != "hello world" {
			t.Errorf("GET after HEAD: %d %q; want 200 hello world", resp.StatusCode, body)
		}
	})
	t.Run("handler without Content-Length", func(t *testing.T) {
		gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			w.Write(bytes.Repeat([]byte("b"), n))
		}))
		c, br := h1Raw(t, gw.addr)
		for _, n := range []int{100, 5000} {
			h1Write(t, c, fmt.Sprintf("HEAD /?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", n))
			status, h := h1ReadHead(t, br)
			if status != "HTTP/1.1 200 OK" || h.Get("Content-Length") != strconv.Itoa(n) || h.Get("Transfer-Encoding") != "" {
				t.Errorf("HEAD n=%d: %q, Content-Length %q, Transfer-Encoding %q; want 200, %d, none", n, status, h.Get("Content-Length"), h.Get("Transfer-Encoding"), n)
			}
		}
		h1Write(t, c, "GET /?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != "bbb" {
			t.Errorf("GET after HEADs: %d %q; want 200 bbb", resp.StatusCode, body)
		}
	})
}

// Expect: 100-continue gets "100 Continue" before the client sends the
// body, then the final answer.
func TestH1ServerExpectContinue(t *testing.T) {
	var hits hitCounter
	gw := startGateway(t, oneRoute(countingBackend(t, &hits), ""))
	for _, tc := range []struct {
		name, head, body, want string
	}{
		{"content-length", "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", "hello", `POST /up body="hello"`},
		{"chunked", "POST /upc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-Continue\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n", `POST /upc body="hello"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := h1Raw(t, gw.addr)
			h1Write(t, c, tc.head)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := br.ReadString('\n')
			if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
				t.Fatalf("first line = %q, %v; want HTTP/1.1 100 Continue", line, err)
			}
			if l, err := br.ReadString('\n'); err != nil || l != "\r\n" {
				t.Fatalf("after 100 Continue: %q, %v; want the empty line", l, err)
			}
			h1Write(t, c, tc.body)
			resp, body := readResponse(t, br, http.MethodPost)
			if resp.StatusCode != 200 || string(body) != tc.want {
				t.Errorf("final: %d %q; want 200 %q", resp.StatusCode, body, tc.want)
			}
			// The connection goes on.
			h1Write(t, c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, body = readResponse(t, br, http.MethodGet)
			if resp.StatusCode != 200 || string(body) != `GET /next body=""` {
				t.Errorf("next: %d %q", resp.StatusCode, body)
			}
		})
	}
	t.Run("refused without reading", func(t *testing.T) {
		gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no uploads", http.StatusForbidden)
		}))
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodPut)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "no uploads") {
			t.Errorf("got %d %q; want the final 403 without a 100 Continue first", resp.StatusCode, body)
		}
		// The body was never asked for, so the connection cannot go on.
		expectEOF(t, c, br, 5*time.Second)
	})
}

// A response of unknown length is chunked once it outgrows the 2 KiB held
// back, and sent with Content-Length when it ends within it.
func TestH1ServerResponseFraming(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 640) // 10 KiB
	t.Run("gateway", func(t *testing.T) {
		be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/big":
				io.WriteString(w, big) // beyond net/http's buffer: chunked from the backend too
			default:
				io.WriteString(w, "small")
			}
		})
		gw := startGateway(t, oneRoute(be.URL, ""))
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if string(body) != big {
			t.Errorf("/big: got %d bytes; want the 10 KiB body", len(body))
		}
		if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.ContentLength != -1 {
			t.Errorf("/big: Transfer-Encoding %v, Content-Length %d; want chunked, none", resp.TransferEncoding, resp.ContentLength)
		}
		h1Write(t, c, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body = readResponse(t, br, http.MethodGet)
		if string(body) != "small" || resp.ContentLength != 5 || len(resp.TransferEncoding) != 0 {
			t.Errorf("/small: %q, Content-Length %d, Transfer-Encoding %v; want small, 5, none", body, resp.ContentLength, resp.TransferEncoding)
		}
	})
	t.Run("handler", func(t *testing.T) {
		gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			for _, s := range q["w"] {
				n, _ := strconv.Atoi(s)
				w.Write(bytes.Repeat([]byte("x"), n))
			}
			if q.Get("flush") != "" {
				w.(http.Flusher).Flush()
			}
		}))
		for _, tc := range []struct {
			query   string
			proto   string
			size    int
			chunked bool
		}{
			{"w=100", "HTTP/1.1", 100, false},
			{"w=2048", "HTTP/1.1", 2048, false},
			{"w=1000&w=1048", "HTTP/1.1", 2048, false},
			{"w=2049", "HTTP/1.1", 2049, true},
			{"w=1500&w=1500", "HTTP/1.1", 3000, true},
			{"w=10&flush=1", "HTTP/1.1", 10, true},
			{"w=0", "HTTP/1.1", 0, false},
			{"w=100", "HTTP/1.0", 100, false},
		} {
			c, br := h1Raw(t, gw.addr)
			h1Write(t, c, "GET /?"+tc.query+" "+tc.proto+"\r\nHost: x\r\n\r\n")
			resp, body := readResponse(t, br, http.MethodGet)
			if len(body) != tc.size {
				t.Errorf("%s %s: %d body bytes; want %d", tc.proto, tc.query, len(body), tc.size)
			}
			isChunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
			if isChunked != tc.chunked {
				t.Errorf("%s %s: Transfer-Encoding %v; want chunked %v", tc.proto, tc.query, resp.TransferEncoding, tc.chunked)
			}
			if !tc.chunked && resp.Header.Get("Content-Length") != strconv.Itoa(tc.size) {
				t.Errorf("%s %s: Content-Length %q; want %d", tc.proto, tc.query, resp.Header.Get("Content-Length"), tc.size)
			}
		}
		// HTTP/1.0 cannot take chunks: a long body of unknown length is
		// ended by the close.
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /?w=5000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		status, h := h1ReadHead(t, br)
		if status != "HTTP/1.1 200 OK" || h.Get("Transfer-Encoding") != "" || h.Get("Content-Length") != "" || h.Get("Connection") != "close" {
			t.Errorf("HTTP/1.0 long body: %q %v; want 200 without framing and Connection: close", status, h)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(br)
		if err != nil || len(rest) != 5000 {
			t.Errorf("HTTP/1.0 long body: read %d bytes, %v; want 5000 up to the close", len(rest), err)
		}
	})
}

// 204 and 304 answers carry no body and no Transfer-Encoding.
func TestH1ServerBodylessStatuses(t *testing.T) {
	t.Run("gateway", func(t *testing.T) {
		be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/204":
				w.WriteHeader(http.StatusNoContent)
			case "/304":
				w.Header().Set("ETag", `"v1"`)
				w.WriteHeader(http.StatusNotModified)
			default:
				io.WriteString(w, "ok")
			}
		})
		gw := startGateway(t, oneRoute(be.URL, ""))
		c, br := h1Raw(t, gw.addr)
		for _, tc := range []struct{ path, status string }{
			{"/204", "HTTP/1.1 204 No Content"},
			{"/304", "HTTP/1.1 304 Not Modified"},
		} {
			h1Write(t, c, "GET "+tc.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			status, h := h1ReadHead(t, br)
			if status != tc.status {
				t.Errorf("%s: status %q; want %q", tc.path, status, tc.status)
			}
			if te := h.Values("Transfer-Encoding"); len(te) != 0 {
				t.Errorf("%s: Transfer-Encoding %v; want none", tc.path, te)
			}
			if tc.path == "/204" && h.Get("Content-Length") != "" {
				t.Errorf("204: Content-Length %q; want none", h.Get("Content-Length"))
			}
		}
		// No body bytes came after either head: the next answer parses.
		h1Write(t, c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Errorf("after 204 and 304: %d %q; want 200 ok", resp.StatusCode, body)
		}
	})
	t.Run("handler writing a body anyway", func(t *testing.T) {
		errs := make(chan error, 2)
		gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/204":
				w.WriteHeader(http.StatusNoContent)
			case "/304":
				w.WriteHeader(http.StatusNotModified)
			default:
				io.WriteString(w, "ok")
				return
			}
			_, err := w.Write([]byte(strings.Repeat("z", 3000)))
			errs <- err
		}))
		c, br := h1Raw(t, gw.addr)
		for _, path := range []string{"/204", "/304"} {
			h1Write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			status, h := h1ReadHead(t, br)
			if !strings.HasPrefix(status, "HTTP/1.1 "+path[1:]+" ") || len(h.Values("Transfer-Encoding")) != 0 || h.Get("Content-Length") != "" {
				t.Errorf("%s: %q %v; want the status without framing headers", path, status, h)
			}
			if err := recv(t, errs, "the handler's Write"); !errors.Is(err, http.ErrBodyNotAllowed) {
				t.Errorf("%s: Write = %v; want http.ErrBodyNotAllowed", path, err)
			}
		}
		h1Write(t, c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Errorf("after 204 and 304: %d %q; want 200 ok", resp.StatusCode, body)
		}
	})
}

// A client that hangs up while its request runs cancels the request's
// context, and through the gateway the upstream request.
func TestH1ServerClientDisconnectCancelsRequest(t *testing.T) {
	// blocking waits for its request to be canceled; stop (closed when
	// the test ends) lets it go if that never happens.
	blocking := func(entered chan<- struct{}, canceled chan<- time.Duration, stop <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			entered <- struct{}{}
			start := time.Now()
			select {
			case <-r.Context().Done():
				canceled <- time.Since(start)
			case <-stop:
				io.WriteString(w, "not canceled")
			}
		}
	}
	check := func(t *testing.T, addr string, entered <-chan struct{}, canceled <-chan time.Duration, req string) {
		t.Helper()
		c, _ := h1Raw(t, addr)
		h1Write(t, c, req)
		recv(t, entered, "the request to reach the handler")
		c.Close()
		select {
		case d := <-canceled:
			t.Logf("canceled %v after the handler started", d)
		case <-time.After(5 * time.Second):
			t.Fatal("the request's context was not canceled within 5s of the client closing")
		}
	}
	const get = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
	t.Run("gateway", func(t *testing.T) {
		entered, canceled, stop := make(chan struct{}, 1), make(chan time.Duration, 1), make(chan struct{})
		be := newBackend(t, blocking(entered, canceled, stop))
		gw := startGateway(t, oneRoute(be.URL, ""))
		t.Cleanup(func() { close(stop) })
		check(t, gw.addr, entered, canceled, get)
	})
	t.Run("gateway with a request body", func(t *testing.T) {
		entered, canceled, stop := make(chan struct{}, 1), make(chan time.Duration, 1), make(chan struct{})
		h := blocking(entered, canceled, stop)
		// net/http notices its client (here the gateway) going away only
		// once the handler has read the body.
		be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			h(w, r)
		})
		gw := startGateway(t, oneRoute(be.URL, ""))
		t.Cleanup(func() { close(stop) })
		check(t, gw.addr, entered, canceled, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	})
	t.Run("handler", func(t *testing.T) {
		entered, canceled, stop := make(chan struct{}, 1), make(chan time.Duration, 1), make(chan struct{})
		gw := startH1Handler(t, ListenerOptions{}, blocking(entered, canceled, stop))
		t.Cleanup(func() { close(stop) })
		check(t, gw.addr, entered, canceled, get)
	})
	t.Run("handler that read a chunked body", func(t *testing.T) {
		entered, canceled, stop := make(chan struct{}, 1), make(chan time.Duration, 1), make(chan struct{})
		h := blocking(entered, canceled, stop)
		gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			h(w, r)
		}))
		t.Cleanup(func() { close(stop) })
		check(t, gw.addr, entered, canceled, "POST /slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	})
}

// A client that half-closes its connection after a whole request (shutdown
// of its write side) looks gone to the disconnect watch, which cancels the
// request upstream, as nginx does. The client must then get no answer at
// all: before, the gateway's handler returned without one and the server
// wrote its default "200 OK" with an empty body, while the access log said
// 499.
func TestH1ServerHalfCloseGetsNoInventedAnswer(t *testing.T) {
	canceled := make(chan struct{}, 1)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			canceled <- struct{}{}
		case <-stop:
		case <-time.After(10 * time.Second):
			io.WriteString(w, "real body")
		}
	})
	setup, log := withReuseLog()
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	recv(t, canceled, "the upstream request to be canceled")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(br)
	if len(got) > 0 || err != nil {
		t.Fatalf("after the half-close the client read %q (error %v); want the connection closed without an answer", got, err)
	}
	waitFor(t, 5*time.Second, "the access log record", func() bool { return log.count() == 1 })
	log.mu.Lock()
	rec := log.recs[0]
	log.mu.Unlock()
	if rec["status"] != int64(499) || rec["error"] != "client_canceled" {
		t.Errorf("access log: status %v, error %v; want 499, client_canceled", rec["status"], rec["error"])
	}
}

// The disconnect watch reads one byte; when that byte is the start of the
// next pipelined request, the running request is not canceled and the next
// request is served whole.
func TestH1ServerDisconnectWatchKeepsPipelinedByte(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
			return
		}
		entered <- struct{}{}
		select {
		case <-release:
			io.WriteString(w, "released")
		case <-r.Context().Done():
			io.WriteString(w, "canceled")
		}
	}))
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, entered, "the slow request to start")
	h1Write(t, c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	// Wait until the watch has run and taken the first byte of /next.
	s := h1ServerOf(gw)
	waitFor(t, 5*time.Second, "the disconnect watch to read the next request's first byte", func() bool {
		sc := h1OnlyConn(s)
		if sc == nil {
			return false
		}
		sc.wmu.Lock()
		done := sc.wdone
		sc.wmu.Unlock()
		if done == nil {
			return false
		}
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	close(release)
	resp, body := readResponse(t, br, http.MethodGet)
	if resp.StatusCode != 200 || string(body) != "released" {
		t.Errorf("slow: %d %q; want 200 released (not canceled)", resp.StatusCode, body)
	}
	resp, body = readResponse(t, br, http.MethodGet)
	if resp.StatusCode != 200 || string(body) != "GET /next" {
		t.Errorf("next: %d %q; want 200 \"GET /next\"", resp.StatusCode, body)
	}
}

// A request body the handler leaves unread: the client gets the answer; a
// small rest is read and dropped so the connection goes on, a large one
// closes the connection.
func TestH1ServerUnreadRequestBody(t *testing.T) {
	early := func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "early %s", r.URL.Path) }
	run := func(t *testing.T, addr string) {
		t.Run("100KiB keeps the connection", func(t *testing.T) {
			c, br := h1Raw(t, addr)
			const n = 100 << 10
			wrote := make(chan error, 1)
			go func() {
				_, err := io.WriteString(c, "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n"+strings.Repeat("s", n))
				wrote <- err
			}()
			resp, body := readResponse(t, br, http.MethodPost)
			if resp.StatusCode != 200 || string(body) != "early /small" {
				t.Fatalf("got %d %q; want 200 \"early /small\"", resp.StatusCode, body)
			}
			if err := recv(t, wrote, "the body to be written"); err != nil {
				t.Fatalf("writing the body: %v", err)
			}
			h1Write(t, c, "GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, body = readResponse(t, br, http.MethodGet)
			if resp.StatusCode != 200 || string(body) != "early /second" {
				t.Errorf("second request: %d %q; want 200 \"early /second\"", resp.StatusCode, body)
			}
		})
		t.Run("8MiB closes the connection", func(t *testing.T) {
			c, br := h1Raw(t, addr)
			const n = 8 << 20
			wrote := make(chan error, 1)
			go func() {
				_, err := io.WriteString(c, "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n"+strings.Repeat("b", n))
				wrote <- err
			}()
			resp, body := readResponse(t, br, http.MethodPost)
			if resp.StatusCode != 200 || string(body) != "early /big" {
				t.Fatalf("got %d %q; want 200 \"early /big\"", resp.StatusCode, body)
			}
			expectEOF(t, c, br, 5*time.Second)
			c.Close()
			recv(t, wrote, "the body writer to stop")
		})
	}
	t.Run("gateway", func(t *testing.T) {
		be := newBackend(t, early)
		gw := startGateway(t, oneRoute(be.URL, "    limits:\n      max_request_body: 64MiB\n"))
		run(t, gw.addr)
	})
	t.Run("handler", func(t *testing.T) {
		gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(early))
		run(t, gw.addr)
	})
}

// The rest of a body the handler left unread, waited for so that the
// connection can go on, is waited for no longer than a head would be: a
// client that never sends it is cut off, not kept forever.
func TestH1ServerUnreadBodyRestIsWaitedForBounded(t *testing.T) {
	gw := startH1Handler(t, ListenerOptions{ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: time.Minute},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "early") }))
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n0123456789")
	resp, body := readResponse(t, br, http.MethodPost)
	if resp.StatusCode != 200 || string(body) != "early" || resp.Close {
		t.Fatalf("got %d %q close=%v; want 200 \"early\" on a kept connection (the rest is under 256 KiB)", resp.StatusCode, body, resp.Close)
	}
	start := time.Now()
	expectEOF(t, c, br, 5*time.Second)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("closed after %v; want the rest waited for about the header timeout (300ms)", d)
	}
}

// When the server will close the connection after an answer because the
// request body was left unread (too large to drop, or never asked for with
// 100-continue), the answer should say so (RFC 9110 10.1.1: a server that
// answers before reading the whole content SHOULD indicate whether it will
// close; net/http sends Connection: close in both cases). The head is only
// sent after the handler returned, so the server knows.
func TestH1ServerAnnouncesCloseWhenBodyLeftUnread(t *testing.T) {
	gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "early %s", r.URL.Path)
	}))
	t.Run("large body", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		const n = 8 << 20
		go io.WriteString(c, "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n"+strings.Repeat("b", n))
		resp, _ := readResponse(t, br, http.MethodPost)
		if !resp.Close {
			t.Error("the answer before an unread 8 MiB body lacks Connection: close, yet the server closes the connection")
		}
		expectEOF(t, c, br, 5*time.Second)
	})
	t.Run("large chunked body", func(t *testing.T) {
		// The rest's size is unknown until it is read; net/http drains up
		// to its limit before writing the head when the handler has
		// returned, and so knows.
		c, br := h1Raw(t, gw.addr)
		go func() {
			io.WriteString(c, "POST /bigc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
			chunk := fmt.Sprintf("%x\r\n%s\r\n", 64<<10, strings.Repeat("c", 64<<10))
			for range 128 { // 8 MiB
				if _, err := io.WriteString(c, chunk); err != nil {
					return
				}
			}
			io.WriteString(c, "0\r\n\r\n")
		}()
		resp, _ := readResponse(t, br, http.MethodPost)
		if !resp.Close {
			t.Error("the answer before an unread 8 MiB chunked body lacks Connection: close, yet the server closes the connection")
		}
		expectEOF(t, c, br, 5*time.Second)
	})
	t.Run("expect 100-continue never answered", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		resp, _ := readResponse(t, br, http.MethodPut)
		if !resp.Close {
			t.Error("the answer without 100 Continue lacks Connection: close, yet the server closes the connection")
		}
		expectEOF(t, c, br, 5*time.Second)
	})
}

// listenH1 serves the gateway on a listener of its own, for tests that
// shut it down themselves.
func listenH1(t *testing.T, yaml string) (*Server, string, <-chan error) {
	t.Helper()
	g := New(Options{})
	t.Cleanup(g.Close)
	g.Swap(compileDoc(t, g, yaml, 1, nil))
	srv, err := g.Listen(ListenerOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx) // in case the test stopped before its own
	})
	return srv, srv.Addr().String(), served
}

func TestH1ServerShutdownClosesIdleConnection(t *testing.T) {
	var hits hitCounter
	srv, addr, served := listenH1(t, oneRoute(countingBackend(t, &hits), ""))
	c, br := h1Raw(t, addr)
	h1Write(t, c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ := readResponse(t, br, http.MethodGet)
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("got %d, close %v; want 200 keep-alive", resp.StatusCode, resp.Close)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v; want nil", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v with only an idle connection; want it prompt", d)
	}
	expectEOF(t, c, br, 2*time.Second)
	if err := recv(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve = %v; want nil", err)
	}
}

func TestH1ServerShutdownLetsInFlightRequestFinish(t *testing.T) {
	url, entered, release := blockingBackend(t, "finished")
	srv, addr, served := listenH1(t, oneRoute(url, ""))
	c, br := h1Raw(t, addr)
	h1Write(t, c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, entered, "the request to reach the backend")

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- srv.Shutdown(ctx)
	}()
	waitFor(t, 5*time.Second, "Shutdown to begin", func() bool { return srv.srv.shutting.Load() })
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while a request was in flight", err)
	default:
	}
	close(release)
	resp, body := readResponse(t, br, http.MethodGet)
	if resp.StatusCode != 200 || string(body) != "finished" {
		t.Errorf("in-flight request: %d %q; want 200 finished", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Error("the in-flight answer lacks Connection: close during shutdown")
	}
	expectEOF(t, c, br, 5*time.Second)
	if err := recv(t, shutdown, "Shutdown to return"); err != nil {
		t.Errorf("Shutdown = %v; want nil", err)
	}
	if err := recv(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve = %v; want nil", err)
	}
}

// A panicking handler gets a 500 when nothing was sent yet, a cut response
// otherwise; the server goes on serving.
func TestH1ServerHandlerPanic(t *testing.T) {
	partial := strings.Repeat("p", 3000)
	gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/panic-after-small-write":
			io.WriteString(w, "partial")
			panic("boom")
		case "/abort":
			io.WriteString(w, partial)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		default:
			io.WriteString(w, "ok "+r.URL.Path)
		}
	}))
	ok := func(t *testing.T, c net.Conn, br *bufio.Reader, path string) {
		t.Helper()
		h1Write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != "ok "+path {
			t.Errorf("%s: %d %q; want 200 \"ok %s\"", path, resp.StatusCode, body, path)
		}
	}
	a, abr := h1Raw(t, gw.addr)
	ok(t, a, abr, "/a1")

	for _, path := range []string{"/panic", "/panic-after-small-write"} {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		checkProblem(t, resp, body, http.StatusInternalServerError, "")
		if strings.Contains(string(body), "partial") {
			t.Errorf("%s: 500 body %q carries the handler's partial output", path, body)
		}
		expectEOF(t, c, br, 5*time.Second)
	}

	// Other connections, old and new, are still served.
	ok(t, a, abr, "/a2")
	b, bbr := h1Raw(t, gw.addr)
	ok(t, b, bbr, "/b")

	t.Run("ErrAbortHandler cuts a chunked response", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /abort HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("reading the head: %v", err)
		}
		if resp.StatusCode != 200 || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
			t.Fatalf("got %d, Transfer-Encoding %v; want 200 chunked", resp.StatusCode, resp.TransferEncoding)
		}
		got, err := io.ReadAll(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("reading the body: %v; want io.ErrUnexpectedEOF (no last chunk)", err)
		}
		if string(got) != partial {
			t.Errorf("got %d body bytes; want the %d written before the abort", len(got), len(partial))
		}
	})
	t.Run("ErrAbortHandler with net/http client", func(t *testing.T) {
		resp, err := newClient(t).Get(gw.url + "/abort")
		if err != nil {
			t.Fatalf("GET /abort: %v", err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Error("reading the aborted body succeeded; want an error")
		}
	})
	ok(t, b, bbr, "/b2")
}

// Lines longer than the server's 4 KiB read buffer are gathered whole,
// and what the handler sees of the request line survives them.
func TestH1ServerLongLines(t *testing.T) {
	gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s path=%d big=%d pad=%d", r.Method, r.Proto, len(r.URL.Path), len(r.Header.Get("X-Big")), len(r.Header.Get("X-Pad-2")))
	}))
	c, br := h1Raw(t, gw.addr)
	path := "/" + strings.Repeat("p", 6000)
	h1Write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", 9000)+"\r\n\r\n")
	resp, body := readResponse(t, br, http.MethodGet)
	if want := "GET HTTP/1.1 path=6001 big=9000 pad=0"; resp.StatusCode != 200 || string(body) != want {
		t.Errorf("got %d %q; want 200 %q", resp.StatusCode, body, want)
	}
	t.Run("HTTP/1.x minor version", func(t *testing.T) {
		// Accepted as HTTP/1.x; the handler must see the version the
		// client sent even after header bytes refilled the read buffer.
		c, br := h1Raw(t, gw.addr)
		var b strings.Builder
		b.WriteString("GET /v HTTP/1.7\r\nHost: x\r\n")
		for i := range 4 {
			fmt.Fprintf(&b, "X-Pad-%d: %s\r\n", i, strings.Repeat(string(rune('a'+i)), 2000))
		}
		b.WriteString("\r\n")
		h1Write(t, c, b.String())
		resp, body := readResponse(t, br, http.MethodGet)
		if want := "GET HTTP/1.7 path=2 big=0 pad=2000"; resp.StatusCode != 200 || string(body) != want {
			t.Errorf("got %d %q; want 200 %q", resp.StatusCode, body, want)
		}
	})
}

// A request line whose version is HTTP/1.x followed by junk, or not a
// version at all, is malformed (400, as net/http answers), not a version
// the server does not support (505 is for another major version).
func TestH1ServerMalformedVersionIs400(t *testing.T) {
	var hits hitCounter
	gw := startGateway(t, oneRoute(countingBackend(t, &hits), ""))
	for _, tc := range []struct {
		version string
		status  int
	}{
		{"HTTP/1.1 ", 400},
		{"HTTP/1.1 x", 400},
		{"HTTP/1.10", 400},
		{"HTTP/1.1x", 400},
		{"HTTP/a.b", 400},
		{"HTTP/2.0", 505},
		{"HTTP/0.9", 505},
	} {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET / "+tc.version+"\r\nHost: x\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != tc.status {
			t.Errorf("version %q: status %d (%s); want %d", tc.version, resp.StatusCode, bytes.TrimSpace(body), tc.status)
		}
		expectEOF(t, c, br, 5*time.Second)
	}
	if n := hits.get(); n != 0 {
		t.Errorf("backend hits = %d; want 0", n)
	}
}

// The parser's own bound on header fields (1000, Host included) holds when
// the byte limit would allow more.
func TestH1ServerHeaderFieldCountLimit(t *testing.T) {
	gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "fields=%d", len(r.Header))
	}))
	fields := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "X-%d: v\r\n", i)
		}
		return b.String()
	}
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "GET / HTTP/1.1\r\nHost: x\r\n"+fields(999)+"\r\n")
	resp, body := readResponse(t, br, http.MethodGet)
	if resp.StatusCode != 200 || string(body) != "fields=999" {
		t.Errorf("1000 fields: %d %q; want 200 fields=999", resp.StatusCode, body)
	}
	c, br = h1Raw(t, gw.addr)
	h1Write(t, c, "GET / HTTP/1.1\r\nHost: x\r\n"+fields(1000)+"\r\n")
	resp, body = readResponse(t, br, http.MethodGet)
	checkProblem(t, resp, body, http.StatusRequestHeaderFieldsTooLarge, "")
	expectEOF(t, c, br, 5*time.Second)
}

// A handler cannot split the response head with newlines in values or
// write fields with invalid names.
func TestH1ServerResponseHeaderSanitized(t *testing.T) {
	gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Inj"] = []string{"a\r\nSet-Cookie: evil=1"}
		w.Header()["Bad Name"] = []string{"v"}
		w.Header()["X-Lf"] = []string{"b\nX-Evil: 1"}
		io.WriteString(w, "ok")
	}))
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	status, h := h1ReadHead(t, br)
	if status != "HTTP/1.1 200 OK" {
		t.Fatalf("status %q", status)
	}
	if h.Get("Set-Cookie") != "" || h.Get("X-Evil") != "" {
		t.Errorf("head was split: %v", h)
	}
	if got := h.Get("X-Inj"); got != "a  Set-Cookie: evil=1" {
		t.Errorf("X-Inj = %q; want the newlines as spaces", got)
	}
	if _, ok := h["Bad Name"]; ok {
		t.Errorf("a field with an invalid name was written: %v", h)
	}
	body := make([]byte, 2)
	if _, err := io.ReadFull(br, body); err != nil || string(body) != "ok" {
		t.Errorf("body %q, %v; want ok", body, err)
	}
}

// Trailers: a declared trailer whose value is set after the body goes in
// the trailer section only (net/http's contract: header changes after
// WriteHeader or Write take effect only as trailers), as does a
// TrailerPrefix one.
func TestH1ServerResponseTrailers(t *testing.T) {
	gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-T")
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Write(bytes.Repeat([]byte("t"), n))
		w.Header().Set("X-T", "declared")
		w.Header().Set(http.TrailerPrefix+"X-U", "prefixed")
	}))
	for _, n := range []int{10, 5000} {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, fmt.Sprintf("GET /?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", n))
		resp, body := readResponse(t, br, http.MethodGet)
		if len(body) != n || len(resp.TransferEncoding) != 1 {
			t.Errorf("n=%d: %d body bytes, Transfer-Encoding %v; want %d, chunked", n, len(body), resp.TransferEncoding, n)
		}
		if got := resp.Trailer.Get("X-T"); got != "declared" {
			t.Errorf("n=%d: trailer X-T = %q; want declared", n, got)
		}
		if got := resp.Trailer.Get("X-U"); got != "prefixed" {
			t.Errorf("n=%d: trailer X-U = %q; want prefixed", n, got)
		}
		if got := resp.Header.Get("X-T"); got != "" {
			t.Errorf("n=%d: X-T also sent in the head (%q); want it only as a trailer", n, got)
		}
	}
}

// A chunked body the handler reads only in part. Whether the server drops
// a small rest and goes on (as net/http does) or closes is its choice, but
// the head must say which; a rest beyond what any server drops closes the
// connection, announced.
func TestH1ServerPartlyReadChunkedBody(t *testing.T) {
	gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b [3]byte
		n, _ := io.ReadFull(r.Body, b[:])
		fmt.Fprintf(w, "%s read %q", r.URL.Path, b[:n])
	}))
	chunks := func(total int) string {
		var b strings.Builder
		for total > 0 {
			n := min(total, 4000)
			fmt.Fprintf(&b, "%x;e=1\r\n%s\r\n", n, strings.Repeat("c", n))
			total -= n
		}
		b.WriteString("0\r\nX-Trailer: t\r\n\r\n")
		return b.String()
	}
	const head = "POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	t.Run("small rest", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		wrote := make(chan error, 1)
		go func() {
			_, err := io.WriteString(c, fmt.Sprintf(head, "/small")+chunks(20000)+"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
			wrote <- err
		}()
		resp, body := readResponse(t, br, http.MethodPost)
		if resp.StatusCode != 200 || string(body) != `/small read "ccc"` {
			t.Errorf("first: %d %q; want 200", resp.StatusCode, body)
		}
		if resp.Close {
			t.Log("the server closes after a partly read chunked body (announced)")
			expectEOF(t, c, br, 5*time.Second)
			return
		}
		resp, body = readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != `/next read ""` {
			t.Errorf("next: %d %q; want 200 (the first answer promised keep-alive)", resp.StatusCode, body)
		}
		if err := recv(t, wrote, "the requests to be written"); err != nil {
			t.Errorf("writing: %v", err)
		}
	})
	t.Run("large rest", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		wrote := make(chan error, 1)
		go func() {
			_, err := io.WriteString(c, fmt.Sprintf(head, "/large")+chunks(2<<20))
			wrote <- err
		}()
		resp, body := readResponse(t, br, http.MethodPost)
		if resp.StatusCode != 200 || string(body) != `/large read "ccc"` {
			t.Errorf("got %d %q; want 200", resp.StatusCode, body)
		}
		if !resp.Close {
			t.Error("the answer lacks Connection: close, yet a 2 MiB rest cannot be dropped")
		}
		expectEOF(t, c, br, 5*time.Second)
		c.Close()
		recv(t, wrote, "the body writer to stop")
	})
}

// Empty lines before the request line must not let an incomplete head
// escape ReadHeaderTimeout (the idle timeout is far longer).
func TestH1ServerLeadingEmptyLinesKeepHeaderTimeout(t *testing.T) {
	var hits hitCounter
	gw := startGatewayWith(t, gatewaySetup{listener: ListenerOptions{ReadHeaderTimeout: 300 * time.Millisecond}}, oneRoute(countingBackend(t, &hits), ""))
	for _, lead := range []string{"", "\r\n", "\r\n\r\n"} {
		c, br := h1Raw(t, gw.addr)
		start := time.Now()
		h1Write(t, c, lead+"GET / HTTP/1.1\r\nHost: x\r\n") // the head never ends
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Errorf("lead %q: no answer within 5s (%v); want 408 after the 300ms header timeout", lead, err)
			continue
		}
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("lead %q: status %d; want 408", lead, resp.StatusCode)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("lead %q: answered after %v; want at least the 300ms header timeout", lead, d)
		}
	}
	if n := hits.get(); n != 0 {
		t.Errorf("backend hits = %d; want 0", n)
	}
}

// A request running longer than IdleTimeout still has its client watched:
// the idle deadline must not cut the watch short.
func TestH1ServerDisconnectDetectedAfterIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	entered, canceled, stop := make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{})
	gw := startH1Handler(t, ListenerOptions{IdleTimeout: idle}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
			canceled <- struct{}{}
		case <-stop:
		}
	}))
	t.Cleanup(func() { close(stop) }) // before the server's shutdown
	c, _ := h1Raw(t, gw.addr)
	start := time.Now()
	h1Write(t, c, "GET /long-poll HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, entered, "the request to start")
	// The scenario is a request that outlives the idle timeout: let it.
	<-time.After(time.Until(start.Add(3 * idle)))
	select {
	case <-canceled:
		t.Fatal("the request was canceled while the client was still connected")
	default:
	}
	c.Close()
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the request's context was not canceled within 5s of the client closing (the request had run longer than IdleTimeout)")
	}
}

// When the server closes the connection after a response, the head says
// Connection: close even if the handler set a Connection field of its own
// (net/http replaces it).
func TestH1ServerConnectionCloseOverridesHandler(t *testing.T) {
	gw := startH1Handler(t, ListenerOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "keep-alive")
		io.WriteString(w, "ok")
	}))
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, req)
		_, h := h1ReadHead(t, br)
		if !hasToken(h.Values("Connection"), "close") {
			t.Errorf("%q: Connection %q; want close, as the server closes the connection", req, h.Values("Connection"))
		}
		io.ReadFull(br, make([]byte, 2))
		expectEOF(t, c, br, 5*time.Second)
	}
}

// A short IdleTimeout closes connections idle that long, not busy ones: a
// client sending a request every 100ms keeps its connection with a 300ms
// idle timeout.
func TestH1ServerShortIdleTimeoutKeepsBusyConnection(t *testing.T) {
	gw := startH1Handler(t, ListenerOptions{IdleTimeout: 300 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	c, br := h1Raw(t, gw.addr)
	tick := time.NewTicker(100 * time.Millisecond) // the client's pace is the scenario
	defer tick.Stop()
	for i := range 12 {
		path := "/" + strconv.Itoa(i)
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatalf("request %d (%v after the first): write: %v", i, time.Duration(i)*100*time.Millisecond, err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("request %d (about %v after the first, never idle 300ms): %v; want an answer", i, time.Duration(i)*100*time.Millisecond, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "ok "+path {
			t.Fatalf("request %d: %q", i, body)
		}
		<-tick.C
	}
}

// earlyBackend is a raw upstream that answers 401 once it has a request
// head and the first bodyFirst bytes of the body, before the rest (as
// nginx does for an early 401 or 413), then drains what comes.
func earlyBackend(t *testing.T, bodyFirst int) string {
	t.Helper()
	return "http://" + rawUpstream(t, func(c net.Conn) {
		tp := textproto.NewReader(bufio.NewReader(c))
		if _, err := tp.ReadLine(); err != nil {
			return
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		cl, _ := strconv.Atoi(h.Get("Content-Length"))
		if _, err := io.ReadFull(tp.R, make([]byte, min(bodyFirst, cl))); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope")
		io.Copy(io.Discard, tp.R)
	})
}

// The upstream answers while the client is still sending a small body
// (the gateway's body writer is waiting for the client): the answer's
// Connection must match what the server then does (go on after the rest,
// or close).
func TestH1ServerEarlyUpstreamAnswerDuringSmallBody(t *testing.T) {
	const n = 100 << 10
	// The upstream answers once it has the half the client sends first,
	// so the gateway's body writer is then blocked reading the client.
	gw := startGateway(t, oneRoute(earlyBackend(t, n/2), ""))
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n"+strings.Repeat("a", n/2))
	resp, body := readResponse(t, br, http.MethodPost)
	if resp.StatusCode != http.StatusUnauthorized || string(body) != "nope" {
		t.Fatalf("got %d %q; want the upstream's 401", resp.StatusCode, body)
	}
	if resp.Close {
		t.Log("the answer says Connection: close")
		expectEOF(t, c, br, 5*time.Second)
		return
	}
	// Keep-alive was promised: the rest of the body, then another request.
	h1Write(t, c, strings.Repeat("a", n/2)+"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp2, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("second request after a keep-alive answer: %v; the server closed the connection it had not announced closing", err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusUnauthorized {
		t.Errorf("second request: %d; want the upstream's 401", resp2.StatusCode)
	}
}

// After Shutdown, no goroutine of the server is left: not the accept loop,
// not a connection's, not a disconnect watch, not an HTTP/2 connection
// handed to net/http.
func TestH1ServerShutdownLeavesNoGoroutines(t *testing.T) {
	url, entered, release := blockingBackend(t, "finished")
	srv, addr, served := listenH1(t, oneRoute(url, ""))

	// A connection waiting for its first request.
	h1Raw(t, addr)
	// A request whose client leaves while it runs (the watch starts).
	gone, _ := h1Raw(t, addr)
	h1Write(t, gone, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, entered, "the first request to reach the backend")
	time.Sleep(2 * disconnectCheckAfter) // the scenario: the watch must have begun
	gone.Close()
	// An HTTP/2 connection (prior knowledge), handed to net/http.
	h2c := newH2CClient(t)
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/h2", nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := h2c.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	recv(t, entered, "the HTTP/2 request to reach the backend")
	close(release)
	<-done

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v; want nil", err)
	}
	if err := recv(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve = %v; want nil", err)
	}
	ours := func() string {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "edge.(*serverConn)") || strings.Contains(g, "edge.(*h1Server)") ||
				strings.Contains(g, "edge.(*handoffListener)") || strings.Contains(g, "net/http.(*http2serverConn)") {
				left = append(left, g)
			}
		}
		return strings.Join(left, "\n\n")
	}
	var left string
	waitFor(t, 5*time.Second, "the server's goroutines to end", func() bool { left = ours(); return left == "" })
	if left != "" {
		t.Errorf("goroutines left after Shutdown:\n%s", left)
	}
}

// A bounded burst of mixed traffic (keep-alive GETs, uploads, pipelined
// pairs, clients that hang up mid-request, slow answers that outlive the
// disconnect watch) runs under the race detector; every request that is
// not abandoned gets its own answer, and Shutdown leaves no goroutine.
func TestH1ServerMixedTrafficStress(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(body))
	})
	srv, addr, served := listenH1(t, oneRoute(be.URL, ""))
	const clients, perClient = 24, 12
	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient)
	for ci := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(ci), 7))
			var c net.Conn
			var br *bufio.Reader
			for i := range perClient {
				if c == nil {
					var err error
					if c, err = net.DialTimeout("tcp", addr, 5*time.Second); err != nil {
						errs <- err
						return
					}
					c.SetDeadline(time.Now().Add(20 * time.Second))
					br = bufio.NewReader(c)
				}
				path := fmt.Sprintf("/c%d/r%d", ci, i)
				delay := time.Duration(rng.IntN(3)) * 40 * time.Millisecond
				switch rng.IntN(5) {
				case 0: // hang up while the request runs
					fmt.Fprintf(c, "GET %s?delay=300ms HTTP/1.1\r\nHost: x\r\n\r\n", path)
					time.Sleep(time.Duration(rng.IntN(80)) * time.Millisecond) // the scenario: leave at a random moment
					c.Close()
					c = nil
					continue
				case 1: // upload
					body := strings.Repeat("b", rng.IntN(50000))
					fmt.Fprintf(c, "POST %s?delay=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, delay, len(body), body)
					if err := expectAnswer(br, http.MethodPost, "POST "+path+" "+strconv.Itoa(len(body))); err != nil {
						errs <- err
						c.Close()
						c = nil
					}
				case 2: // two pipelined
					fmt.Fprintf(c, "GET %s/a?delay=%s HTTP/1.1\r\nHost: x\r\n\r\nGET %s/b HTTP/1.1\r\nHost: x\r\n\r\n", path, delay, path)
					for _, p := range []string{path + "/a", path + "/b"} {
						if err := expectAnswer(br, http.MethodGet, "GET "+p+" 0"); err != nil {
							errs <- err
							c.Close()
							c = nil
							break
						}
					}
				default: // keep-alive GET
					fmt.Fprintf(c, "GET %s?delay=%s HTTP/1.1\r\nHost: x\r\n\r\n", path, delay)
					if err := expectAnswer(br, http.MethodGet, "GET "+path+" 0"); err != nil {
						errs <- err
						c.Close()
						c = nil
					}
				}
			}
			if c != nil {
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v; want nil", err)
	}
	if err := recv(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve = %v", err)
	}
	waitFor(t, 5*time.Second, "the server's goroutines to end", func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		return !strings.Contains(string(buf), "edge.(*serverConn)")
	})
}

func expectAnswer(br *bufio.Reader, method, want string) error {
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return fmt.Errorf("%s: %v", want, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(b) != want {
		return fmt.Errorf("got %d %q (%v); want 200 %q", resp.StatusCode, b, err, want)
	}
	return nil
}

// failingListener fails its first Accepts as a process out of file
// descriptors does, then accepts for real.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Running out of file descriptors for a moment (EMFILE on accept) does not
// stop the listener: it backs off and serves the next connection.
func TestH1ServerKeepsServingAfterEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: ln}
	fl.fails.Store(3)
	var hits hitCounter
	gw := startGatewayWith(t, gatewaySetup{listener: ListenerOptions{Listener: fl}}, oneRoute(countingBackend(t, &hits), ""))
	resp, body := get(t, newClient(t), gw.url+"/after")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "/after") {
		t.Fatalf("got %d %q; want the backend's answer", resp.StatusCode, body)
	}
	if n := fl.fails.Load(); n >= 0 {
		t.Errorf("the failing Accepts were not all made (%d left)", n+1)
	}
}

// Requests the HTTP/1 server refuses before the gateway sees them are
// logged and counted like any other answer, with what was read of them.
func TestH1ServerRefusedRequestsAreLogged(t *testing.T) {
	var logBuf syncBuffer
	gw := startGatewayWith(t, gatewaySetup{
		opts:     Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil)), MaxHeaderCount: 10},
		listener: ListenerOptions{ReadHeaderTimeout: 300 * time.Millisecond},
	}, "")
	cases := []struct {
		name, send                 string
		status                     int
		method, path, host, errKnd string
	}{
		{"smuggling", "POST /x?q=1 HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "POST", "/x", "a.example", "http_request_error"},
		{"no host", "GET /nohost HTTP/1.1\r\n\r\n", 400, "GET", "/nohost", "", "http_request_error"},
		{"huge header", "GET /big HTTP/1.1\r\nHost: b\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", 431, "GET", "/big", "b", "http_request_error"},
		{"bad line", "NONSENSE\r\n\r\n", 400, "", "", "", "http_request_error"},
		{"no version", "GET /v09\r\n\r\n", 400, "GET", "/v09", "", "http_request_error"},
		{"control byte after host", "GET /ctl HTTP/1.1\r\nHost: f\r\nX-Id: a\x01b\r\n\r\n", 400, "GET", "/ctl", "f", "http_request_error"},
		// The target as read (JSON escapes its control bytes); its Host
		// line is not read.
		{"control byte in target", "GET /ok/\x01\x1b[31mred HTTP/1.1\r\nHost: g\r\n\r\n", 400, "GET", "/ok/\x01\x1b[31mred", "", "http_request_error"},
		{"control byte in method", "G\x01T /m HTTP/1.1\r\nHost: g\r\n\r\n", 400, "G\x01T", "/m", "", "http_request_error"},
		{"slow head", "GET /slow HTTP/1.1\r\nHost: c\r\n", 408, "GET", "/slow", "c", "client_header_timeout"},
		// Refused by the gateway rather than the parser, the same way.
		{"header count", "GET /many HTTP/1.1\r\nHost: d\r\n" + strings.Repeat("X-A: 1\r\n", 11) + "\r\n", 431, "GET", "/many", "d", "http_request_error"},
		// Half a head, then the client closes its side: nothing to
		// answer, but logged (499, as for any client that leaves).
		{"half head", "GET /half HTTP/1.1\r\nHost: e\r\n", 499, "GET", "/half", "e", "client_canceled"},
		// Empty lines and a close (an extra CRLF after a body) are no
		// request: not logged.
		{"empty lines", "\r\n\r\n", 0, "", "", "", ""},
	}
	ids := map[string]string{} // the answers' request ids, by case
	for _, tc := range cases {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, tc.send)
		if tc.status == 499 || tc.status == 0 { // no answer comes
			c.(*net.TCPConn).CloseWrite()
			expectEOF(t, c, br, 5*time.Second)
			c.Close()
			continue
		}
		line, hdr := h1ReadHead(t, br)
		n, _ := strconv.Atoi(hdr.Get("Content-Length"))
		body := make([]byte, n)
		io.ReadFull(br, body)
		c.Close()
		if !strings.HasPrefix(line, "HTTP/1.1 "+strconv.Itoa(tc.status)+" ") {
			t.Fatalf("%s: got %q; want %d", tc.name, line, tc.status)
		}
		var prob problem
		if err := json.Unmarshal(body, &prob); err != nil || prob.RequestID == "" {
			t.Errorf("%s: problem %q has no request_id (%v)", tc.name, body, err)
		}
		ids[tc.name] = prob.RequestID
	}
	var recs []map[string]any
	waitFor(t, 5*time.Second, "a log record for each refused request", func() bool {
		recs = recs[:0]
		for _, r := range logBuf.records(t) {
			recs = append(recs, r)
		}
		return len(recs) == len(cases)-1
	})
	for _, tc := range cases {
		if tc.status == 0 {
			continue
		}
		found := false
		for _, r := range recs {
			if r["status"] == float64(tc.status) && r["method"] == tc.method && r["path"] == tc.path {
				found = true
				if r["host"] != tc.host || r["error"] != tc.errKnd || r["route"] != "" || r["request_id"] == "" || (tc.status != 499) != (r["bytes_out"].(float64) > 0) {
					t.Errorf("%s: record %v; want host %q, error %q, no route, a request id and the problem's size", tc.name, r, tc.host, tc.errKnd)
				}
				if id, ok := ids[tc.name]; ok && r["request_id"] != id {
					t.Errorf("%s: logged request_id %v; the answer said %q", tc.name, r["request_id"], id)
				}
				if tc.status == 408 && r["duration_ms"].(float64) < 250 {
					t.Errorf("%s: duration_ms %v; want the time the head took (at least the 300ms header timeout)", tc.name, r["duration_ms"])
				}
			}
		}
		if !found {
			t.Errorf("%s: no record with status %d, method %q and path %q in %v", tc.name, tc.status, tc.method, tc.path, recs)
		}
	}
	if v := metricValue(t, gw.g, `meridian_requests_total{code="4xx",method="GET",route=""}`); v != 8 {
		t.Errorf(`meridian_requests_total{code="4xx",method="GET",route=""} = %v; want 8`, v)
	}
	// The client's errors, not the upstream's: an upstream alert must not
	// go off because clients send garbage.
	if v := metricValue(t, gw.g, `meridian_request_errors_total{error="http_request_error",route=""}`); v != 9 {
		t.Errorf(`meridian_request_errors_total{error="http_request_error",route=""} = %v; want 9`, v)
	}
	if v := metricValue(t, gw.g, `meridian_upstream_errors_total{error="http_request_error",route=""}`); v != 0 {
		t.Errorf(`meridian_upstream_errors_total{error="http_request_error",route=""} = %v; want 0`, v)
	}
}

// A connection accepted before a drain began but served only after it (a
// loaded machine starts its goroutine late) has the request its client
// already sent answered, not dropped unanswered and unlogged.
func TestConnAcceptedBeforeDrainIsServed(t *testing.T) {
	srv := newH1Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ListenerOptions{}.withDefaults(), slog.New(slog.DiscardHandler), nil)
	client := &memConn{in: []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), left: 1}
	c := srv.newConn(client)
	srv.shutting.Store(true) // the drain begins before the goroutine runs
	c.serve()
	if client.written == 0 {
		t.Fatal("the request sent before the drain got no answer")
	}
}

// A TLS client that dials the plain port gets a 400 and a close at once,
// not a wait for the header timeout, and its line in the log says why.
func TestH1ServerTLSClientOnPlainPort(t *testing.T) {
	var logBuf syncBuffer
	gw := startGatewayWith(t, gatewaySetup{
		opts:     Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))},
		listener: ListenerOptions{ReadHeaderTimeout: 30 * time.Second},
	}, oneRoute(newBackend(t, func(w http.ResponseWriter, r *http.Request) {}).URL, ""))
	// The start of a ClientHello with no line end in it (a real one
	// holds a 0x0a byte more often than not, which ends the line).
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"+strings.Repeat("A", 64))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, body := readResponse(t, br, http.MethodGet)
	checkProblem(t, resp, body, http.StatusBadRequest, "")
	expectEOF(t, c, br, 5*time.Second)
	// A real TLS client fails its handshake at once too.
	raw, err := net.DialTimeout("tcp", gw.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	start := time.Now()
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "a.example"})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err == nil {
		t.Fatal("a TLS handshake with the plain port succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the handshake failed after %v; want at once (the header timeout is 30s)", d)
	}
	waitFor(t, 5*time.Second, "the log lines", func() bool { return len(logBuf.records(t)) == 2 })
	for _, rec := range logBuf.records(t) {
		if rec["status"] != float64(400) || rec["error"] != "http_request_error" {
			t.Errorf("logged %v; want status 400, error http_request_error", rec)
		}
	}
}

// List fields read as lists (RFC 9110 5.6.1): empty members are none, so
// an empty Expect asks nothing and "chunked," is chunked; 100-continue
// said twice is still 100-continue; a chunk size may have any number of
// leading zeros (RFC 9112 7.1).
func TestListFieldsAndChunkSizesReadLeniently(t *testing.T) {
	seen := make(chan string, 8)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- string(b)
		io.WriteString(w, "ok")
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	for _, tc := range []struct{ name, req string }{
		{"empty Expect", "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect:\r\n\r\nhello"},
		{"Expect twice", "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\nExpect: 100-Continue\r\n\r\nhello"},
		{"chunked, with an empty member", "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, \r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"a chunk size of 16 digits", "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000005\r\nhello\r\n0\r\n\r\n"},
		{"a last chunk of 20 zeros", "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n00000000000000000000\r\n\r\n"},
	} {
		c := dialGateway(t, gw.addr)
		io.WriteString(c, tc.req)
		br := bufio.NewReader(c)
		resp, body := readResponse(t, br, http.MethodPost)
		for resp.StatusCode == http.StatusContinue {
			resp, body = readResponse(t, br, http.MethodPost)
		}
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Errorf("%s: %d %q; want the upstream's 200", tc.name, resp.StatusCode, body)
		} else if got := recv(t, seen, "the upstream body"); got != "hello" {
			t.Errorf("%s: upstream body %q; want hello", tc.name, got)
		}
		c.Close()
	}
	// Still refused: another expectation, and another coding.
	for _, tc := range []struct {
		req    string
		status int
	}{
		{"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue, fancy\r\n\r\nhello", 417},
		{"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501},
		{"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501},
		{"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n00010000000000000000\r\nhello\r\n0\r\n\r\n", 400},
	} {
		c := dialGateway(t, gw.addr)
		io.WriteString(c, tc.req)
		if resp, _ := readResponse(t, bufio.NewReader(c), http.MethodPost); resp.StatusCode != tc.status {
			t.Errorf("%q: %d; want %d", tc.req, resp.StatusCode, tc.status)
		}
		c.Close()
	}
}

// A client's X-Request-Id that its Connection names is a hop-by-hop
// field (RFC 9110 7.6.1): dropped, and the gateway makes its own id.
func TestRequestIDNamedInConnectionIsNotKept(t *testing.T) {
	seen := make(chan string, 1)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { seen <- r.Header.Get("X-Request-Id") })
	gw := startGateway(t, oneRoute(be.URL, ""))
	c := dialGateway(t, gw.addr)
	defer c.Close()
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: h\r\nConnection: X-Request-Id\r\nX-Request-Id: client-id-1\r\n\r\n")
	readResponse(t, bufio.NewReader(c), http.MethodGet)
	if got := recv(t, seen, "the upstream request"); got == "client-id-1" || len(got) != 32 {
		t.Errorf("upstream X-Request-Id %q; want one the gateway made", got)
	}
}

// A client that leaves after the upstream's head came but before anything
// of the answer reached it (the head waits in the buffer for the body's
// first bytes) was sent nothing: the record says 499, as nginx's does,
// not the upstream's 200.
func TestClientGoneBeforeAnyByteIs499(t *testing.T) {
	headSent, upClosed := make(chan struct{}, 1), make(chan struct{}, 1)
	up := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
		headSent <- struct{}{}
		io.Copy(io.Discard, br) // until the gateway gives up on it
		upClosed <- struct{}{}
	})
	setup, log := withReuseLog()
	gw := startGatewayWith(t, setup, oneRoute("http://"+up, ""))
	c, _ := h1Raw(t, gw.addr)
	h1Write(t, c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, headSent, "the upstream's head")
	c.Close()
	recv(t, upClosed, "the upstream connection to be closed")
	waitFor(t, 5*time.Second, "the access log record", func() bool { return log.count() == 1 })
	log.mu.Lock()
	rec := log.recs[0]
	log.mu.Unlock()
	if rec["status"] != int64(499) || rec["error"] != "client_canceled" || rec["bytes_out"] != int64(0) {
		t.Errorf("access log: status %v, error %v, bytes_out %v; want 499, client_canceled, 0", rec["status"], rec["error"], rec["bytes_out"])
	}
}

// An answer cut short is seen as such by every client: where the close
// would end its body (an HTTP/1.0 client, no length), the connection is
// reset rather than closed, which no client takes for the end.
func TestCutCloseDelimitedAnswerIsReset(t *testing.T) {
	up := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n"+strings.Repeat("a", 1000)+"\r\n")
		// and closes without the last chunk
	})
	gw := startGateway(t, oneRoute("http://"+up, ""))
	tg := startTLSGateway(t, oneRoute("http://"+up, ""), false)
	for _, tc := range []struct{ proto, over string }{{"HTTP/1.0", "tcp"}, {"HTTP/1.1", "tcp"}, {"HTTP/1.0", "tls"}} {
		proto := tc.proto
		var c net.Conn
		var br *bufio.Reader
		if tc.over == "tls" {
			// Under TLS a close_notify would say the end as a clean
			// close does: none is sent.
			tconn, err := tls.Dial("tcp", tg.addr, &tls.Config{RootCAs: tg.pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			c, br = tconn, bufio.NewReader(tconn)
		} else {
			c, br = h1Raw(t, gw.addr)
		}
		h1Write(t, c, "GET /x "+proto+"\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(br)
		if !bytes.HasPrefix(got, []byte("HTTP/1.1 200 OK\r\n")) {
			t.Fatalf("%s: got %q; want the answer's head", proto, got)
		}
		if proto == "HTTP/1.0" {
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("%s over %s: the read ended with %v after %d bytes; want a connection reset", proto, tc.over, err, len(got))
			}
		} else if err != nil || bytes.HasSuffix(got, []byte("0\r\n\r\n")) {
			// Chunked: the missing last chunk says it; a plain close.
			t.Errorf("%s: read ended with %v, last bytes %q; want a close without the last chunk", proto, err, got[max(0, len(got)-8):])
		}
		c.Close()
	}
}
