package edge

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLaneMatchesPresentPath sends the same requests through a lean route,
// served on the span lane, and through its twin that is not (a request
// header edit that changes nothing), with upstreams that answer, refuse,
// reset and stall, on services with and without retries and a total
// timeout, and compares what the client sees (status, fields,
// body, whether the connection goes on) and the access log's record.
func TestLaneMatchesPresentPath(t *testing.T) {
	good := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		// Head and body in one write, so that they come in one read (the
		// lane writes an answer itself only when its body came whole
		// with its head: written apart, on a busy machine, they may not).
		head := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
		if req.Method != http.MethodHead {
			head += "hello"
		}
		io.WriteString(c, head)
		return true
	})
	reset := rawUpstream(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		c.(*net.TCPConn).SetLinger(0) // a reset, not a FIN
	})
	stall := rawUpstream(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c) // until the gateway gives up
	})
	busy := func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nRetry-After: 1\r\n\r\nbusy")
	}
	unavailable := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		busy(c)
		return true
	})
	echo := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.RequestURI), req.RequestURI)
		return true
	})
	const clientTrace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	echoHead := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		var lines []string
		for k, vs := range req.Header {
			vs = slices.Clone(vs)
			for i, v := range vs {
				// What the gateway makes anew for each request shown as
				// such, the client's own as it came.
				switch k {
				case "X-Request-Id":
					if v != "client-id-1" {
						vs[i] = "(made)"
					}
				case "Traceparent":
					if p := strings.Split(v, "-"); len(p) == 4 && v != clientTrace {
						p[1] = map[bool]string{true: "(client)", false: "(new)"}[p[1] == clientTrace[3:35]]
						p[2] = "(span)"
						vs[i] = strings.Join(p, "-")
					}
				}
			}
			lines = append(lines, k+": "+strings.Join(vs, " | "))
		}
		slices.Sort(lines)
		body := req.RequestURI + "\n" + strings.Join(lines, "\n")
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Up-Remove: r\r\nX-Up-Set: orig\r\nX-Up-Add: first\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return true
	})
	var flips atomic.Int64
	flaky := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		if flips.Add(1)%2 == 1 {
			busy(c) // the first attempt at each request
		} else {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nagain")
		}
		return true
	})
	refused := strings.TrimPrefix(deadAddr(t), "http://")
	svc := func(name, addr string) string {
		return fmt.Sprintf("  - {name: %s, targets: [{url: \"http://%s\"}], timeouts: {response_header: 300ms}}\n", name, addr)
	}
	timed := func(name, addr string) string {
		return fmt.Sprintf("  - {name: %s, targets: [{url: \"http://%s\"}], timeouts: {response_header: 1s, total: 200ms}, "+
			"retries: {attempts: 1, on: [\"503\"], backoff: {base: 1ms, max: 1ms}}}\n", name, addr)
	}
	retrying := func(name, addr string) string {
		return fmt.Sprintf("  - {name: %s, targets: [{url: \"http://%s\"}], timeouts: {response_header: 300ms}, "+
			"retries: {attempts: 1, on: [connect_failure, reset, timeout, \"503\"], backoff: {base: 1ms, max: 1ms}}}\n", name, addr)
	}
	route := func(name, prefix, service string) string {
		return fmt.Sprintf("  - {name: %s-lean, match: {path_prefix: /l%s}, service: %s}\n"+
			"  - {name: %s-twin, match: {path_prefix: /p%s}, service: %s, request_headers: {remove: [X-Not-Sent]}}\n",
			name, prefix, service, name, prefix, service)
	}
	// Edits of the client's fields and the gateway's, and of the answer's.
	ops := ", request_headers: {remove: [Accept, Via], set: {X-Forwarded-Proto: custom, X-Gw: one}, add: {Forwarded: for=extra, X-Multi: two}}" +
		", response_headers: {remove: [X-Up-Remove], set: {X-Up-Set: replaced, X-New: n}, add: {X-Up-Add: added}}"
	setup, log := withReuseLog()
	tg := startGatewayWith(t, setup, "services:\n"+svc("good", good)+svc("reset", reset)+svc("stall", stall)+svc("refused", refused)+
		retrying("r-good", good)+retrying("r-flaky", flaky)+retrying("r-unavailable", unavailable)+retrying("r-stall", stall)+retrying("r-refused", refused)+
		timed("t-good", good)+timed("t-flaky", flaky)+timed("t-stall", stall)+svc("echo", echo)+
		fmt.Sprintf("  - {name: echo-head, targets: [{url: \"http://%s\"}]}\n", echoHead)+
		fmt.Sprintf("  - {name: echo-pass, targets: [{url: \"http://%s\"}], proxy_headers: {request_id: false, traceparent: false, via: false}}\n", echoHead)+
		"routes:\n"+route("good", "/good/", "good")+route("reset", "/reset/", "reset")+route("stall", "/stall/", "stall")+route("refused", "/refused/", "refused")+
		route("r-good", "/r-good/", "r-good")+route("r-flaky", "/r-flaky/", "r-flaky")+route("r-unavailable", "/r-unavailable/", "r-unavailable")+
		route("r-stall", "/r-stall/", "r-stall")+route("r-refused", "/r-refused/", "r-refused")+
		route("t-good", "/t-good/", "t-good")+route("t-flaky", "/t-flaky/", "t-flaky")+route("t-stall", "/t-stall/", "t-stall")+
		"  - {name: strip-lean, match: {path_prefix: /l/strip/}, service: echo, rewrite: {strip_prefix: true}}\n"+
		"  - {name: strip-twin, match: {path_prefix: /p/strip/}, service: echo, rewrite: {strip_prefix: true}, request_headers: {remove: [X-Not-Sent]}}\n"+
		"  - {name: rw-lean, match: {path: \"/l/rw/{id}\"}, service: echo, rewrite: {path: \"/users/{id}/info\"}}\n"+
		"  - {name: rw-twin, match: {path: \"/p/rw/{id}\"}, service: echo, rewrite: {path: \"/users/{id}/info\"}, request_headers: {remove: [X-Not-Sent]}}\n"+
		"  - {name: ops-lean, match: {path_prefix: /l/ops/}, service: echo-head"+ops+"}\n"+
		"  - {name: ops-twin, match: {path_prefix: /p/ops/}, service: echo-head"+ops+"}\n"+
		route("ids", "/ids/", "echo-head")+route("pass", "/pass/", "echo-pass"))

	type seen struct {
		status int
		fields map[string][]string
		body   string
		next   bool
		close  bool // the answer said Connection: close
		log    map[string]any
	}
	// The client's trace and request id: valid, and not.
	kept := "Traceparent: " + clientTrace + "\r\nTracestate: k=v\r\nX-Request-Id: client-id-1\r\n"
	broken := "Traceparent: 00-zz\r\nTracestate: k=v\r\nX-Request-Id: not one\r\n"
	extra := map[string]string{"/ids/kept": kept, "/ids/broken": broken, "/pass/kept": kept, "/pass/broken": broken,
		"/pass/conn": "Connection: Keep-Alive, keep-alive\r\n", "/good/conn": "Connection: keep-alive\r\n", "/good/10ka": "Connection: keep-alive\r\n"}
	// HTTP/1.0 requests, with and without keep-alive.
	http10 := map[string]bool{"/good/10": true, "/good/10ka": true, "/ids/10": true, "/r-flaky/10": true, "/reset/10": true}
	get := func(method, path string) seen {
		t.Helper()
		n0 := log.count()
		c := dialGateway(t, tg.addr)
		br := bufio.NewReader(c)
		proto := "HTTP/1.1"
		if http10[path[2:]] {
			proto = "HTTP/1.0"
		}
		fmt.Fprintf(c, "%s %s %s\r\nHost: a.example\r\nAccept: */*\r\n%s\r\n", method, path, proto, extra[path[2:]])
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		s := seen{status: resp.StatusCode, fields: map[string][]string{}, body: string(body), close: resp.Close}
		s.body = problemIDs.ReplaceAllString(strings.NewReplacer("/l/", "/p/", "-lean", "-twin").Replace(s.body), "$1")
		for k, vs := range resp.Header {
			switch k {
			case "Date", "X-Request-Id":
				vs = []string{"(present)"}
			}
			s.fields[k] = vs
		}
		fmt.Fprintf(c, "GET /l/good/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
		if r2, err := http.ReadResponse(br, nil); err == nil && r2.StatusCode == 200 {
			io.Copy(io.Discard, r2.Body)
			s.next = true
		}
		c.Close()
		for deadline := time.Now().Add(2 * time.Second); log.count() == n0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		log.mu.Lock()
		if len(log.recs) > n0 {
			s.log = log.recs[n0]
		}
		log.mu.Unlock()
		if s.log == nil {
			t.Fatalf("%s %s: no access log record", method, path)
		}
		for _, k := range []string{"request_id", "trace_id", "duration_ms", "upstream_ms", "client"} {
			if k == "trace_id" && (strings.HasSuffix(path, "/pass/broken") || strings.HasSuffix(path, "/pass/conn")) {
				// No trace: the service makes none, and the client's is
				// not one.
				if s.log[k] != nil && s.log[k] != "" {
					t.Errorf("%s %s: the record has trace_id %v", method, path, s.log[k])
				}
				continue
			}
			if s.log[k] == nil || s.log[k] == "" {
				t.Errorf("%s %s: the record has no %s", method, path, k)
			}
			delete(s.log, k)
		}
		if d, ok := s.log["error_detail"].(string); ok {
			s.log["error_detail"] = localAddr.ReplaceAllString(d, "tcp ")
		}
		s.log["path"] = strings.Replace(s.log["path"].(string), "/l/", "/p/", 1)
		s.log["route"] = strings.Replace(s.log["route"].(string), "-lean", "-twin", 1)
		return s
	}
	for _, c := range []struct {
		method, path string
		status       int
		presented    int64 // made present on the lane
		retriedOn    string
	}{
		{"GET", "/good/x?q=1", 200, 0, ""},
		{"HEAD", "/good/x", 200, 0, ""},
		{"GET", "/reset/x", 502, 1, ""},
		{"GET", "/stall/x", 504, 1, ""},
		{"GET", "/refused/x", 502, 1, ""},
		// Services that retry: the lane's attempt is the first.
		{"GET", "/r-good/x", 200, 0, ""},
		{"HEAD", "/r-good/x", 200, 0, ""},
		{"GET", "/r-flaky/x", 200, 1, "503"},
		{"GET", "/r-unavailable/x", 503, 1, "503"},
		{"GET", "/r-stall/x", 504, 1, "http_response_timeout"},
		{"GET", "/r-refused/x", 502, 1, "connection_refused"},
		// Services with a total timeout (and retries).
		{"GET", "/t-good/x", 200, 0, ""},
		{"GET", "/t-flaky/x", 200, 1, "503"},
		{"GET", "/t-stall/x", 504, 1, ""},
		// Routes that rewrite the path or strip a prefix.
		{"GET", "/strip/x?q=1", 200, 0, ""},
		{"GET", "/strip//evil.example/x", 200, 0, ""},
		{"HEAD", "/strip/", 200, 0, ""},
		{"GET", "/rw/42?a=b", 200, 0, ""},
		// A route that edits the request's fields and the answer's.
		{"GET", "/ops/x", 200, 0, ""},
		{"HEAD", "/ops/x", 200, 0, ""},
		// The client's trace and request id, replaced or passed on.
		{"GET", "/ids/kept", 200, 0, ""},
		{"GET", "/ids/broken", 200, 0, ""},
		{"GET", "/pass/kept", 200, 0, ""},
		{"GET", "/pass/broken", 200, 0, ""},
		// Connection: keep-alive, which many clients send.
		{"GET", "/pass/conn", 200, 0, ""},
		{"GET", "/good/conn", 200, 0, ""},
		// HTTP/1.0 clients (ApacheBench, health checkers).
		{"GET", "/good/10", 200, 0, ""},
		{"HEAD", "/good/10", 200, 0, ""},
		{"GET", "/good/10ka", 200, 0, ""},
		{"GET", "/ids/10", 200, 0, ""},
		{"GET", "/r-flaky/10", 200, 1, "503"},
		{"GET", "/reset/10", 502, 1, ""},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			served0, presented0 := laneServed.Load(), lanePresented.Load()
			l := get(c.method, "/l"+c.path)
			// Two requests on the connection, but for HTTP/1.0 without
			// keep-alive.
			closes := http10[c.path] && c.path != "/good/10ka"
			want := int64(2)
			if closes {
				want = 1
			}
			if s, p := laneServed.Load()-served0, lanePresented.Load()-presented0; s != want || p != c.presented {
				t.Errorf("span lane: %d requests, %d made present; want %d, %d", s, p, want, c.presented)
			}
			served0 = laneServed.Load()
			p := get(c.method, "/p"+c.path)
			if s := laneServed.Load() - served0; s != want-1 {
				t.Errorf("span lane: %d requests of the present route's; want %d (the second, lean)", s, want-1)
			}
			if l.status != c.status {
				t.Errorf("status %d; want %d", l.status, c.status)
			}
			if l.status != p.status || l.body != p.body || l.next != p.next || l.close != p.close || !equalFields(l.fields, p.fields) {
				t.Errorf("lane:    %+v\npresent: %+v", l, p)
			}
			if want, ok := map[string]string{
				"/strip/x?q=1":           "/x?q=1",
				"/strip//evil.example/x": "/evil.example/x",
				"/rw/42?a=b":             "/users/42/info?a=b",
			}[c.path]; ok && l.body != want {
				t.Errorf("the upstream got %q; want %q", l.body, want)
			}
			if want, ok := map[string]string{
				"/ids/kept": "/p/ids/kept\nAccept: */*\nForwarded: for=127.0.0.1;proto=http;host=a.example\nTraceparent: 00-(client)-(span)-00\nTracestate: k=v\n" +
					"Via: 1.1 meridian\nX-Forwarded-For: 127.0.0.1\nX-Forwarded-Host: a.example\nX-Forwarded-Proto: http\nX-Request-Id: client-id-1",
				"/ids/broken": "/p/ids/broken\nAccept: */*\nForwarded: for=127.0.0.1;proto=http;host=a.example\nTraceparent: 00-(new)-(span)-01\n" +
					"Via: 1.1 meridian\nX-Forwarded-For: 127.0.0.1\nX-Forwarded-Host: a.example\nX-Forwarded-Proto: http\nX-Request-Id: (made)",
				"/pass/kept": "/p/pass/kept\nAccept: */*\nForwarded: for=127.0.0.1;proto=http;host=a.example\nTraceparent: " + clientTrace + "\nTracestate: k=v\n" +
					"X-Forwarded-For: 127.0.0.1\nX-Forwarded-Host: a.example\nX-Forwarded-Proto: http\nX-Request-Id: client-id-1",
				"/pass/conn": "/p/pass/conn\nAccept: */*\nForwarded: for=127.0.0.1;proto=http;host=a.example\n" +
					"X-Forwarded-For: 127.0.0.1\nX-Forwarded-Host: a.example\nX-Forwarded-Proto: http",
				"/pass/broken": "/p/pass/broken\nAccept: */*\nForwarded: for=127.0.0.1;proto=http;host=a.example\nTraceparent: 00-zz\nTracestate: k=v\n" +
					"X-Forwarded-For: 127.0.0.1\nX-Forwarded-Host: a.example\nX-Forwarded-Proto: http\nX-Request-Id: (made)",
				"/ids/10": "/p/ids/10\nAccept: */*\nForwarded: for=127.0.0.1;proto=http;host=a.example\nTraceparent: 00-(new)-(span)-01\n" +
					"Via: 1.0 meridian\nX-Forwarded-For: 127.0.0.1\nX-Forwarded-Host: a.example\nX-Forwarded-Proto: http\nX-Request-Id: (made)",
			}[c.path]; ok && l.body != want {
				t.Errorf("the upstream got:\n%s\nwant:\n%s", l.body, want)
			}
			if c.path == "/ops/x" {
				want := map[string][]string{"X-Up-Set": {"replaced"}, "X-New": {"n"}, "X-Up-Add": {"first", "added"}, "X-Up-Remove": nil}
				for k, v := range want {
					if !slices.Equal(l.fields[k], v) {
						t.Errorf("answer's %s: %q; want %q", k, l.fields[k], v)
					}
				}
				if c.method == "GET" && l.body != "/p/ops/x\nForwarded: for=127.0.0.1;proto=http;host=a.example | for=extra\nTraceparent: 00-(new)-(span)-01\n"+
					"X-Forwarded-For: 127.0.0.1\nX-Forwarded-Host: a.example\nX-Forwarded-Proto: custom\nX-Gw: one\nX-Multi: two\nX-Request-Id: (made)" {
					t.Errorf("the upstream got:\n%s", l.body)
				}
			}
			if http10[c.path] {
				// The connection ends with the answer unless the client
				// asked to keep it.
				var wantConn []string // close: resp.Close, the field taken out
				if !closes {
					wantConn = []string{"keep-alive"}
				}
				if !slices.Equal(l.fields["Connection"], wantConn) || l.close != closes || l.next == closes || l.log["proto"] != "HTTP/1.0" {
					t.Errorf("HTTP/1.0: Connection %q, close %v, next request answered %v, logged as %v; want %q, %v, %v, HTTP/1.0",
						l.fields["Connection"], l.close, l.next, l.log["proto"], wantConn, closes, !closes)
				}
			}
			if on, _ := l.log["retried_on"].(string); on != c.retriedOn {
				t.Errorf("retried_on %q; want %q", on, c.retriedOn)
			}
			if fmt.Sprint(l.log) != fmt.Sprint(p.log) {
				t.Errorf("access log:\nlane:    %v\npresent: %v", l.log, p.log)
			}
		})
	}
}

