package edge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func countingBackend(t *testing.T, hits *hitCounter) string {
	t.Helper()
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.inc()
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s body=%q", r.Method, r.URL.Path, b)
	})
	return be.URL
}

const smuggle = "POST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"

func TestRequestSmugglingRefused(t *testing.T) {
	var hits hitCounter
	gw := startGateway(t, oneRoute(countingBackend(t, &hits), ""))
	for _, tc := range []struct {
		name string
		req  string
	}{
		{"CL then TE", smuggle},
		{"TE then CL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"},
		{"lower case names", "POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"CL zero", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.get()
			c := dialGateway(t, gw.addr)
			io.WriteString(c, tc.req)
			br := bufio.NewReader(c)
			resp, body := readResponse(t, br, http.MethodPost)
			checkProblem(t, resp, body, http.StatusBadRequest, "")
			if !strings.Contains(string(body), "smuggling") {
				t.Errorf("body = %s; want it to say why", body)
			}
			expectEOF(t, c, br, 5*time.Second)
			if d := hits.get() - before; d != 0 {
				t.Errorf("backend hits = %d; want 0", d)
			}
		})
	}
}

func TestRequestSmugglingPipelinedAfterGoodRequest(t *testing.T) {
	var hits hitCounter
	gw := startGateway(t, oneRoute(countingBackend(t, &hits), ""))
	c := dialGateway(t, gw.addr)
	// Both requests in one write: the scanner sees the second before the
	// first is answered.
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"+smuggle)
	br := bufio.NewReader(c)
	resp, body := readResponse(t, br, http.MethodGet)
	if resp.StatusCode != 200 || string(body) != `GET /first body=""` {
		t.Fatalf("first: %d %q; want 200 from the backend", resp.StatusCode, body)
	}
	resp, body = readResponse(t, br, http.MethodPost)
	checkProblem(t, resp, body, http.StatusBadRequest, "")
	expectEOF(t, c, br, 5*time.Second)
	if n := hits.get(); n != 1 {
		t.Errorf("backend hits = %d; want 1 (neither the smuggling request nor the one hidden in it)", n)
	}
}

// Well-framed pipelined requests with bodies pass: the scanner follows
// Content-Length and chunked framing to the next request.
func TestPipelinedRequestsWithBodies(t *testing.T) {
	var hits hitCounter
	gw := startGateway(t, oneRoute(countingBackend(t, &hits), ""))
	c := dialGateway(t, gw.addr)
	reqs := "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n" +
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /c HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
	// Also in small pieces, so that lines and chunks straddle reads.
	for i := 0; i < len(reqs); i += 7 {
		if _, err := io.WriteString(c, reqs[i:min(i+7, len(reqs))]); err != nil {
			t.Fatal(err)
		}
	}
	br := bufio.NewReader(c)
	for _, want := range []string{`POST /a body="hello"`, `POST /b body="abcde"`, "", `GET /c body=""`, `POST /d body=""`} {
		method := http.MethodPost
		if want == "" {
			method = http.MethodOptions
		}
		resp, body := readResponse(t, br, method)
		if resp.StatusCode != 200 || string(body) != want {
			t.Errorf("got %d %q; want 200 %q", resp.StatusCode, body, want)
		}
	}
	if n := hits.get(); n != 4 {
		t.Errorf("backend hits = %d; want 4", n)
	}
}

