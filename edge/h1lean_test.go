package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLeanRequestHeadMatchesPresentPath sends requests through the present
// path to an upstream that records the head it gets, and checks for each
// that classifyLean takes exactly the requests it should and that
// appendLeanRequestHead writes the same head (the same request line, Host
// and fields with their values in order; the present path writes fields
// in its map's order, so the order across names is not compared).
func TestLeanRequestHeadMatchesPresentPath(t *testing.T) {
	heads := make(chan []byte, 1)
	up := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			var head []byte
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				head = append(head, line...)
				if len(line) <= 2 {
					break
				}
			}
			heads <- head
			if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")); err != nil {
				return
			}
		}
	})
	tg := startGateway(t, fmt.Sprintf(`
services:
  - name: full
    targets: [{url: "http://%[1]s"}]
  - name: bare
    targets: [{url: "http://%[1]s"}]
    proxy_headers: {forwarded: false, x_forwarded: false, via: false, request_id: false, traceparent: false}
  - name: some
    targets: [{url: "http://%[1]s"}]
    proxy_headers: {forwarded: false, traceparent: false}
routes:
  - {name: full, match: {path_prefix: /}, service: full}
  - {name: bare, match: {path_prefix: /bare/}, service: bare}
  - {name: some, match: {path_prefix: /some/}, service: some}
`, up))
	conn := dialGateway(t, tg.addr)
	br := bufio.NewReader(conn)

	cases := []struct {
		name string
		head string // the request line and fields, without the final CRLF
		lean bool
	}{
		{"plain", "GET /bare/x HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*", true},
		{"defaults", "GET /x?q=1&r=%20 HTTP/1.1\r\nHost: a.example:8080\r\nAccept: */*", true},
		{"some", "GET /some/x HTTP/1.1\r\nHost: a.example\r\nAccept: */*", true},
		{"head", "HEAD /x HTTP/1.1\r\nHost: a.example", true},
		{"lower-case names and repeats", "GET /x HTTP/1.1\r\nhost: a.example\r\naccept: a\r\nACCEPT: b\r\nx-custom-NAME: v\r\naccept: c", true},
		{"sub-delims in the path", "GET /a:b@c/$&+,;=-_.~ HTTP/1.1\r\nHost: a.example", true},
		{"a tab inside a value", "GET /x HTTP/1.1\r\nHost: a.example\r\nX-T: a\tb", true},
		{"underscore allowed by default", "GET /x HTTP/1.1\r\nHost: a.example\r\nX_Under: 1", true},
		{"long name", "GET /x HTTP/1.1\r\nHost: a.example\r\nX-A-Very-Long-Field-Name-Longer-Than-Thirty-Two: 1", true},
		{"POST", "POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0", true},
		{"POST without a length", "POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Type: text/plain", true},
		{"PATCH", "PATCH /bare/x HTTP/1.1\r\nHost: a.example", true},
		{"DELETE", "DELETE /x HTTP/1.1\r\nHost: a.example", true},
		{"OPTIONS", "OPTIONS /x HTTP/1.1\r\nHost: a.example\r\nOrigin: https://b.example\r\nAccess-Control-Request-Method: PUT", true},
		{"TRACE", "TRACE /x HTTP/1.1\r\nHost: a.example", false},
		{"POST with an idempotency key", "POST /x HTTP/1.1\r\nHost: a.example\r\nIdempotency-Key: k", false},
		{"PUT with an idempotency key", "PUT /x HTTP/1.1\r\nHost: a.example\r\nIdempotency-Key: k", true},
		{"two lengths", "POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0\r\nContent-Length: 0", false},
		{"a length with a sign", "POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: +0", false},
		{"HTTP/1.0 keep-alive", "GET /x HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive", true},
		{"HTTP/1.0 no host", "GET /x HTTP/1.0\r\nConnection: keep-alive", false},
		{"HTTP/1.2", "GET /x HTTP/1.2\r\nHost: a.example", false},
		{"escape", "GET /a%2Fb HTTP/1.1\r\nHost: a.example", false},
		{"dot segment", "GET /a/./b HTTP/1.1\r\nHost: a.example", false},
		{"empty query", "GET /a? HTTP/1.1\r\nHost: a.example", false},
		{"connection: keep-alive", "GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive", true},
		{"connection: Keep-Alive twice", "GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: Keep-Alive, ,keep-alive\r\nConnection: keep-alive", true},
		{"connection: close", "GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: close", false},
		{"connection naming a field", "GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-A\r\nX-A: 1", false},
		{"connection: empty", "GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: ", false},
		{"forwarding", "GET /x HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 1.2.3.4", true},
		{"spoofable", "GET /x HTTP/1.1\r\nHost: a.example\r\nx-real-ip: 1.2.3.4", true},
		{"trace", "GET /x HTTP/1.1\r\nHost: a.example\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", true},
		{"request id", "GET /x HTTP/1.1\r\nHost: a.example\r\nX-Request-Id: abc", true},
		{"two traces", "GET /x HTTP/1.1\r\nHost: a.example\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nTraceparent: x", false},
		{"via", "GET /x HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 other", true},
		{"via twice", "GET /x HTTP/1.1\r\nHost: a.example\r\nvia: 1.1 a\r\nAccept: */*\r\nVia: HTTP/2 b (x)", true},
		{"bare, via", "GET /bare/x HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 other", true},
		{"te", "GET /x HTTP/1.1\r\nHost: a.example\r\nTE: trailers", false},
		{"content-length 0", "GET /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 0", true},
		{"content-length 00", "GET /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 00", false},
		{"empty host", "GET /x HTTP/1.1\r\nHost: ", false},
	}
	g := tg.g
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.head + "\r\n\r\n"
			var sent []byte
			if tc.lean {
				// What the present path sends upstream (for the others,
				// what it does is its own: 400, 431, forwarding edits).
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Write([]byte(raw)); err != nil {
					t.Fatal(err)
				}
				select {
				case sent = <-heads:
				case <-time.After(5 * time.Second):
					t.Fatal("the upstream got no request")
				}
				if resp, _ := readResponse(t, br, strings.Fields(tc.head)[0]); resp.StatusCode != 200 {
					t.Fatalf("status %d through the present path", resp.StatusCode)
				}
			}

			c := &serverConn{s: &h1Server{opts: ListenerOptions{MaxHeaderBytes: 64 << 10}}, br: bufio.NewReader(strings.NewReader(raw))}
			c.reqHead = getHeadBlock()
			defer putHeadBlock(c.reqHead)
			rl, perr := c.parseHead()
			if perr != nil {
				t.Fatalf("parseHead: %v", perr.detail)
			}
			lr, ok := classifyLean(c.reqHead, rl, g.opts.MaxHeaderCount, g.opts.Underscores)
			if ok != tc.lean {
				t.Fatalf("classifyLean = %v; want %v", ok, tc.lean)
			}
			if !ok {
				return
			}
			hb := c.reqHead
			host := string(hb.buf[lr.host[0]:lr.host[1]])
			path, _, _ := strings.Cut(string(hb.buf[lr.target[0]:lr.target[1]]), "?")
			m, found := g.snap.Load().table.Match(&http.Request{Method: string(hb.buf[lr.method[0]:lr.method[1]])}, normalizeHost(host), path)
			if !found {
				t.Fatal("no route")
			}
			rt := m.Route.Value.(*route)
			got := headFields(t, sent)
			a := leanAdds{svc: rt.svc, peer: netip.MustParseAddr("127.0.0.1"), peerStr: "127.0.0.1", host: host, upHost: host, plainTCP: true}
			if !rt.svc.noRequestID {
				a.reqID = only(t, got, "X-Request-Id")
			}
			if !rt.svc.noTraceparent {
				a.trace = only(t, got, "Traceparent")
			}
			if !rt.svc.noVia {
				a.via = g.via(1, lr.minor)
			}
			lean := appendLeanRequestHead(nil, hb, &lr, &a)
			if l0, s0 := firstLine(lean), firstLine(sent); l0 != s0 {
				t.Fatalf("request line %q; the present path sent %q", l0, s0)
			}
			if want, have := got, headFields(t, lean); !equalFields(want, have) {
				t.Errorf("lean head:\n%s\npresent path's:\n%s", lean, sent)
			}
		})
	}
}