// localAddr is the gateway's end of an upstream connection in an error.
var localAddr = regexp.MustCompile(`tcp [0-9.:]+->`)

// A client that leaves while its request waits on the lane for a slow
// upstream is seen (the disconnect watch), the upstream's request
// abandoned and the exchange logged as the client's cancellation, under a
// service's total timeout and retries too.
func TestLaneClientGoneCancelsUpstream(t *testing.T) {
	for _, svcOpts := range []string{"", ", timeouts: {total: 30s}, retries: {attempts: 2}"} {
		t.Run("service"+svcOpts, func(t *testing.T) {
			arrived := make(chan struct{}, 1)
			abandoned := make(chan bool, 1)
			up := rawUpstream(t, func(c net.Conn) {
				http.ReadRequest(bufio.NewReader(c))
				arrived <- struct{}{}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err := c.Read(make([]byte, 1))
				abandoned <- err == io.EOF
			})
			setup, log := withReuseLog()
			tg := startGatewayWith(t, setup, fmt.Sprintf(`
services: [{name: s, targets: [{url: "http://%s"}]%s}]
routes: [{name: r, match: {path_prefix: /}, service: s}]
`, up, svcOpts))
			served0 := laneServed.Load()
			c := dialGateway(t, tg.addr)
			io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a.example\r\n\r\n")
			<-arrived
			c.Close()
			if !<-abandoned {
				t.Fatal("the upstream's request was not abandoned within 10 s of the client leaving")
			}
			if n := laneServed.Load() - served0; n != 1 {
				t.Fatalf("span lane took %d requests; want 1", n)
			}
			for deadline := time.Now().Add(2 * time.Second); log.count() == 0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			log.mu.Lock()
			defer log.mu.Unlock()
			if len(log.recs) != 1 || log.recs[0]["status"] != int64(499) || log.recs[0]["error"] != "client_canceled" {
				t.Fatalf("access log %v; want one record, status 499, error client_canceled", log.recs)
			}
		})
	}
}