func TestHeaderLimits(t *testing.T) {
	var hits hitCounter
	gw := startGatewayWith(t, gatewaySetup{listener: ListenerOptions{MaxHeaderBytes: 2048}}, oneRoute(countingBackend(t, &hits), ""))
	t.Run("too many fields", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
		for i := range 101 {
			fmt.Fprintf(&b, "X-H%d: v\r\n", i)
		}
		b.WriteString("\r\n")
		c := dialGateway(t, gw.addr)
		io.WriteString(c, b.String())
		br := bufio.NewReader(c)
		resp, body := readResponse(t, br, http.MethodGet)
		checkProblem(t, resp, body, http.StatusRequestHeaderFieldsTooLarge, "")
		expectEOF(t, c, br, 5*time.Second)
	})
	t.Run("oversized headers", func(t *testing.T) {
		c := dialGateway(t, gw.addr)
		// net/http allows MaxHeaderBytes plus 4 KiB of slack.
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 8<<10))
		br := bufio.NewReader(c)
		// net/http answers and closes with the rest of the request
		// unread, so the body may end in a reset rather than EOF.
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status = %d; want 431", resp.StatusCode)
		}
		expectEOF(t, c, br, 5*time.Second)
	})
	t.Run("within limits", func(t *testing.T) {
		c := dialGateway(t, gw.addr)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Ok: %s\r\n\r\n", strings.Repeat("a", 1000))
		resp, _ := readResponse(t, bufio.NewReader(c), http.MethodGet)
		if resp.StatusCode != 200 {
			t.Errorf("status = %d; want 200", resp.StatusCode)
		}
	})
	if n := hits.get(); n != 1 {
		t.Errorf("backend hits = %d; want 1", n)
	}
}