var problemIDs = regexp.MustCompile(`("request_id":)"[0-9a-f]+"`)

func firstLine(b []byte) string {
	l, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(l)
}

// headFields parses a request head's fields: each name's values in order.
func headFields(t *testing.T, head []byte) map[string][]string {
	t.Helper()
	if !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		t.Fatalf("head not ended by an empty line: %q", head)
	}
	lines := strings.Split(string(head[:len(head)-4]), "\r\n")[1:]
	m := map[string][]string{}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			t.Fatalf("malformed field line %q", l)
		}
		m[k] = append(m[k], v)
	}
	return m
}

func only(t *testing.T, m map[string][]string, k string) string {
	t.Helper()
	if len(m[k]) != 1 {
		t.Fatalf("%s: %q; want one value", k, m[k])
	}
	return m[k][0]
}

func equalFields(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestLeanMatchesPresentPath relays the same upstream answers to the same
// requests through a lean route and through its twin that the lean path
// does not take (a request header edit that changes nothing), and checks
// that the client sees the same: status, fields (values in order per
// name; Date by presence), body, and whether the connection goes on.
func TestLeanMatchesPresentPath(t *testing.T) {
	answers := map[string]string{
		"plain":           "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"date":            "HTTP/1.1 200 OK\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 2\r\n\r\nok",
		"names":           "HTTP/1.1 200 OK\r\nx-lower: a\r\nX-LOUD: b\r\nx-lower: c\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\ncontent-length: 2\r\n\r\nok",
		"empty":           "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"404":             "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop",
		"503":             "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy",
		"odd reason":      "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok",
		"599":             "HTTP/1.1 599 Whatever\r\nContent-Length: 2\r\n\r\nok",
		"204":             "HTTP/1.1 204 No Content\r\n\r\n",
		"304":             "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
		"chunked":         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"trailers":        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
		"connection":      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
		"named":           "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok",
		"keep-alive":      "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
		"node":            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
		"named too":       "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok",
		"via":             "HTTP/1.1 200 OK\r\nVia: 1.1 other\r\nContent-Length: 2\r\n\r\nok",
		"sse":             "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 9\r\n\r\ndata: x\n\n",
		"two lengths":     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"bad length":      "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok",
		"1.0":             "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"hints":           "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"control":         "HTTP/1.1 200 OK\r\nX-C: a\x01b\r\nContent-Length: 2\r\n\r\nok",
		"host":            "HTTP/1.1 200 OK\r\nHost: up.example\r\nContent-Length: 2\r\n\r\nok",
		"short body":      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok",
		"too long a head": "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\nContent-Length: 2\r\n\r\nok",
		// Bodies past the upstream connection's read buffer, and just
		// within it: copied as they come, or written from the buffer.
		"large":  "HTTP/1.1 200 OK\r\nContent-Length: 40000\r\n\r\n" + strings.Repeat("l", 40000),
		"buffer": "HTTP/1.1 200 OK\r\nContent-Length: 16000\r\n\r\n" + strings.Repeat("b", 16000),
	}
	up := rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			a := answers[req.Header.Get("X-Answer")]
			if _, err := c.Write([]byte(a)); err != nil {
				return
			}
			if strings.Contains(a, "Connection: close") || strings.HasPrefix(a, "HTTP/1.0") || strings.Contains(a, "Content-Length: 10\r\n") {
				return
			}
		}
	})
	tg := startGateway(t, fmt.Sprintf(`
services:
  - name: s
    targets: [{url: "http://%s"}]
    timeouts: {response_header: 2s}
routes:
  - {name: lean, match: {path_prefix: /l/}, service: s}
  - name: twin
    match: {path_prefix: /p/}
    service: s
    request_headers: {remove: [X-Not-Sent]}
`, up))
	if rt := tg.g.snap.Load().routes; !rt[0].lean || rt[1].lean {
		t.Fatalf("route lean flags %v, %v; want true, false", rt[0].lean, rt[1].lean)
	}
	type seen struct {
		status int
		fields map[string][]string
		body   string
		next   bool // the connection served another request
		err    string
	}
	get := func(path, answer string) seen {
		t.Helper()
		c := dialGateway(t, tg.addr)
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a.example\r\nX-Answer: %s\r\n\r\n", path, answer)
		var hints []string
		resp, err := http.ReadResponse(br, nil)
		for err == nil && resp.StatusCode/100 == 1 {
			hints = append(hints, strconv.Itoa(resp.StatusCode)+" "+resp.Header.Get("Link"))
			resp, err = http.ReadResponse(br, nil)
		}
		if err != nil {
			return seen{err: err.Error()}
		}
		resp.Header["informational"] = hints
		body, err := io.ReadAll(resp.Body)
		s := seen{status: resp.StatusCode, fields: map[string][]string{}, body: string(body)}
		if resp.Header.Get("Content-Type") == "application/problem+json" {
			// The gateway's own answer names the route, the path and a
			// request id: the same but for those.
			s.body = problemIDs.ReplaceAllString(strings.NewReplacer(`"/l/x"`, `"/p/x"`, `"route":"lean"`, `"route":"twin"`).Replace(s.body), "$1")
			resp.Header["Content-Length"] = []string{"(problem)"}
		}
		if err != nil {
			s.err = "body: " + err.Error()
		}
		for k, vs := range resp.Header {
			switch k {
			case "Date":
				vs = []string{"(present)"}
			case "X-Request-Id", "Proxy-Status":
				vs = []string{"(present)"}
			}
			s.fields[k] = vs
		}
		for k, vs := range resp.Trailer {
			s.fields["trailer "+k] = vs
		}
		if s.err == "" {
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a.example\r\nX-Answer: plain\r\n\r\n", path)
			if r2, err := http.ReadResponse(br, nil); err == nil && r2.StatusCode == 200 {
				io.Copy(io.Discard, r2.Body)
				s.next = true
			}
		}
		return s
	}
	names := make([]string, 0, len(answers))
	for k := range answers {
		names = append(names, k)
	}
	slices.Sort(names)
	plain := []string{"plain", "date", "names", "empty", "404", "503", "odd reason", "599", "control", "host", "short body", "hints", "large", "buffer",
		"connection", "keep-alive", "node"}
	// The plain answers the span lane writes itself: the whole body
	// with the head, and no 103 before it.
	lanePlain := []string{"plain", "date", "names", "empty", "404", "503", "odd reason", "599", "control", "host", "buffer",
		"connection", "keep-alive", "node"}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			req0, ans0 := leanRequests.Load(), leanAnswers.Load()
			served0, presented0 := laneServed.Load(), lanePresented.Load()
			l := get("/l/x", name)
			// Two requests each (the second a plain one, when the
			// connection goes on): both go lean; the first answer is
			// relayed plain only if it is plain.
			wantReq, wantAns := int64(1), int64(0)
			if l.next {
				wantReq, wantAns = 2, 1
			}
			if slices.Contains(plain, name) {
				wantAns++
			}
			if r, a := leanRequests.Load()-req0, leanAnswers.Load()-ans0; r != wantReq || a != wantAns {
				t.Errorf("lean requests %d, plain answers %d; want %d, %d", r, a, wantReq, wantAns)
			}
			// Every lean request goes by the span lane (h1lane.go); those
			// whose answer it does not write itself are made present.
			wantPresented := int64(1)
			if slices.Contains(lanePlain, name) {
				wantPresented = 0
			}
			if s, p := laneServed.Load()-served0, lanePresented.Load()-presented0; s != wantReq || p != wantPresented {
				t.Errorf("span lane: %d requests, %d made present; want %d, %d", s, p, wantReq, wantPresented)
			}
			req0, ans0 = leanRequests.Load(), leanAnswers.Load()
			p := get("/p/x", name)
			if r, a := leanRequests.Load()-req0, leanAnswers.Load()-ans0; r != 0 || a != 0 {
				t.Errorf("the present route went lean: %d requests, %d answers", r, a)
			}
			if l.status != p.status || l.body != p.body || l.next != p.next || l.err != p.err || !equalFields(l.fields, p.fields) {
				t.Errorf("lean route:    %+v\npresent route: %+v", l, p)
			}
			if p.status == 0 && p.err == "" {
				t.Errorf("no answer")
			}
		})
	}
}