// The lane serves routes that rewrite the path or strip a prefix, unless
// the path they make is escaped on its way upstream, and routes that edit
// header fields, unless they edit the answer's Via; it leaves to the
// general path requests
// the lean path does not take; a table with a header condition and a
// balancer hashing on a header or cookie it serves with a header map made
// for them. Each is answered.
func TestLaneLeavesWhatItCannotServe(t *testing.T) {
	be := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	for _, c := range []struct {
		name, service, route, request string
		lane                          bool
	}{
		{"lean", "", "", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"header condition", "", ", match: {path_prefix: /, headers: [{name: X-A}]}", "GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n", true},
		{"hash on a header", ", balancer: {policy: consistent_hash, hash_on: \"header:X-K\"}", "", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"hash on a cookie", ", balancer: {policy: consistent_hash, hash_on: \"cookie:k\"}", "", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"hash on the client", ", balancer: {policy: consistent_hash, hash_on: client_ip}", "", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"retries", ", retries: {attempts: 1}", "", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"total timeout", ", timeouts: {total: 5s}", "", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"prefix strip", "", ", rewrite: {strip_prefix: true}", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"rewrite", "", ", rewrite: {path: /y}", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"rewrite to a path that is escaped", "", ", rewrite: {path: /café}", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"header edits", "", ", request_headers: {remove: [X-B]}, response_headers: {set: {X-C: c}}", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"the answer's Via edited", "", ", response_headers: {remove: [Via]}", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"POST", "", "", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", true},
		{"POST with a body", "", "", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", true},
		{"POST with a body, retries", ", retries: {attempts: 1}", "", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", true},
		{"PUT with a body, retries", ", retries: {attempts: 1}", "", "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", true}, // sent again with a retry (TestLaneBodiesMatchPresentPath)
		{"PUT with a body", "", "", "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", true},
		{"GET with a body", "", "", "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", false},
		{"chunked POST", "", "", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false},
		{"a bodyless POST with an idempotency key", "", "", "POST /x HTTP/1.1\r\nHost: a\r\nIdempotency-Key: k\r\nContent-Length: 0\r\n\r\n", false},
		{"a POST with a body and an idempotency key", "", "", "POST /x HTTP/1.1\r\nHost: a\r\nIdempotency-Key: k\r\nContent-Length: 2\r\n\r\nhi", true},
		{"client's trace", "", "", "GET /x HTTP/1.1\r\nHost: a\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n", true},
		{"two traces", "", "", "GET /x HTTP/1.1\r\nHost: a\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01\r\n\r\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			route := c.route
			if !strings.Contains(route, "match:") {
				route = ", match: {path_prefix: /}" + route
			}
			tg := startGateway(t, fmt.Sprintf(`
services: [{name: s, targets: [{url: "http://%s"}]%s}]
routes: [{name: r, service: s%s}]
`, be, c.service, route))
			served0 := laneServed.Load()
			wantOK(t, tg.addr, c.request)
			if got := laneServed.Load()-served0 == 1; got != c.lane {
				t.Fatalf("served on the span lane: %v; want %v", got, c.lane)
			}
		})
	}
}

// A route with a header condition outranks one without for a request that
// has the field: the lane, which has no header map, must leave such a
// table alone rather than match the other.
func TestLaneLeavesHeaderRoutes(t *testing.T) {
	answer := func(body string) string {
		return rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			return true
		})
	}
	tg := startGateway(t, fmt.Sprintf(`
services:
  - {name: mobile, targets: [{url: "http://%s"}]}
  - {name: web, targets: [{url: "http://%s"}]}
routes:
  - {name: mobile, match: {path_prefix: /, headers: [{name: X-Client, exact: mobile}]}, service: mobile}
  - {name: web, match: {path_prefix: /}, service: web}
`, answer("mobile"), answer("web")))
	for _, c := range []struct{ field, want string }{{"X-Client: mobile\r\n", "mobile"}, {"", "web"}} {
		conn := dialGateway(t, tg.addr)
		fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: a\r\n%s\r\n", c.field)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != c.want {
			t.Errorf("with %q: answered by %q; want %q", c.field, body, c.want)
		}
	}
}