func TestMaxConnections(t *testing.T) {
	var hits hitCounter
	var nodeLog syncBuffer
	gw := startGatewayWith(t, gatewaySetup{listener: ListenerOptions{MaxConnections: 1}, opts: Options{Logger: slog.New(slog.NewJSONHandler(&nodeLog, nil))}},
		oneRoute(countingBackend(t, &hits), ""))
	first := dialGateway(t, gw.addr)
	br1 := bufio.NewReader(first)
	roundTrip := func(path string) {
		t.Helper()
		fmt.Fprintf(first, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		resp, body := readResponse(t, br1, http.MethodGet)
		if resp.StatusCode != 200 {
			t.Fatalf("first connection %s: %d %s; want 200", path, resp.StatusCode, body)
		}
	}
	roundTrip("/one") // the first connection is accepted and counted

	second := dialGateway(t, gw.addr)
	fmt.Fprintf(second, "GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
	br2 := bufio.NewReader(second)
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(br2)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("second connection still open; want it closed at once")
	}
	if len(got) != 0 {
		t.Errorf("second connection got %q; want no answer", got)
	}
	roundTrip("/three") // the first connection still works
	if n := metricValue(t, gw.g, "meridian_connections_rejected_total"); n != 1 {
		t.Errorf("rejected connections metric = %v; want 1", n)
	}
	if n := metricValue(t, gw.g, "meridian_connections_open"); n != 1 {
		t.Errorf("open connections metric = %v; want 1", n)
	}
	// The node log says so (at most every 10 s).
	if l := nodeLog.String(); !strings.Contains(l, `"msg":"connections refused: max_connections reached"`) || !strings.Contains(l, `"max_connections":1,"refused":1`) {
		t.Errorf("node log %q; want the refusal", l)
	}

	// Once the first closes, a new connection is served.
	first.Close()
	waitFor(t, 5*time.Second, "the slot to be released", func() bool {
		return metricValue(t, gw.g, "meridian_connections_open") == 0
	})
	third := dialGateway(t, gw.addr)
	fmt.Fprintf(third, "GET /four HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ := readResponse(t, bufio.NewReader(third), http.MethodGet)
	if resp.StatusCode != 200 {
		t.Errorf("third connection: %d; want 200", resp.StatusCode)
	}
	if n := hits.get(); n != 3 {
		t.Errorf("backend hits = %d; want 3", n)
	}

	// The rest of a burst, within 10 s of its first line, is said when
	// the window ends, or at the latest when the listener closes.
	for range 2 {
		c := dialGateway(t, gw.addr)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(c) // refused: closed at once
	}
	waitFor(t, 5*time.Second, "the two refusals counted", func() bool {
		return metricValue(t, gw.g, "meridian_connections_rejected_total") == 3
	})
	third.Close()
	gw.srv.Shutdown(context.Background())
	if l := nodeLog.String(); !strings.Contains(l, `"max_connections":1,"refused":2`) {
		t.Errorf("node log %q; want the burst's last two refusals said at the close", l)
	}
}

func TestReadHeaderTimeoutClosesSlowloris(t *testing.T) {
	var hits hitCounter
	gw := startGatewayWith(t, gatewaySetup{listener: ListenerOptions{ReadHeaderTimeout: 300 * time.Millisecond}}, oneRoute(countingBackend(t, &hits), ""))
	c := dialGateway(t, gw.addr)
	start := time.Now()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	// Trickle header lines until the gateway hangs up; each write is
	// well within any per-read timeout, but the headers never end.
	closed := make(chan time.Duration, 1)
	go func() {
		io.Copy(io.Discard, c)
		closed <- time.Since(start)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case d := <-closed:
			if d < 300*time.Millisecond || d > 5*time.Second {
				t.Errorf("closed after %v; want soon after the 300ms header timeout", d)
			}
			if n := hits.get(); n != 0 {
				t.Errorf("backend hits = %d; want 0", n)
			}
			return
		case <-tick.C:
			if _, err := fmt.Fprintf(c, "X-Slow-%d: v\r\n", i); err != nil {
				// The gateway closed while we wrote: wait for the reader.
				d := recv(t, closed, "the connection to close")
				if d < 300*time.Millisecond {
					t.Errorf("closed after %v; want at least the 300ms header timeout", d)
				}
				return
			}
			if time.Since(start) > 10*time.Second {
				t.Fatal("slowloris connection still open after 10s")
			}
		}
	}
}

// CONNECT is refused (501, problem+json, connection closed) and never
// reaches a backend, over HTTP/1.1 with tunnel bytes already sent behind
// it, and over h2c.
func TestConnectRefused(t *testing.T) {
	var hits hitCounter
	gw := startGateway(t, oneRoute(countingBackend(t, &hits), ""))
	c := dialGateway(t, gw.addr)
	io.WriteString(c, "CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\n\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
	br := bufio.NewReader(c)
	resp, body := readResponse(t, br, http.MethodConnect)
	checkProblem(t, resp, body, http.StatusNotImplemented, "")
	expectEOF(t, c, br, 5*time.Second)

	req, _ := http.NewRequest(http.MethodConnect, gw.url, nil)
	req.URL.Path = ""
	req.Host = "internal.example:443"
	resp, body = do(t, newH2CClient(t), req)
	if resp.ProtoMajor != 2 {
		t.Fatalf("h2c CONNECT answered over HTTP/%d", resp.ProtoMajor)
	}
	checkProblem(t, resp, body, http.StatusNotImplemented, "")
	if n := hits.get(); n != 0 {
		t.Errorf("backend hits = %d; want 0", n)
	}
	// Logged and counted as the client's error, as the README lists 501.
	if v := metricValue(t, gw.g, `meridian_request_errors_total{error="http_request_error",route=""}`); v != 2 {
		t.Errorf(`meridian_request_errors_total{error="http_request_error",route=""} = %v; want 2 (the two CONNECTs)`, v)
	}
}

// TRACE is refused (405 with Allow) on routes that do not list it, so an
// upstream that echoes requests never shows a client what the gateway
// added; a route naming TRACE in match.methods forwards it.
func TestTraceRefusedUnlessRouteListsIt(t *testing.T) {
	var hits hitCounter
	gw := startGateway(t, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes:
  - {name: any, match: {path_prefix: /}, service: be}
  - {name: traced, match: {path_prefix: /debug, methods: [TRACE]}, service: be}
`, countingBackend(t, &hits)))
	c := newClient(t)
	req, _ := http.NewRequest(http.MethodTrace, gw.url+"/x", nil)
	resp, body := do(t, c, req)
	checkProblem(t, resp, body, http.StatusMethodNotAllowed, "")
	if resp.Header.Get("Allow") == "" {
		t.Error("405 without an Allow header")
	}
	if n := hits.get(); n != 0 {
		t.Fatalf("backend hits = %d after a refused TRACE; want 0", n)
	}
	req, _ = http.NewRequest(http.MethodTrace, gw.url+"/debug", nil)
	resp, body = do(t, c, req)
	if resp.StatusCode != 200 || string(body) != `TRACE /debug body=""` {
		t.Fatalf("TRACE on a route listing it: %d %q; want the backend's answer", resp.StatusCode, body)
	}
}