// TestLeanAltSvcOverTLS: on a TLS listener with HTTP/3 the server's
// handler sets Alt-Svc before the gateway; an upstream's own Alt-Svc
// replaces it on the present path, and must on the lean path too (not be
// sent beside it). Without one of its own, the listener's goes out.
func TestLeanAltSvcOverTLS(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("own") != "" {
			w.Header().Set("Alt-Svc", `h2=":443"; ma=60`)
		}
		if r.URL.Query().Get("chunked") != "" {
			w.(http.Flusher).Flush() // a chunked answer: the span lane makes the request present
		}
		io.WriteString(w, r.Header.Get("X-Forwarded-Proto"))
	})
	tg := startTLSGateway(t, fmt.Sprintf(`
services: [{name: be, targets: [{url: %q}]}]
routes:
  - {name: lean, match: {path_prefix: /l/}, service: be}
  - {name: twin, match: {path_prefix: /t/}, service: be, request_headers: {remove: [X-Not-Sent]}}
`, be.URL), true)
	c := tg.client(t, "h1")
	listener := `h3=":` + portOf(tg.addr) + `"; ma=86400`
	for _, tc := range []struct {
		query string
		want  string
	}{{"?own=1", `h2=":443"; ma=60`}, {"", listener}, {"?chunked=1", listener}, {"?chunked=1&own=1", `h2=":443"; ma=60`}} {
		for _, prefix := range []string{"/l/", "/t/"} {
			ans0, lane0 := leanAnswers.Load(), laneServed.Load()
			resp, err := c.Get("https://localhost:" + portOf(tg.addr) + prefix + "x" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "https" {
				t.Errorf("%s%s: the upstream saw X-Forwarded-Proto %q; want https", prefix, tc.query, body)
			}
			if lane := laneServed.Load() > lane0; lane != (prefix == "/l/") {
				t.Errorf("%s%s: served on the span lane: %v", prefix, tc.query, lane)
			}
			if got := resp.Header.Values("Alt-Svc"); resp.ProtoMajor != 1 || len(got) != 1 || got[0] != tc.want {
				t.Errorf("%s%s over HTTP/%d: Alt-Svc %q; want just %q", prefix, tc.query, resp.ProtoMajor, got, tc.want)
			}
			if lean := leanAnswers.Load() > ans0; lean != (prefix == "/l/" && !strings.Contains(tc.query, "chunked")) {
				t.Errorf("%s%s: answered on the lean path: %v", prefix, tc.query, lean)
			}
		}
	}
}