// A balancer hashing on a header sends the same key to the same target on
// the lane as on the general path, and different keys apart.
func TestLaneHashesOnTheHeader(t *testing.T) {
	target := func(name string) string {
		return rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(name), name)
			return true
		})
	}
	tg := startGateway(t, fmt.Sprintf(`
services:
  - name: s
    targets: [{url: "http://%s"}, {url: "http://%s"}, {url: "http://%s"}]
    balancer: {policy: consistent_hash, hash_on: "header:X-K"}
routes:
  - {name: lean, match: {path_prefix: /l/}, service: s}
  - {name: twin, match: {path_prefix: /t/}, service: s, request_headers: {remove: [X-Not-Sent]}}
`, target("a"), target("b"), target("c")))
	get := func(path, key string) string {
		conn := dialGateway(t, tg.addr)
		defer conn.Close()
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: h\r\nX-K: %s\r\n\r\n", path, key)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	seen := map[string]bool{}
	served0 := laneServed.Load()
	for i := range 30 {
		key := fmt.Sprintf("key-%d", i)
		l, p := get("/l/x", key), get("/t/x", key)
		if l != p {
			t.Fatalf("key %s: the lane went to %s, the general path to %s", key, l, p)
		}
		seen[l] = true
	}
	if len(seen) < 2 {
		t.Fatalf("30 keys all went to %v: the hash is not on the header", seen)
	}
	if n := laneServed.Load() - served0; n != 30 {
		t.Fatalf("the lane served %d of the lean route's 30 requests", n)
	}
}

// A client that resets its connection before a large plain answer is
// written is logged as the general path logs it: the write failed, the
// client canceled (not a success with the whole body).
func TestLaneClientResetWhileAnswerIsWritten(t *testing.T) {
	gone := make(chan struct{})
	up := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		<-gone // the client has reset its connection to the gateway
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"+strings.Repeat("x", 5000))
		return true
	})
	setup, log := withReuseLog()
	tg := startGatewayWith(t, setup, fmt.Sprintf(`
services: [{name: s, targets: [{url: "http://%s"}]}]
routes:
  - {name: lean, match: {path_prefix: /l/}, service: s}
  - {name: twin, match: {path_prefix: /t/}, service: s, request_headers: {remove: [X-Not-Sent]}}
`, up))
	var recs []map[string]any
	for _, prefix := range []string{"/l/", "/t/"} {
		n0 := log.count()
		c := dialGateway(t, tg.addr)
		io.WriteString(c, "GET "+prefix+"x HTTP/1.1\r\nHost: a\r\n\r\n")
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		gone <- struct{}{}
		for deadline := time.Now().Add(5 * time.Second); log.count() == n0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		log.mu.Lock()
		if len(log.recs) > n0 {
			recs = append(recs, log.recs[n0])
		}
		log.mu.Unlock()
	}
	if len(recs) != 2 {
		t.Fatalf("%d access log records; want 2", len(recs))
	}
	for i, r := range recs {
		if r["error"] != "client_canceled" {
			t.Errorf("%s: record %v; want error client_canceled", []string{"lane", "general path"}[i], r)
		}
	}
	if recs[0]["status"] != recs[1]["status"] || recs[0]["bytes_out"] != recs[1]["bytes_out"] {
		t.Errorf("lane: status %v, bytes_out %v; general path: %v, %v", recs[0]["status"], recs[0]["bytes_out"], recs[1]["status"], recs[1]["bytes_out"])
	}
}

// A request the lane serves counts in its service's retry budget, as one
// the general path serves does: the budget's allowance is a share of
// them.
func TestLaneCountsInTheRetryBudget(t *testing.T) {
	be := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		if strings.HasPrefix(req.URL.Path, "/busy") {
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
		} else {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		return true
	})
	setup, log := withReuseLog()
	// No retries but a half of the requests: four answered, and a fifth
	// that fails, allow two.
	tg := startGatewayWith(t, setup, fmt.Sprintf(`
services: [{name: s, targets: [{url: "http://%s"}], retries: {attempts: 1, budget: {ratio: 0.5, min_per_second: 0}, backoff: {base: 1ms, max: 1ms}}}]
routes: [{name: r, match: {path_prefix: /}, service: s}]
`, be))
	served0 := laneServed.Load()
	c := dialGateway(t, tg.addr)
	br := bufio.NewReader(c)
	for _, path := range []string{"/a", "/b", "/c", "/d", "/busy"} {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	if n := laneServed.Load() - served0; n != 5 {
		t.Fatalf("span lane took %d requests; want 5", n)
	}
	for deadline := time.Now().Add(2 * time.Second); log.count() < 5 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.recs) != 5 {
		t.Fatalf("%d access log records; want 5", len(log.recs))
	}
	if rec := log.recs[4]; rec["attempts"] != int64(2) || rec["retried_on"] != "503" || rec["retry_budget_exhausted"] != nil {
		t.Fatalf("the failing request's record %v; want attempts 2, retried_on 503", rec)
	}
}

// A lane request to a service with a total timeout that runs past the
// disconnect watch's start has its total armed by the watch: the watch must
// see the total begun (under -race, a race between the two fails the test).
func TestLaneTotalArmedByTheWatch(t *testing.T) {
	be := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		time.Sleep(100 * time.Millisecond) // past the watch's start, within the total
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	tg := startGateway(t, fmt.Sprintf(`
services: [{name: s, targets: [{url: "http://%s"}], timeouts: {total: 300ms}}]
routes: [{name: r, match: {path_prefix: /}, service: s}]
`, be))
	served0 := laneServed.Load()
	for i := range 5 {
		wantOK(t, tg.addr, fmt.Sprintf("GET /x%d HTTP/1.1\r\nHost: a\r\n\r\n", i))
	}
	if n := laneServed.Load() - served0; n != 5 {
		t.Fatalf("span lane took %d requests; want 5", n)
	}
}

// wantOK sends request on a new connection to the gateway at addr and
// fails the test unless the answer is 200 "ok".
func wantOK(t *testing.T, addr, request string) {
	t.Helper()
	conn := dialGateway(t, addr)
	io.WriteString(conn, request)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("got %d %q; want 200 \"ok\"", resp.StatusCode, body)
	}
}