// TestLeanHeaderCount: the lean path counts fields against
// max_header_count as the present path does, Host aside; over the limit it
// leaves the request to the present path's 431.
func TestLeanHeaderCount(t *testing.T) {
	for _, tc := range []struct {
		fields int // besides Host
		lean   bool
	}{{2, true}, {3, false}} {
		raw := "GET /x HTTP/1.1\r\nHost: a.example\r\n" + strings.Repeat("X-F: v\r\n", tc.fields) + "\r\n"
		c := &serverConn{s: &h1Server{opts: ListenerOptions{MaxHeaderBytes: 64 << 10}}, br: bufio.NewReader(strings.NewReader(raw))}
		c.reqHead = getHeadBlock()
		rl, perr := c.parseHead()
		if perr != nil {
			t.Fatal(perr.detail)
		}
		if _, ok := classifyLean(c.reqHead, rl, 2, UnderscoresAllow); ok != tc.lean {
			t.Errorf("%d fields besides Host, max_header_count 2: lean %v; want %v", tc.fields, ok, tc.lean)
		}
		putHeadBlock(c.reqHead)
	}
}

// FuzzLeanMatchesPresentPath sends one request head (target and fields,
// as fuzzed) to a lean route and to its twin the lean path never takes,
// and checks that the upstream gets the same head from both (but for the
// path prefix, X-Request-Id and Traceparent values, and the field order
// across names) and the client the same status, from a gateway to which
// the peer is a client and from one that trusts it as a proxy (forwarding
// fields replaced, or extended and kept). Heads either path refuses must be
// refused by both.
func FuzzLeanMatchesPresentPath(f *testing.F) {
	for _, seed := range [][2]string{
		{"/x", "Accept: */*\r\nUser-Agent: t"},
		{"/x?a=1&b=%20", "accept: a\r\nACCEPT: b"},
		{"/a/./b", "X-T: 1"},
		{"/x", "Connection: keep-alive"},
		{"/x", "X-Forwarded-For: 1.2.3.4"},
		{"/x", "X-Forwarded-For: a, 1.2.3.4\r\nx-forwarded-for: 5.6.7.8:9\r\nX-Forwarded-Host: h"},
		{"/x", "Forwarded: for=x\r\nX-Forwarded-Proto: https\r\nX-Real-Ip: 1.2.3.4\r\nX-Forwarded-Client-Cert: c"},
		{"/x", "Via: 1.1 cdn.example\r\nX-Forwarded-For: 1.2.3.4"},
		{"/x", "x_under: 1"},
		{"/x", "X-E:"},
		{"/x", "X-T: a\tb"},
		{"/x", "Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{"/x", "X-Request-Id: abc"},
		{"/x", "Host: other.example"},
		{"/%7e/x", "Content-Length: 0"},
	} {
		f.Add(seed[0], seed[1], false, uint8(0), "")
	}
	// HTTP/1.0, with and without keep-alive.
	f.Add("/x", "Accept: */*", true, uint8(0), "")
	f.Add("/x", "Connection: keep-alive\r\nVia: 1.0 a", true, uint8(0), "")
	// Other methods, with and without bodies (their Content-Length made
	// by send).
	f.Add("/x", "Content-Type: application/json", false, uint8(1), `{"a": 1}`)
	f.Add("/x", "", false, uint8(1), "")
	f.Add("/x", "X-Forwarded-For: 1.2.3.4", true, uint8(2), "hi")
	f.Add("/x", "Idempotency-Key: k", false, uint8(3), "")
	f.Add("/x", "Content-Length: 3", false, uint8(4), "abc")
	f.Add("/x", "Origin: https://b.example", false, uint8(5), "")
	heads := make(chan string, 4)
	up := rawKeepAlive(f, func(c net.Conn, req *http.Request) bool {
		var b strings.Builder
		b.WriteString(req.Method + " " + req.RequestURI + "\n")
		body, err := io.ReadAll(req.Body)
		fmt.Fprintf(&b, "Body: %q %v\n", body, err)
		b.WriteString("Host: " + req.Host + "\n")
		keys := make([]string, 0, len(req.Header))
		for k := range req.Header {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			vs := req.Header[k]
			switch k {
			case "X-Request-Id", "Traceparent":
				vs = []string{"(set)"}
			}
			b.WriteString(k + ": " + strings.Join(vs, " | ") + "\n")
		}
		heads <- b.String()
		_, err = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	doc := fmt.Sprintf(`
services:
  - name: s
    targets: [{url: "http://%s"}]
routes:
  - {name: lean, match: {path_prefix: /l/}, service: s}
  - name: twin
    match: {path_prefix: /t/}
    service: s
    request_headers: {remove: [X-Not-Sent]}
`, up)
	// The client a peer of its own, and a trusted proxy; and the service
	// with retries (the present path would keep an idempotent request's
	// body to replay it; the lane sends it with the head, as every
	// attempt would).
	gateways := []struct {
		name string
		tg   *testGateway
	}{
		{"plain", startGateway(f, doc)},
		{"trusting", startGatewayWith(f, gatewaySetup{opts: Options{TrustedProxies: trustedProxies{netip.MustParsePrefix("127.0.0.0/8")}}}, doc)},
		{"retrying", startGateway(f, strings.Replace(doc, "    targets:", "    retries: {attempts: 1}\n    targets:", 1))},
	}
	send := func(t *testing.T, tg *testGateway, method, prefix, target, fields, proto, body string) (int, string) {
		c, err := net.Dial("tcp", tg.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if body != "" {
			fields += "\r\nContent-Length: " + strconv.Itoa(len(body))
		}
		fmt.Fprintf(c, "%s %s%s %s\r\nHost: a.example\r\n%s\r\n\r\n%s", method, prefix, strings.TrimPrefix(target, "/"), proto, fields, body)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
		if err != nil {
			return 0, ""
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return resp.StatusCode, ""
		}
		select {
		case h := <-heads:
			return 200, strings.Replace(h, prefix, "/", 1)
		case <-time.After(5 * time.Second):
			t.Fatal("a 200 without an upstream request")
			return 0, ""
		}
	}
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
	f.Fuzz(func(t *testing.T, target, fields string, http10 bool, m uint8, body string) {
		method := methods[int(m)%len(methods)]
		proto := "HTTP/1.1"
		if http10 {
			proto = "HTTP/1.0"
		}
		// Shaped into one request (whatever the bytes, the two routes
		// must agree): a target without spaces or line ends, fields
		// without an empty line; the twin's own edit left out.
		target = "/" + strings.TrimLeft(strings.Map(func(r rune) rune {
			if r == ' ' || r == '\r' || r == '\n' {
				return -1
			}
			return r
		}, target), "/")
		for strings.Contains(fields, "\r\n\r\n") {
			fields = strings.ReplaceAll(fields, "\r\n\r\n", "\r\n")
		}
		fields = strings.TrimRight(fields, "\r\n")
		if strings.Contains(strings.ToLower(fields), "x-not-sent") {
			t.Skip()
		}
		for _, gw := range gateways {
			ls, lh := send(t, gw.tg, method, "/l/", target, fields, proto, body)
			ts, th := send(t, gw.tg, method, "/t/", target, fields, proto, body)
			if ls != ts || lh != th {
				t.Errorf("%s gateway, %s %s, target %q fields %q body %q:\nlean route: %d\n%s\ntwin route: %d\n%s", gw.name, method, proto, target, fields, body, ls, lh, ts, th)
			}
		}
	})
}

// A plain answer that says Connection: close ends its upstream connection,
// though the fast path drops the field: the next request, a POST that
// cannot be sent twice, goes on a new connection, not on one the upstream
// is closing.
func TestLeanAnswerSayingCloseEndsItsConnection(t *testing.T) {
	var conns atomic.Int32
	up := rawUpstream(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, req.Body)
			if req.URL.Path == "/close" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 2\r\n\r\nok")
				time.Sleep(300 * time.Millisecond) // closes as it said, a little later
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(strconv.FormatInt(n, 10)), strconv.FormatInt(n, 10))
		}
	})
	gw := startGateway(t, oneRoute("http://"+up, ""))
	conn := dialGateway(t, gw.addr)
	br := bufio.NewReader(conn)
	if resp, body := rawRequest(t, conn, br, http.MethodGet, "/close"); resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("Connection") != "" {
		t.Fatalf("GET: %d %q, Connection %q; want 200 \"ok\" and no Connection", resp.StatusCode, body, resp.Header.Get("Connection"))
	}
	if resp, body := rawRequest(t, conn, br, http.MethodPost, "/x"); resp.StatusCode != 200 || string(body) != "2" {
		t.Fatalf("POST: %d %q; want 200 \"2\"", resp.StatusCode, body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("the upstream saw %d connections; want 2 (the first not reused)", n)
	}
	if got := metricValue(t, gw.g, `meridian_upstream_resends_total{reason="stale_connection"}`); got != 0 {
		t.Errorf("resends: %v; want 0", got)
	}
}