// The forwarding fields a client or a proxy sends go upstream from the lane
// as from the general path: a peer's that is not a trusted proxy replaced or
// dropped, a trusted proxy's extended or kept, none where the service sends
// none, and a route's edits made after; through a trusted proxy the client
// it forwarded is the one balanced on and logged.
func TestLaneForwardingMatchesPresentPath(t *testing.T) {
	echo := func(name string) string {
		return rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
			var lines []string
			for k, vs := range req.Header {
				switch k {
				case "X-Request-Id", "Traceparent":
					vs = []string{"(made)"}
				}
				lines = append(lines, k+": "+strings.Join(vs, " | "))
			}
			slices.Sort(lines)
			body := strings.Join(lines, "\n")
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Up: %s\r\nContent-Length: %d\r\n\r\n%s", name, len(body), body)
			return true
		})
	}
	upA, upB := echo("a"), echo("b")
	doc := fmt.Sprintf(`
services:
  - {name: full, targets: [{url: "http://%[1]s"}]}
  - {name: no-x, targets: [{url: "http://%[1]s"}], proxy_headers: {x_forwarded: false}}
  - {name: no-fwd, targets: [{url: "http://%[1]s"}], proxy_headers: {forwarded: false}}
  - name: hashed
    targets: [{url: "http://%[1]s"}, {url: "http://%[2]s"}]
    balancer: {policy: consistent_hash, hash_on: client_ip}
routes:
`, upA, upB)
	ops := ", request_headers: {set: {X-Forwarded-Proto: custom}, add: {X-Forwarded-For: extra, Forwarded: for=extra}, remove: [X-Real-Ip]}"
	for _, r := range [][3]string{{"full", "full", ""}, {"no-x", "no-x", ""}, {"no-fwd", "no-fwd", ""}, {"hashed", "hashed", ""}, {"ops", "full", ops}} {
		// The twin is kept off the fast paths by its name (notLean).
		doc += fmt.Sprintf("  - {name: %[1]s-lean, match: {path_prefix: /l/%[1]s/}, service: %[2]s%[3]s}\n", r[0], r[1], r[2])
		doc += fmt.Sprintf("  - {name: %[1]s-twin, match: {path_prefix: /p/%[1]s/}, service: %[2]s%[3]s}\n", r[0], r[1], r[2])
	}
	fieldSets := []string{
		"",
		"X-Forwarded-For: 203.0.113.7",
		"X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nX-Forwarded-For: 198.51.100.2",
		"x-forwarded-for: 198.51.100.2:4711, [2001:db8::1]:80",
		"X-Forwarded-For: not-an-address, 203.0.113.9",
		"X-Forwarded-For: 127.0.0.5", // a trusted proxy's only
		"X-Forwarded-For:",
		"X-Forwarded-Proto: https\r\nX-Forwarded-Host: pub.example",
		"Forwarded: for=203.0.113.7;proto=https\r\nforwarded: for=10.0.0.1",
		"X-Real-IP: 192.0.2.1\r\nCF-Connecting-IP: 192.0.2.2\r\nx-forwarded-port: 443",
		"X-Forwarded-Client-Cert: Hash=abc",
		"Via: 1.1 cdn.example\r\nX-Forwarded-For: 203.0.113.7\r\nvia: 1.0 other",
		"Accept: */*\r\nX-Forwarded-Host: pub.example\r\nX-Forwarded-For: 203.0.113.7\r\nForwarded: for=203.0.113.7\r\nX-Real-Ip: 192.0.2.1\r\nX-Forwarded-Proto: https",
	}
	type seen struct {
		status int
		up     string // the upstream's name
		body   string
		log    string
	}
	for _, trusted := range []bool{false, true} {
		setup, log := withReuseLog()
		if trusted {
			setup.opts.TrustedProxies = trustedProxies{netip.MustParsePrefix("127.0.0.0/8")}
		}
		tg := startGatewayWith(t, setup, doc)
		get := func(t *testing.T, path, fields string) seen {
			t.Helper()
			n0 := log.count()
			c := dialGateway(t, tg.addr)
			defer c.Close()
			if fields != "" {
				fields += "\r\n"
			}
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a.example\r\n%s\r\n", path, fields)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			for deadline := time.Now().Add(2 * time.Second); log.count() == n0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			log.mu.Lock()
			defer log.mu.Unlock()
			if len(log.recs) <= n0 {
				t.Fatalf("GET %s: no access log record", path)
			}
			rec := maps.Clone(log.recs[n0])
			for _, k := range []string{"request_id", "trace_id", "duration_ms", "upstream_ms"} {
				delete(rec, k)
			}
			rec["path"] = strings.Replace(rec["path"].(string), "/l/", "/p/", 1)
			rec["route"] = strings.Replace(rec["route"].(string), "-lean", "-twin", 1)
			for _, k := range []string{"client", "peer"} {
				if v, ok := rec[k].(string); ok && strings.HasPrefix(v, "127.0.0.1:") {
					rec[k] = "127.0.0.1:(port)" // the connection's
				}
			}
			return seen{resp.StatusCode, resp.Header.Get("X-Up"), string(body), fmt.Sprint(rec)}
		}
		for _, route := range []string{"full", "no-x", "no-fwd", "hashed", "ops"} {
			for i, fields := range fieldSets {
				t.Run(fmt.Sprintf("trusted=%v/%s/%d", trusted, route, i), func(t *testing.T) {
					served0 := laneServed.Load()
					l := get(t, "/l/"+route+"/x", fields)
					if n := laneServed.Load() - served0; n != 1 {
						t.Errorf("the span lane took %d requests; want 1", n)
					}
					p := get(t, "/p/"+route+"/x", fields)
					if l != p {
						t.Errorf("fields %q:\nlane:    %+v\npresent: %+v", fields, l, p)
					}
					if l.status != 200 {
						t.Errorf("status %d", l.status)
					}
				})
			}
		}
		if trusted {
			// A forwarded client the ring puts on the other target than
			// the proxy's own address: the lane balances on it too.
			own := get(t, "/p/hashed/x", "").up
			found := false
			for i := 1; i < 64 && !found; i++ {
				xff := fmt.Sprintf("X-Forwarded-For: 203.0.113.%d", i)
				if p := get(t, "/p/hashed/x", xff); p.up != own {
					found = true
					if l := get(t, "/l/hashed/x", xff); l.up != p.up {
						t.Errorf("%s: the lane picked %s, the general path %s", xff, l.up, p.up)
					}
				}
			}
			if !found {
				t.Errorf("every forwarded client went to target %s", own)
			}
		}
		// What the general path does, spelled out for a few (so that the
		// two cannot agree on a wrong answer there).
		for _, c := range []struct {
			route, fields, xff, client string
		}{
			{"full", "X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nX-Forwarded-For: 198.51.100.2", "127.0.0.1", "127.0.0.1:(port)"},
			{"ops", "X-Forwarded-For: 203.0.113.7", "127.0.0.1 | extra", "127.0.0.1:(port)"},
		} {
			if trusted {
				c.xff, c.client = "203.0.113.7, 10.0.0.1, 198.51.100.2, 127.0.0.1", "198.51.100.2"
				if c.route == "ops" {
					c.xff, c.client = "203.0.113.7, 127.0.0.1 | extra", "203.0.113.7"
				}
			}
			s := get(t, "/l/"+c.route+"/x", c.fields)
			if !strings.Contains(s.body, "\nX-Forwarded-For: "+c.xff+"\n") {
				t.Errorf("trusted=%v %s %q: the upstream got\n%s\nwant X-Forwarded-For: %s", trusted, c.route, c.fields, s.body, c.xff)
			}
			if !strings.Contains(s.log, "client:"+c.client+" ") {
				t.Errorf("trusted=%v %s %q: access log %s; want client %s", trusted, c.route, c.fields, s.log, c.client)
			}
		}
	}
}

// Requests with bodies go upstream from the lane, the body sent with the
// head, as from the general path: POST, PUT, PATCH and DELETE with a body,
// bodyless ones with their zero length, on plain answers, a status the
// service retries on (not for a POST), errors and a body over the route's
// limit (the general path's 413); and the connection goes on to the next
// request, pipelined behind or not.
func TestLaneBodiesMatchPresentPath(t *testing.T) {
	echo := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		body, _ := io.ReadAll(req.Body)
		out := fmt.Sprintf("%s %s length=%q type=%q body=%q", req.Method, req.RequestURI, req.Header["Content-Length"], req.Header.Get("Content-Type"), body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(out), out)
		return true
	})
	unavailable := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
		return true
	})
	reset := rawUpstream(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		c.(*net.TCPConn).SetLinger(0)
	})
	// flaky answers every other request 503, the next as echo does: a
	// request to it is retried once and its retry answered (attempts
	// come one after the other, so each request takes two).
	var flakyN atomic.Int64
	flaky := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		body, _ := io.ReadAll(req.Body)
		if flakyN.Add(1)%2 == 1 {
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
			return true
		}
		out := fmt.Sprintf("%s %s length=%q body=%q", req.Method, req.RequestURI, req.Header["Content-Length"], body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(out), out)
		return true
	})
	refused := strings.TrimPrefix(deadAddr(t), "http://")
	setup, log := withReuseLog()
	doc := fmt.Sprintf(`
services:
  - {name: echo, targets: [{url: "http://%s"}]}
  - {name: busy, targets: [{url: "http://%s"}], retries: {attempts: 1, on: ["503"], backoff: {base: 1ms, max: 1ms}}}
  - {name: reset, targets: [{url: "http://%s"}]}
  - {name: flaky, targets: [{url: "http://%s"}], retries: {attempts: 1, on: ["503"], backoff: {base: 1ms, max: 1ms}}}
  - {name: reset-retried, targets: [{url: "http://%s"}], retries: {attempts: 1, backoff: {base: 1ms, max: 1ms}}}
  - {name: refused-retried, targets: [{url: "http://%s"}], retries: {attempts: 1, backoff: {base: 1ms, max: 1ms}}}
routes:
`, echo, unavailable, reset, flaky, reset, refused)
	for _, r := range [][3]string{{"echo", "echo", ""}, {"busy", "busy", ""}, {"reset", "reset", ""}, {"small", "echo", ", limits: {max_request_body: 4}"},
		{"flaky", "flaky", ""}, {"reset-retried", "reset-retried", ""}, {"refused-retried", "refused-retried", ""}} {
		doc += fmt.Sprintf("  - {name: %[1]s-lean, match: {path_prefix: /l/%[1]s/}, service: %[2]s%[3]s}\n", r[0], r[1], r[2])
		doc += fmt.Sprintf("  - {name: %[1]s-twin, match: {path_prefix: /p/%[1]s/}, service: %[2]s%[3]s}\n", r[0], r[1], r[2])
	}
	tg := startGatewayWith(t, setup, doc)

	type seen struct {
		status       int
		body, second string
		log          string
	}
	// send writes the request (its head, then after split a pause and
	// the body's rest) and a GET behind it (pipelined: in the same write),
	// and reads both answers.
	send := func(t *testing.T, method, path, fields, body string, split int, pipelined bool) seen {
		t.Helper()
		n0 := log.count()
		c := dialGateway(t, tg.addr)
		defer c.Close()
		head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: a.example\r\n%s\r\n", method, path, fields)
		next := "GET /l/echo/next HTTP/1.1\r\nHost: a.example\r\n\r\n"
		switch {
		case split > 0:
			io.WriteString(c, head+body[:split])
			time.Sleep(20 * time.Millisecond) // the rest comes later: the lane has not all of it
			io.WriteString(c, body[split:])
			io.WriteString(c, next)
		case pipelined:
			io.WriteString(c, head+body+next)
		default:
			io.WriteString(c, head+body)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err == nil && resp.StatusCode == http.StatusContinue {
			resp, err = http.ReadResponse(br, &http.Request{Method: method})
		}
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		s := seen{status: resp.StatusCode, body: problemIDs.ReplaceAllString(strings.NewReplacer("/l/", "/p/", "-lean", "-twin").Replace(string(b)), "$1")}
		if split == 0 && !pipelined {
			io.WriteString(c, next)
		}
		if resp.Close {
			s.second = "(closed)"
		} else if r2, err := http.ReadResponse(br, nil); err == nil {
			b2, _ := io.ReadAll(r2.Body)
			s.second = fmt.Sprintf("%d %s", r2.StatusCode, b2)
		} else {
			s.second = err.Error()
		}
		records := n0 + 2 // the request's and the GET's behind it
		if resp.Close {
			records = n0 + 1
		}
		for deadline := time.Now().Add(2 * time.Second); log.count() < records && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		if len(log.recs) <= n0 {
			t.Fatalf("%s %s: no access log record", method, path)
		}
		rec := maps.Clone(log.recs[n0])
		for _, k := range []string{"request_id", "trace_id", "duration_ms", "upstream_ms", "client", "error_detail"} {
			delete(rec, k)
		}
		rec["path"] = strings.Replace(rec["path"].(string), "/l/", "/p/", 1)
		rec["route"] = strings.Replace(rec["route"].(string), "-lean", "-twin", 1)
		s.log = fmt.Sprint(rec)
		return s
	}
	const typed = "Content-Type: application/json\r\n"
	for _, c := range []struct {
		method, route, fields, body string
		status                      int
		lane                        bool // served on the lane (else left to the general path)
	}{
		{"POST", "echo", typed + "Content-Length: 13\r\n", `{"id": "abc"}`, 200, true},
		{"PUT", "echo", "Content-Length: 5\r\n", "hello", 200, true},
		{"PATCH", "echo", "content-length: 5\r\n", "hello", 200, true},
		{"DELETE", "echo", "Content-Length: 5\r\n", "hello", 200, true},
		{"DELETE", "echo", "", "", 200, true},
		{"OPTIONS", "echo", "Origin: https://b.example\r\n", "", 200, true},
		{"POST", "echo", "Content-Length: 0\r\n", "", 200, true},
		{"POST", "echo", typed, "", 200, true},
		{"POST", "echo", "Content-Length: 3000\r\n", strings.Repeat("b", 3000), 200, true},
		{"POST", "busy", "Content-Length: 5\r\n", "hello", 503, true}, // not retried: a POST
		// Idempotent, to services that retry: the body goes again with
		// the retry.
		{"PUT", "busy", "Content-Length: 5\r\n", "hello", 503, true},
		{"PUT", "flaky", typed + "Content-Length: 13\r\n", `{"id": "abc"}`, 200, true},
		{"DELETE", "flaky", "Content-Length: 5\r\n", "hello", 200, true},
		{"PUT", "reset-retried", "Content-Length: 5\r\n", "hello", 502, true},
		// No attempt connects: the body was read all the same (kept for
		// the retry on the present path), and counted.
		{"PUT", "refused-retried", "Content-Length: 5\r\n", "hello", 502, true},
		{"POST", "reset", "Content-Length: 5\r\n", "hello", 502, true},
		{"POST", "small", "Content-Length: 5\r\n", "hello", 413, false},
		{"POST", "echo", "Content-Length: 5\r\nExpect: 100-continue\r\n", "hello", 200, false},
	} {
		for _, mode := range []string{"", "pipelined"} {
			t.Run(fmt.Sprintf("%s %s %q %s", c.method, c.route, c.fields, mode), func(t *testing.T) {
				served0, presented0 := laneServed.Load(), lanePresented.Load()
				l := send(t, c.method, "/l/"+c.route+"/x", c.fields, c.body, 0, mode != "")
				lane := laneServed.Load()-served0 == 2 // and the GET behind it
				// Only an error or a retry makes a request present: a
				// POST's 503 is the answer, as it is not retried.
				retried := c.route == "flaky" || c.route == "reset-retried" || c.route == "refused-retried" || c.route == "busy" && c.method != "POST"
				if p := lanePresented.Load() - presented0; p != 0 && c.route != "reset" && !retried {
					t.Errorf("%d made present; want 0", p)
				}
				p := send(t, c.method, "/p/"+c.route+"/x", c.fields, c.body, 0, mode != "")
				if l != p {
					t.Errorf("lane:    %+v\npresent: %+v", l, p)
				}
				if l.status != c.status || lane != c.lane {
					t.Errorf("status %d, on the lane %v; want %d, %v", l.status, lane, c.status, c.lane)
				}
				if want := `200 GET /l/echo/next length=[] type="" body=""`; c.status != 413 && l.second != want {
					t.Errorf("the request behind it: %s; want %s", l.second, want)
				}
			})
		}
	}
	// A body that is not whole when its head is read: the general path's,
	// with the same outcome.
	l := send(t, "POST", "/l/echo/x", "Content-Length: 5\r\n", "hello", 2, false)
	p := send(t, "POST", "/p/echo/x", "Content-Length: 5\r\n", "hello", 2, false)
	if l != p || l.status != 200 {
		t.Errorf("split body:\nlane:    %+v\npresent: %+v", l, p)
	}
	// What the upstream got, spelled out.
	if s := send(t, "POST", "/l/echo/x", typed+"Content-Length: 13\r\n", `{"id": "abc"}`, 0, false); s.body != `POST /p/echo/x length=["13"] type="application/json" body="{\"id\": \"abc\"}"` ||
		!strings.Contains(s.log, "bytes_in:13 ") {
		t.Errorf("POST: %+v", s)
	}
	if s := send(t, "POST", "/l/echo/x", "", "", 0, false); s.body != `POST /p/echo/x length=["0"] type="" body=""` {
		t.Errorf("bodyless POST: %+v", s)
	}
	// A retried PUT's body reached the upstream with the retry.
	if s := send(t, "PUT", "/l/flaky/x", "Content-Length: 5\r\n", "hello", 0, false); s.body != `PUT /p/flaky/x length=["5"] body="hello"` ||
		!strings.Contains(s.log, "retried_on:503 ") || !strings.Contains(s.log, "bytes_in:5 ") {
		t.Errorf("retried PUT: %+v", s)
	}
}

// A client that leaves while the upstream, which has its request's body,
// is slow to answer: the record says what was sent (bytes_in), on the lane
// as on the general path.
func TestCanceledRequestLogsItsBody(t *testing.T) {
	arrived := make(chan struct{}, 2)
	up := rawUpstream(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		io.ReadAll(req.Body)
		arrived <- struct{}{}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.Read(make([]byte, 1)) // until the gateway gives up on it
	})
	setup, log := withReuseLog()
	tg := startGatewayWith(t, setup, fmt.Sprintf(`
services: [{name: s, targets: [{url: "http://%s"}]}]
routes:
  - {name: r-lean, match: {path_prefix: /l/}, service: s}
  - {name: r-twin, match: {path_prefix: /p/}, service: s}
`, up))
	for _, path := range []string{"/l/x", "/p/x"} {
		n0 := log.count()
		c := dialGateway(t, tg.addr)
		io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
		recv(t, arrived, "the request upstream")
		c.Close()
		for deadline := time.Now().Add(5 * time.Second); log.count() == n0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		log.mu.Lock()
		if len(log.recs) == n0 {
			t.Fatalf("%s: no record", path)
		}
		rec := log.recs[n0]
		log.mu.Unlock()
		if rec["status"] != int64(499) || rec["bytes_in"] != int64(5) {
			t.Errorf("%s: status %v, bytes_in %v; want 499, 5", path, rec["status"], rec["bytes_in"])
		}
	}
}

// A connection closed after its answer (HTTP/1.0 without keep-alive)
// while the client has sent more is closed gracefully: the client reads
// the answer and then the end, not a reset, which on a real network can
// destroy the answer in flight.
func TestCloseAfterAnswerWithMorePipelinedIsGraceful(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	up := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		arrived <- struct{}{}
		<-release
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	tg := startGateway(t, oneRoute("http://"+up, ""))
	c := dialGateway(t, tg.addr)
	io.WriteString(c, "GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
	recv(t, arrived, "the request upstream")
	// Pipelined behind it while the gateway waits for the upstream: not
	// read before the close.
	io.WriteString(c, "GET /y HTTP/1.0\r\nHost: a\r\n\r\n")
	close(release)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := io.ReadAll(resp.Body); err != nil || string(body) != "ok" || !resp.Close {
		t.Fatalf("answer %q, %v, close %v; want \"ok\" and a close", body, err, resp.Close)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the answer: %d bytes, %v; want the end (io.EOF), not a reset", n, err)
	}
}
