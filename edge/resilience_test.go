package edge

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/edge/config"
)

// deadAddr returns the URL of a loopback port nobody listens on: connecting
// to it is refused at once.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func twoTargets(a, b, extra string) string {
	return fmt.Sprintf(`
services:
  - name: svc
    targets:
      - url: %s
      - url: %s
%s
routes:
  - name: r
    match:
      path_prefix: /
    service: svc
`, a, b, extra)
}

func TestRetryConnectFailureGoesToNextTarget(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.inc()
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "ok %s", b)
	})
	var logBuf syncBuffer
	gw := startGatewayWith(t, gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}},
		twoTargets(deadAddr(t), be.URL, `    retries:
      attempts: 2
      backoff: {base: 1ms, max: 2ms}`))
	c := newClient(t)
	// Round robin sends every other first attempt to the dead target.
	const n = 6
	for i := range n {
		method := []string{http.MethodGet, http.MethodPut, http.MethodDelete}[i%3]
		req, _ := http.NewRequest(method, gw.url+"/x", strings.NewReader("b"))
		req.Header.Set("X-Request-Id", fmt.Sprintf("retry-%d", i))
		resp, body := do(t, c, req)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %d: status = %d; want 200 (%s)", method, i, resp.StatusCode, body)
		}
		if string(body) != "ok b" {
			t.Errorf("%s: body = %q; want the request body replayed to the live target", method, body)
		}
	}
	if got := hits.get(); got != n {
		t.Errorf("live target hits = %d; want %d", got, n)
	}
	if got := metricValue(t, gw.g, `meridian_upstream_retries_total{service="svc"}`); got < n/2 {
		t.Errorf("retries metric = %v; want at least %d", got, n/2)
	}
	// Every request was answered by the upstream: none is a gateway error,
	// in the metrics or the log, however its first attempt went.
	if got := metricValue(t, gw.g, `meridian_upstream_errors_total{error="connection_refused",route="r"}`); got != 0 {
		t.Errorf("upstream errors metric = %v for requests retried to success; want 0", got)
	}
	retried := 0
	for i := range n {
		id := fmt.Sprintf("retry-%d", i)
		waitFor(t, 5*time.Second, "the access log record", func() bool { return logBuf.records(t)[id] != nil })
		rec := logBuf.records(t)[id]
		if e, ok := rec["error"]; ok {
			t.Errorf("%s: logged error %v for a request retried to success", id, e)
		}
		if rec["retried_on"] != nil {
			retried++
			if rec["retried_on"] != "connection_refused" || rec["attempts"] != float64(2) {
				t.Errorf("%s: retried_on %v, attempts %v; want connection_refused, 2", id, rec["retried_on"], rec["attempts"])
			}
		}
	}
	if retried < n/2 {
		t.Errorf("%d log records with retried_on; want at least %d", retried, n/2)
	}
}

func TestPostIsNotRetried(t *testing.T) {
	t.Run("connect failure", func(t *testing.T) {
		be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		gw := startGateway(t, twoTargets(deadAddr(t), be.URL, "    retries: {attempts: 2}"))
		c := newClient(t)
		codes := map[int]int{}
		for range 4 {
			req, _ := http.NewRequest(http.MethodPost, gw.url+"/x", strings.NewReader("body"))
			resp, body := do(t, c, req)
			codes[resp.StatusCode]++
			if resp.StatusCode == http.StatusBadGateway {
				checkProblem(t, resp, body, http.StatusBadGateway, "connection_refused")
			}
		}
		if codes[502] != 2 || codes[200] != 2 {
			t.Errorf("status counts = %v; want two 502 (dead target, no retry) and two 200", codes)
		}
	})
	t.Run("503", func(t *testing.T) {
		var hits hitCounter
		be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			hits.inc()
			http.Error(w, "busy", http.StatusServiceUnavailable)
		})
		gw := startGateway(t, oneRouteService(be.URL, "    retries: {attempts: 3, on: [\"503\"], backoff: {base: 1ms}}"))
		req, _ := http.NewRequest(http.MethodPost, gw.url+"/x", strings.NewReader("body"))
		resp, _ := do(t, newClient(t), req)
		if resp.StatusCode != 503 {
			t.Errorf("status = %d; want the backend's 503", resp.StatusCode)
		}
		if got := hits.get(); got != 1 {
			t.Errorf("backend hits = %d; want 1 (POST is not idempotent)", got)
		}
	})
}

func TestRetryOnStatus(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.inc()
		if hits.get()%3 != 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "finally")
	})
	for _, tc := range []struct {
		name       string
		retries    string
		wantStatus int
		wantHits   int
	}{
		{"503 configured", `    retries: {attempts: 2, on: ["503"], backoff: {base: 1ms, max: 1ms}}`, 200, 3},
		{"default conditions include 503", `    retries: {backoff: {base: 1ms, max: 1ms}}`, 200, 3},
		{"not enough attempts", `    retries: {attempts: 1, on: ["503"], backoff: {base: 1ms, max: 1ms}}`, 503, 2},
		{"503 not configured", `    retries: {attempts: 2, on: ["502"], backoff: {base: 1ms, max: 1ms}}`, 503, 1},
		{"no retries", ``, 503, 1},
		{"attempts 0 means none", `    retries: {attempts: 0, on: ["503"], backoff: {base: 1ms, max: 1ms}}`, 503, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits.mu.Lock()
			hits.n = 0
			hits.mu.Unlock()
			gw := startGateway(t, oneRouteService(be.URL, tc.retries))
			resp, body := get(t, newClient(t), gw.url+"/x")
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status = %d; want %d (%s)", resp.StatusCode, tc.wantStatus, body)
			}
			if got := hits.get(); got != tc.wantHits {
				t.Errorf("backend hits = %d; want %d", got, tc.wantHits)
			}
		})
	}
}

// A retried answer's body is not waited for: one that stalls is dropped
// with its connection at once (waiting would hold each retry for the
// service's read timeout, here longer than the client waits); one that
// came whole with its head leaves the connection pooled for the retry.
func TestRetriedAnswerBodyNotWaitedFor(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answer    string
		wantConns int32
	}{
		{"body stalls", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\nfail", 3},
		{"body whole", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nfail", 1},
		{"chunked body stalls", "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfail\r\n", 3},
		{"chunked body whole", "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfail\r\n0\r\nX-T: 1\r\n\r\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conns, reqs atomic.Int32
			up := rawUpstream(t, func(c net.Conn) {
				conns.Add(1)
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if reqs.Add(1) < 3 {
						io.WriteString(c, tc.answer)
						continue
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nfinally")
				}
			})
			gw := startGateway(t, oneRouteService("http://"+up, `    retries: {attempts: 2, backoff: {base: 1ms, max: 1ms}}
    timeouts: {read: 60s}`))
			c := newClient(t)
			c.Timeout = 20 * time.Second
			resp, body := get(t, c, gw.url+"/x")
			if resp.StatusCode != 200 || string(body) != "finally" {
				t.Fatalf("got %d %q; want 200 \"finally\" after two retries", resp.StatusCode, body)
			}
			if n := conns.Load(); n != tc.wantConns {
				t.Errorf("%d upstream connections; want %d", n, tc.wantConns)
			}
		})
	}
}

// The retry budget caps retries at ratio × requests plus min_per_second
// per second over a 10 s window, however many requests fail. An explicit
// 0 turns a part off (unset takes the default).
func TestRetryBudgetStopsRetries(t *testing.T) {
	for _, tc := range []struct {
		budget  string
		retries int
	}{
		{"{ratio: 0, min_per_second: 1}", 1 * budgetWindow}, // min_per_second over the window
		{"{ratio: 0, min_per_second: 0}", 0},
	} {
		t.Run(tc.budget, func(t *testing.T) {
			var hits hitCounter
			be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				hits.inc()
				http.Error(w, "down", http.StatusServiceUnavailable)
			})
			gw := startGateway(t, oneRouteService(be.URL, `    retries:
      attempts: 1
      on: ["503"]
      budget: `+tc.budget+`
      backoff: {base: 1ms, max: 1ms}`))
			c := newClient(t)
			const requests = 20
			for range requests {
				resp, _ := get(t, c, gw.url+"/x")
				if resp.StatusCode != 503 {
					t.Fatalf("status = %d; want 503", resp.StatusCode)
				}
			}
			if got, want := hits.get(), requests+tc.retries; got != want {
				t.Errorf("backend hits = %d; want %d (%d requests + %d retries the budget allows)", got, want, requests, tc.retries)
			}
			if got := metricValue(t, gw.g, `meridian_upstream_retries_total{service="svc"}`); got != float64(tc.retries) {
				t.Errorf("retries metric = %v; want %d", got, tc.retries)
			}
			if got := metricValue(t, gw.g, `meridian_upstream_retry_budget_exhausted_total{service="svc"}`); got != float64(requests-tc.retries) {
				t.Errorf("retries refused by the budget = %v; want %d", got, requests-tc.retries)
			}
		})
	}
}

// A reload, even of the same document, keeps the retry budget's window:
// a failing service does not get a fresh allowance of retries from it.
func TestRetryBudgetSurvivesReload(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.inc()
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	doc := oneRouteService(be.URL, `    retries:
      attempts: 1
      on: ["503"]
      budget: {ratio: 0, min_per_second: 1}
      backoff: {base: 1ms, max: 1ms}`)
	gw := startGateway(t, doc)
	c := newClient(t)
	send := func(n int) {
		for range n {
			if resp, _ := get(t, c, gw.url+"/x"); resp.StatusCode != 503 {
				t.Fatalf("status = %d; want 503", resp.StatusCode)
			}
		}
	}
	send(20) // spends the window's 10 retries
	before := hits.get()
	gw.g.Swap(compileDoc(t, gw.g, doc, 2, gw.g.Current()))
	send(5)
	if got := hits.get() - before; got != 5 {
		t.Errorf("after the reload, 5 requests hit the backend %d times; want 5 (no retries left in the window)", got)
	}
}

// A large request body is streamed, not buffered, so it is not retried.
func TestLargeBodyNotRetried(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.inc()
		io.Copy(io.Discard, r.Body)
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	gw := startGateway(t, oneRouteService(be.URL, `    retries: {attempts: 2, on: ["503"], backoff: {base: 1ms, max: 1ms}}`))
	req, _ := http.NewRequest(http.MethodPut, gw.url+"/x", bytes.NewReader(make([]byte, retryBufferLimit+1)))
	resp, _ := do(t, newClient(t), req)
	if resp.StatusCode != 503 {
		t.Errorf("status = %d; want 503", resp.StatusCode)
	}
	if got := hits.get(); got != 1 {
		t.Errorf("backend hits = %d; want 1", got)
	}
}

func targetStatus(g *Gateway, service, url string) (healthy, ejected bool, ok bool) {
	s := g.Current()
	if s == nil {
		return false, false, false
	}
	for _, sh := range s.Health() {
		if sh.Name != service {
			continue
		}
		for _, ts := range sh.Targets {
			if ts.URL == url {
				return ts.Healthy, ts.Ejected, true
			}
		}
	}
	return false, false, false
}

// waitFirstChecks waits until every target of service has had its first
// health check (a new target is pending until then).
func waitFirstChecks(t *testing.T, g *Gateway, service string) {
	t.Helper()
	waitFor(t, 5*time.Second, "the targets' first health checks", func() bool {
		s := g.Current()
		for _, sh := range s.Health() {
			if sh.Name != service {
				continue
			}
			for _, ts := range sh.Targets {
				if ts.Pending {
					return false
				}
			}
		}
		return true
	})
}

func TestOutlierDetectionEjectsFailingTarget(t *testing.T) {
	var badHits, goodHits hitCounter
	bad := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		badHits.inc()
		http.Error(w, "broken", http.StatusBadGateway)
	})
	good := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		goodHits.inc()
		io.WriteString(w, "good")
	})
	gw := startGateway(t, twoTargets(bad.URL, good.URL, `    outlier_detection:
      consecutive_failures: 2
      base_ejection: 1m`))
	c := newClient(t)
	for i := 0; badHits.get() < 2; i++ {
		if i > 10 {
			t.Fatalf("the bad target got %d requests out of %d; want round robin to reach it", badHits.get(), i)
		}
		get(t, c, gw.url+"/x")
	}
	_, ejected, ok := targetStatus(gw.g, "svc", bad.URL)
	if !ok || !ejected {
		t.Fatalf("bad target ejected = %v (found %v); want ejected after 2 consecutive failures", ejected, ok)
	}
	before := goodHits.get()
	for range 10 {
		resp, body := get(t, c, gw.url+"/x")
		if resp.StatusCode != 200 || string(body) != "good" {
			t.Fatalf("got %d %q; want 200 good from the healthy target", resp.StatusCode, body)
		}
	}
	if got := badHits.get(); got != 2 {
		t.Errorf("bad target hits = %d; want 2 (no traffic once ejected)", got)
	}
	if got := goodHits.get() - before; got != 10 {
		t.Errorf("good target hits = %d; want 10", got)
	}
}

func TestActiveHealthCheckMovesTraffic(t *testing.T) {
	var aHealthy = make(chan bool, 1)
	aHealthy <- true
	healthOf := func() bool { v := <-aHealthy; aHealthy <- v; return v }
	var aHits, bHits hitCounter
	a := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if !healthOf() {
				http.Error(w, "sick", 500)
			}
			return
		}
		aHits.inc()
		io.WriteString(w, "a")
	})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return
		}
		bHits.inc()
		io.WriteString(w, "b")
	})
	gw := startGateway(t, twoTargets(a.URL, b.URL, `    health_check:
      path: /healthz
      interval: 100ms
      timeout: 1s
      healthy_threshold: 1
      unhealthy_threshold: 1`))
	admin := newAdminServer(t, gw.g, AdminOptions{OpenReads: true})
	c := newClient(t)
	waitFirstChecks(t, gw.g, "svc")

	for range 4 {
		get(t, c, gw.url+"/x")
	}
	if aHits.get() != 2 || bHits.get() != 2 {
		t.Fatalf("hits a=%d b=%d; want 2 and 2 while both are healthy", aHits.get(), bHits.get())
	}

	<-aHealthy
	aHealthy <- false
	waitFor(t, 5*time.Second, "target a to be marked down in /upstreams", func() bool {
		_, body := get(t, c, admin.URL+"/upstreams")
		var hs []ServiceHealth
		if err := jsonUnmarshal(body, &hs); err != nil {
			t.Fatalf("/upstreams: %v", err)
		}
		for _, ts := range hs[0].Targets {
			if ts.URL == a.URL {
				return !ts.Healthy
			}
		}
		t.Fatalf("/upstreams does not list %s: %s", a.URL, body)
		return false
	})
	beforeA := aHits.get()
	for range 6 {
		resp, body := get(t, c, gw.url+"/x")
		if string(body) != "b" {
			t.Fatalf("got %d %q; want b while a is down", resp.StatusCode, body)
		}
	}
	if aHits.get() != beforeA {
		t.Errorf("target a got %d requests while down; want 0", aHits.get()-beforeA)
	}

	<-aHealthy
	aHealthy <- true
	waitFor(t, 5*time.Second, "target a to come back", func() bool {
		healthy, _, _ := targetStatus(gw.g, "svc", a.URL)
		return healthy
	})
	for range 4 {
		get(t, c, gw.url+"/x")
	}
	if aHits.get() == beforeA {
		t.Errorf("target a got no requests after it came back")
	}
	if got := metricValue(t, gw.g, `meridian_upstream_health_changes_total{service="svc",state="down"}`); got != 1 {
		t.Errorf("health changes to down = %v; want 1", got)
	}
}

func TestAllTargetsDownIs503(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "sick", 500) })
	gw := startGateway(t, oneRouteService(be.URL, `    health_check: {path: /healthz, interval: 100ms, unhealthy_threshold: 1}`))
	waitFirstChecks(t, gw.g, "svc")
	waitFor(t, 5*time.Second, "the only target to be marked down", func() bool {
		healthy, _, _ := targetStatus(gw.g, "svc", be.URL)
		return !healthy
	})
	resp, body := get(t, newClient(t), gw.url+"/x")
	checkProblem(t, resp, body, http.StatusServiceUnavailable, "destination_unavailable")
}

func TestCircuitBreakingMaxConcurrentRequests(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "done")
	})
	gw := startGateway(t, fmt.Sprintf(`
services:
  - name: svc
    max_concurrent_requests: 1
    targets:
      - url: %s
routes:
  - name: limited-route
    match:
      path_prefix: /
    service: svc
`, be.URL))
	c := newClient(t)
	first := make(chan string, 1)
	go func() {
		resp, err := c.Get(gw.url + "/slow")
		if err != nil {
			first <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		first <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	recv(t, entered, "the first request to reach the backend")

	resp, body := get(t, c, gw.url+"/second")
	p := checkProblem(t, resp, body, http.StatusServiceUnavailable, "connection_limit_reached")
	if p.Route != "limited-route" {
		t.Errorf("problem route = %q; want limited-route", p.Route)
	}
	if !strings.Contains(p.Detail, "svc") {
		t.Errorf("problem detail = %q; want it to name the service", p.Detail)
	}
	close(release)
	if got := recv(t, first, "the first response"); got != "200 done" {
		t.Errorf("first request = %q; want \"200 done\"", got)
	}
	// The slot is free again.
	go func() { <-entered }()
	resp, body = get(t, c, gw.url+"/third")
	if resp.StatusCode != 200 {
		t.Errorf("third request: %d %s; want 200 once the slot is free", resp.StatusCode, body)
	}
}

func TestGatewayErrors(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	slow := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	slowBody := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		// Unknown length, so the gateway flushes what it has.
		w.WriteHeader(200)
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	// A known length: the gateway holds the head until body bytes come,
	// so at the total timeout it can still answer instead.
	headOnly := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	var logBuf syncBuffer
	gw := startGatewayWith(t, gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}}, fmt.Sprintf(`
services:
  - name: slow
    timeouts: {response_header: 200ms}
    targets: [{url: %s}]
  - name: total
    timeouts: {total: 300ms}
    targets: [{url: %s}]
  - name: totalhead
    timeouts: {total: 300ms}
    targets: [{url: %s}]
  - name: dead
    targets: [{url: %s}]
routes:
  - name: totalhead
    match: {path_prefix: /totalhead}
    service: totalhead
  - name: slow
    match: {path_prefix: /slow}
    service: slow
  - name: total
    match: {path_prefix: /total}
    service: total
  - name: dead
    match: {path_prefix: /dead}
    service: dead
`, slow.URL, slowBody.URL, headOnly.URL, deadAddr(t)))
	c := newClient(t)
	for _, tc := range []struct {
		path        string
		status      int
		proxyStatus string
		route       string
	}{
		{"/slow", http.StatusGatewayTimeout, "http_response_timeout", "slow"},
		// The total timeout expires between the head and the body: still
		// a timeout, not an incomplete response.
		{"/totalhead", http.StatusGatewayTimeout, "http_response_timeout", "totalhead"},
		{"/dead", http.StatusBadGateway, "connection_refused", "dead"},
		{"/nothing-here", http.StatusNotFound, "", ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			start := time.Now()
			resp, body := get(t, c, gw.url+tc.path)
			p := checkProblem(t, resp, body, tc.status, tc.proxyStatus)
			if p.Route != tc.route {
				t.Errorf("problem route = %q; want %q", p.Route, tc.route)
			}
			if p.Instance != tc.path {
				t.Errorf("problem instance = %q; want %q", p.Instance, tc.path)
			}
			// The client is not told the target's address, nor a socket
			// error's (the access log's error_detail has them).
			if ps := resp.Header.Get("Proxy-Status"); tc.proxyStatus != "" && strings.Contains(p.Detail+ps, "127.0.0.1") {
				t.Errorf("problem detail %q, Proxy-Status %q; want no upstream address", p.Detail, ps)
			}
			if len(p.RequestID) != 32 {
				t.Errorf("problem request_id = %q; want a generated id", p.RequestID)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v; want the timeout to cut it short", d)
			}
		})
	}
	t.Run("the log has the cause", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, gw.url+"/dead", nil)
		req.Header.Set("X-Request-Id", "dead-1")
		if resp, _ := do(t, c, req); resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d; want 502", resp.StatusCode)
		}
		waitFor(t, 5*time.Second, "the access log record", func() bool { return logBuf.records(t)["dead-1"] != nil })
		rec := logBuf.records(t)["dead-1"]
		if d, _ := rec["error_detail"].(string); !strings.HasPrefix(d, "target 127.0.0.1:") || !strings.Contains(d, "refused") {
			t.Errorf("error_detail = %q; want the target and the socket error", d)
		}
	})
	t.Run("a total timeout after the head says the service and logs the target", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, gw.url+"/totalhead", nil)
		req.Header.Set("X-Request-Id", "totalhead-1")
		resp, body := do(t, c, req)
		p := checkProblem(t, resp, body, http.StatusGatewayTimeout, "http_response_timeout")
		if !strings.HasPrefix(p.Detail, "service ") || !strings.HasPrefix(resp.Header.Get("Proxy-Status"), `meridian; error=http_response_timeout; details="service `) {
			t.Errorf("detail %q, Proxy-Status %q; want the service named, as before the head", p.Detail, resp.Header.Get("Proxy-Status"))
		}
		waitFor(t, 5*time.Second, "the access log record", func() bool { return logBuf.records(t)["totalhead-1"] != nil })
		if d, _ := logBuf.records(t)["totalhead-1"]["error_detail"].(string); !strings.HasPrefix(d, "target 127.0.0.1:") {
			t.Errorf("error_detail = %q; want the target", d)
		}
	})
	t.Run("instance is a URI reference", func(t *testing.T) {
		resp, body := get(t, c, gw.url+"/nothing-here/a%22b%3Cs%3E%20c")
		p := checkProblem(t, resp, body, 404, "")
		if p.Instance != "/nothing-here/a%22b%3Cs%3E%20c" {
			t.Errorf("instance = %q; want the path percent-encoded", p.Instance)
		}
	})
	t.Run("no route type", func(t *testing.T) {
		resp, body := get(t, c, gw.url+"/nothing-here")
		p := checkProblem(t, resp, body, 404, "")
		if p.Type != problemTypeBase+"no-route" {
			t.Errorf("type = %q; want %sno-route", p.Type, problemTypeBase)
		}
	})
	t.Run("total timeout cuts a started body", func(t *testing.T) {
		resp, err := c.Get(gw.url + "/total")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status = %d; want 200 (headers arrived in time)", resp.StatusCode)
		}
		start := time.Now()
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			t.Errorf("read %q and a clean end; want the stream cut at the total timeout", b)
		}
		if string(b) != "partial" {
			t.Errorf("read %q before the cut; want \"partial\"", b)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("body ended after %v; want about 300ms", d)
		}
	})
	t.Run("HEAD error has no body", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodHead, gw.url+"/nothing-here", nil)
		resp, body := do(t, c, req)
		if resp.StatusCode != 404 || len(body) != 0 {
			t.Errorf("got %d with %d body bytes; want 404 with none", resp.StatusCode, len(body))
		}
	})
}

func TestTimeoutRetriedWhenConfigured(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	var slowHits, fastHits hitCounter
	slow := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		slowHits.inc()
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	fast := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fastHits.inc()
		io.WriteString(w, "fast")
	})
	gw := startGateway(t, twoTargets(slow.URL, fast.URL, `    timeouts: {response_header: 150ms}
    retries: {attempts: 1, on: [timeout], backoff: {base: 1ms, max: 1ms}}`))
	c := newClient(t)
	for range 2 {
		resp, body := get(t, c, gw.url+"/x")
		if resp.StatusCode != 200 || string(body) != "fast" {
			t.Fatalf("got %d %q; want 200 fast", resp.StatusCode, body)
		}
	}
	if slowHits.get() != 1 || fastHits.get() != 2 {
		t.Errorf("hits slow=%d fast=%d; want 1 and 2", slowHits.get(), fastHits.get())
	}
}

// An upstream may close a keep-alive connection while it is idle (its idle
// timeout). A request that would have gone out on such a connection must
// not fail: neither a GET nor a POST with a body, which cannot be retried
// once sent. (The gateway checks connections idle for more than a second
// before reuse; upstreams with idle timeouts below that are not covered.)
func TestUpstreamClosedIdleConnection(t *testing.T) {
	closed := make(chan struct{}, 10)
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %q", r.Method, b)
	}))
	be.Config.IdleTimeout = 1100 * time.Millisecond
	be.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	be.Start()
	t.Cleanup(be.Close)
	gw := startGateway(t, oneRouteService(be.URL, ""))
	c := newClient(t)
	for i, method := range []string{http.MethodGet, http.MethodPost, http.MethodGet} {
		req, _ := http.NewRequest(method, gw.url+"/x", strings.NewReader("body"))
		resp, body := do(t, c, req)
		if want := fmt.Sprintf("%s %q", method, "body"); resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("request %d (%s) after the upstream closed its idle connection: %d %s; want 200 %s", i, method, resp.StatusCode, body, want)
		}
		if i == 2 {
			break
		}
		// Wait until the upstream has closed the connection the gateway
		// keeps idle.
		recv(t, closed, "the upstream to close the idle connection")
	}
}

// An upstream that sends its response head and closes before the first
// body byte: nothing has reached the client yet, so the HTTP/1 client gets
// a 502 saying so (and keeps its connection), not an empty reply. Once a
// body byte has gone out, the only honest answer left is a cut response.
func TestUpstreamDiesBetweenHeadAndBody(t *testing.T) {
	var served atomic.Int32
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		served.Add(1)
		switch req.URL.Path {
		case "/head-only":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
			return false
		case "/some-body":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
			return false
		case "/4k-body": // exactly what an HTTP/2 server holds back
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n"+strings.Repeat("k", 4096))
			return false
		case "/more-body": // past what an HTTP/2 server holds back
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n"+strings.Repeat("m", 5000))
			return false
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	gw := startGateway(t, oneRoute("http://"+addr, ""))
	c := dialGateway(t, gw.addr)
	br := bufio.NewReader(c)
	h1Write(t, c, "GET /head-only HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := readResponse(t, br, "GET")
	checkProblem(t, resp, body, http.StatusBadGateway, "http_response_incomplete")
	// The same connection still serves.
	h1Write(t, c, "GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("next request on the connection: %d %q; want 200 ok", resp.StatusCode, body)
	}
	// With part of the body sent, the response is cut: the head says 1000
	// bytes and fewer come before the connection closes.
	h1Write(t, c, "GET /some-body HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d; want the upstream's 200, already sent", resp.StatusCode)
	}
	got, err := io.ReadAll(resp.Body)
	if err == nil || len(got) >= 1000 {
		t.Fatalf("read %d bytes with error %v; want a cut body", len(got), err)
	}
	if served.Load() != 3 {
		t.Fatalf("upstream served %d requests; want 3", served.Load())
	}
	// Over HTTP/2 no head can be taken back, but none was sent either,
	// even with some body written (the server holds its first 4 KiB with
	// the head until a flush): the stream is reset, and the log says 502,
	// not the upstream's 200.
	for _, path := range []string{"/head-only", "/some-body", "/4k-body"} {
		setup, log := withReuseLog()
		gw2 := startGatewayWith(t, setup, oneRoute("http://"+addr, ""))
		if resp, err := newH2CClient(t).Get(gw2.url + path); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("over HTTP/2, %s: got a head (%d, then %q); want the stream reset before it", path, resp.StatusCode, body)
		}
		if rec := onlyRecord(t, log); rec["status"] != int64(502) || rec["error"] != "http_response_incomplete" || rec["bytes_out"] != int64(0) {
			t.Errorf("over HTTP/2, %s: logged %v %v, bytes_out %v; want 502 http_response_incomplete, 0 bytes", path, rec["status"], rec["error"], rec["bytes_out"])
		}
	}
	// Past 4 KiB the head has gone out: the client has the 200 and a cut
	// body, and the log keeps the status it got.
	setup, log := withReuseLog()
	gw2 := startGatewayWith(t, setup, oneRoute("http://"+addr, ""))
	resp, err = newH2CClient(t).Get(gw2.url + "/more-body")
	if err != nil {
		t.Fatalf("over HTTP/2, /more-body: %v; want the head", err)
	}
	got, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err == nil || len(got) >= 10000 {
		t.Fatalf("over HTTP/2, /more-body: %d, %d bytes, error %v; want 200 and a cut body", resp.StatusCode, len(got), err)
	}
	if rec := onlyRecord(t, log); rec["status"] != int64(200) || rec["error"] != "http_response_incomplete" {
		t.Errorf("over HTTP/2, /more-body: logged %v %v; want 200 http_response_incomplete", rec["status"], rec["error"])
	}
	// HTTP/3 likewise (quic-go holds a small response's first 4 KiB).
	setup, log = withReuseLog()
	tg := startTLSGatewayWith(t, setup, oneRoute("http://"+addr, ""), true)
	if resp, err := tg.client(t, "h3").Get("https://" + tg.addr + "/some-body"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("over HTTP/3: got a head (%d, then %q); want the stream reset before it", resp.StatusCode, body)
	}
	if rec := onlyRecord(t, log); rec["status"] != int64(502) || rec["error"] != "http_response_incomplete" {
		t.Errorf("over HTTP/3: logged %v %v; want 502 http_response_incomplete", rec["status"], rec["error"])
	}
}

// A client that resets its connection while sending a request body is
// gone: the access log says 499 client_canceled (as over HTTP/2), and no
// 400 is written to the dead connection. One that closes its side before
// the body is whole may still read: it gets a 400.
func TestClientBodyResetIs499(t *testing.T) {
	got := make(chan int64, 2)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got <- n
	})
	setup, log := withReuseLog()
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))

	c := dialGateway(t, gw.addr)
	h1Write(t, c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("x", 100000))
	recvBytes := func() {
		t.Helper()
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream request did not end")
		}
	}
	// Reset once the gateway is handling the request, so that the reset
	// reaches a body read rather than the request head.
	waitFor(t, 5*time.Second, "the gateway to take the request", func() bool {
		return gw.g.metrics.inFlightN.Load() == 1
	})
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	recvBytes()
	rec := onlyRecord(t, log)
	if rec["status"] != int64(499) || rec["error"] != "client_canceled" {
		t.Errorf("after a reset mid-body: status %v, error %v; want 499, client_canceled", rec["status"], rec["error"])
	}

	// Closing the write side early is a truncated request: 400.
	c2 := dialGateway(t, gw.addr)
	h1Write(t, c2, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"+strings.Repeat("x", 10))
	c2.(*net.TCPConn).CloseWrite()
	resp, body := readResponse(t, bufio.NewReader(c2), "POST")
	checkProblem(t, resp, body, http.StatusBadRequest, "")
	recvBytes()
	waitFor(t, 10*time.Second, "the truncated request's access log record", func() bool { return log.count() == 2 })
	log.mu.Lock()
	rec = log.recs[1]
	log.mu.Unlock()
	if rec["status"] != int64(400) || rec["error"] != "http_request_error" {
		t.Errorf("after a truncated body: status %v, error %v; want 400, http_request_error", rec["status"], rec["error"])
	}
}

// A client that leaves while its request waits to be retried is logged and
// counted as its own doing (499 client_canceled), not as the target's: the
// backoff ends with the request's cancellation, which the disconnect watch
// brings.
func TestClientGoneDuringRetryBackoff(t *testing.T) {
	var hits hitCounter
	first := make(chan struct{}, 1)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if hits.inc(); hits.get() == 1 {
			first <- struct{}{}
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		<-r.Context().Done() // a retry, should the backoff end first: held until the client is gone
	})
	var logBuf syncBuffer
	gw := startGatewayWith(t, gatewaySetup{opts: Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))}},
		oneRouteService(be.URL, "    retries: {attempts: 1, on: [\"503\"], backoff: {base: 60s, max: 60s}}"))
	c := dialGateway(t, gw.addr)
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, first, "the first attempt")
	c.Close() // while the gateway waits (up to a minute) to retry
	waitFor(t, 5*time.Second, "the request's log record", func() bool { return len(logBuf.records(t)) == 1 })
	if rec := logBuf.only(t, "the request"); rec["status"] != float64(499) || rec["error"] != "client_canceled" {
		t.Errorf("log record %v; want status 499, error client_canceled", rec)
	}
	if n := metricValue(t, gw.g, `meridian_upstream_errors_total{error="connection_terminated",route="r"}`); n != 0 {
		t.Errorf("connection_terminated counted %v times; want 0", n)
	}
}

// A bodyless idempotent request whose pooled connection the upstream takes
// and then resets is sent once more, on a new connection, and not again:
// retries are off unless configured, and an upstream that resets every
// request sees each one at most twice, its error the answer.
func TestStaleConnectionResentOnceOnANewConnection(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if hits.inc(); r.URL.Path == "/warm" {
			io.WriteString(w, "ok")
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close() // a reset, the request read and no answer
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	c := newClient(t)
	// Pool a few connections first, so that the request goes on a reused one.
	getsAtOnce(t, c, gw.url+"/warm", 4).Wait()
	warm := hits.get()
	resp, _ := get(t, c, gw.url+"/reset")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d; want 502", resp.StatusCode)
	}
	if got := hits.get() - warm; got != 2 {
		t.Errorf("the backend saw the request %d times; want 2 (sent once more, on a new connection)", got)
	}
	if got := metricValue(t, gw.g, `meridian_upstream_resends_total{reason="stale_connection"}`); got != 1 {
		t.Errorf("resends counted: %v; want 1", got)
	}
	// A PUT's body, sent with its head by the span lane, is not sent
	// again, as no body is.
	before, served := hits.get(), laneServed.Load()
	conn := dialGateway(t, gw.addr)
	io.WriteString(conn, "PUT /reset HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != http.StatusBadGateway {
		t.Errorf("PUT: %v, %v; want a 502", resp, err)
	}
	if got := hits.get() - before; got != 1 || laneServed.Load()-served != 1 {
		t.Errorf("the backend saw the PUT %d times, %d served on the lane; want 1, 1", got, laneServed.Load()-served)
	}
	if got := metricValue(t, gw.g, `meridian_upstream_resends_total{reason="stale_connection"}`); got != 1 {
		t.Errorf("resends counted: %v; want still 1", got)
	}
}

// The largest weight the configuration takes is one the balancers take:
// a document at the bound compiles, for each policy.
func TestLargestWeightCompiles(t *testing.T) {
	g := New(Options{})
	defer g.Close()
	for _, balancer := range []string{"{policy: round_robin}", "{policy: least_requests}", "{policy: consistent_hash, hash_on: client_ip}"} {
		doc := fmt.Sprintf(`
services:
  - name: s
    balancer: %s
    targets:
      - {url: "http://a.test:1", weight: %d}
      - {url: "http://b.test:1", weight: 1}
routes: [{name: r, match: {path_prefix: /}, service: s}]
`, balancer, config.MaxWeight)
		compileDoc(t, g, doc, 1, nil)
	}
}

// rawRequest sends method target on conn (a POST with a two-byte body,
// anything else bodyless) and reads its answer from br.
func rawRequest(t *testing.T, conn net.Conn, br *bufio.Reader, method, target string) (*http.Response, []byte) {
	t.Helper()
	head := method + " " + target + " HTTP/1.1\r\nHost: x\r\n"
	if method == http.MethodPost {
		head += "Content-Length: 2\r\n\r\nhi"
	} else {
		head += "\r\n"
	}
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, br, method)
}

// An upstream that sends a body after its answer to a HEAD (a handler that
// serves HEAD as GET, writing the body apart) leaves bytes on the pooled
// connection that belong to no request. The gateway looks for them before
// it uses that connection again, as nginx and Go's Transport (which read
// idle connections) would see them, so whatever comes next is answered
// and sent once: not a 502 for reading those bytes as a status line.
func TestStrayBytesAfterAHeadAreNotTheNextAnswer(t *testing.T) {
	var hits hitCounter
	sentStray := make(chan struct{}, 10)
	up := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		hits.inc()
		io.Copy(io.Discard, req.Body)
		if req.Method == http.MethodHead {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
			time.Sleep(20 * time.Millisecond) // after the gateway pooled it
			io.WriteString(c, "hello world")  // the body a HEAD must not have
			sentStray <- struct{}{}
			return true
		}
		body := req.Method + " " + req.URL.Path
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return true
	})
	gw := startGateway(t, oneRoute("http://"+up, ""))
	for _, method := range []string{"GET", "DELETE", "POST"} {
		t.Run(method, func(t *testing.T) {
			conn := dialGateway(t, gw.addr)
			br := bufio.NewReader(conn)
			if resp, _ := rawRequest(t, conn, br, http.MethodHead, "/h"); resp.StatusCode != 200 {
				t.Fatalf("HEAD: %d", resp.StatusCode)
			}
			recv(t, sentStray, "the upstream's stray body")
			h0 := hits.get()
			resp, body := rawRequest(t, conn, br, method, "/next")
			if want := method + " /next"; resp.StatusCode != 200 || string(body) != want {
				t.Errorf("%d %q; want 200 %q", resp.StatusCode, body, want)
			}
			if got := hits.get() - h0; got != 1 {
				t.Errorf("the upstream saw the request %d times; want 1", got)
			}
		})
	}
}

// Bytes of no answer that come on a reused connection while a request is
// on it, before its answer, are found where its status line should be: a
// bodyless replayable request is sent once more, on a new connection, with
// a response-header time of its own (the first attempt waited for the
// whole answer behind them); one the upstream may have acted on keeps its
// 502. Bytes with no line end within the head's limit count as such too;
// after an interim 1xx the upstream is answering this request, and what
// follows is its answer, however malformed.
func TestStrayBytesBeforeAnAnswerOnAReusedConnection(t *testing.T) {
	var hits hitCounter
	var mu sync.Mutex
	served := map[net.Conn]int{}
	up := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		hits.inc()
		io.Copy(io.Discard, req.Body)
		mu.Lock()
		served[c]++
		reused := served[c] > 1
		mu.Unlock()
		if junk := req.URL.Query().Get("junk"); junk != "" && reused {
			switch junk {
			case "long":
				c.Write(bytes.Repeat([]byte("x"), 70<<10))
			case "after100":
				io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
			}
			io.WriteString(c, "bytes of no answer")
		}
		if req.URL.Path == "/slow" {
			time.Sleep(200 * time.Millisecond)
		}
		body := req.Method + " " + req.URL.Path
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return true
	})
	gw := startGateway(t, fmt.Sprintf(`
services: [{name: s, targets: [{url: "http://%s"}], timeouts: {response_header: 300ms}}]
routes: [{name: r, match: {path_prefix: /}, service: s}]
`, up))
	for _, c := range []struct {
		method, target string
		status         int
		body           string
		hits           int
	}{
		{"GET", "/slow?junk=short", 200, "GET /slow", 2},
		{"DELETE", "/slow?junk=short", 200, "DELETE /slow", 2},
		{"POST", "/slow?junk=short", 502, "the upstream's response is malformed", 1},
		{"GET", "/x?junk=long", 200, "GET /x", 2},
		{"GET", "/x?junk=after100", 502, "the upstream's response is malformed", 1},
	} {
		t.Run(c.method+" "+c.target, func(t *testing.T) {
			conn := dialGateway(t, gw.addr)
			br := bufio.NewReader(conn)
			// A request first, so that the next goes on a reused
			// connection.
			if resp, _ := rawRequest(t, conn, br, http.MethodGet, "/warm"); resp.StatusCode != 200 {
				t.Fatalf("warm-up: %d", resp.StatusCode)
			}
			h0 := hits.get()
			resp, body := rawRequest(t, conn, br, c.method, c.target)
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.body) {
				t.Errorf("%d %.200q; want %d %q", resp.StatusCode, body, c.status, c.body)
			}
			if got := hits.get() - h0; got != c.hits {
				t.Errorf("the upstream saw the request %d times; want %d", got, c.hits)
			}
		})
	}
	// Three of them resent: GET and DELETE after short junk, GET after long.
	if got := metricValue(t, gw.g, `meridian_upstream_resends_total{reason="stray_bytes"}`); got != 3 {
		t.Errorf("resends counted: %v; want 3", got)
	}
}

// With other connections in the pool, one whose last answer was to a HEAD
// announcing a body is given out last: a request that follows at once goes
// on another, and is not sent twice for a stray body that comes late.
func TestHeadTaintedConnectionIsGivenOutLast(t *testing.T) {
	var hits hitCounter
	warm := make(chan struct{})
	up := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		hits.inc()
		switch req.URL.Path {
		case "/warm":
			<-warm // two at once: two pooled connections
		case "/h":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
			time.Sleep(100 * time.Millisecond) // the body a HEAD must not have, late
			io.WriteString(c, "hello world")
			return true
		}
		body := req.Method + " " + req.URL.Path
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return true
	})
	gw := startGateway(t, oneRoute("http://"+up, ""))
	c := newClient(t)
	wg := getsAtOnce(t, c, gw.url+"/warm", 2)
	waitFor(t, 5*time.Second, "both warm-up requests at the upstream", func() bool { return hits.get() == 2 })
	close(warm)
	wg.Wait()
	conn := dialGateway(t, gw.addr)
	br := bufio.NewReader(conn)
	if resp, _ := rawRequest(t, conn, br, http.MethodHead, "/h"); resp.StatusCode != 200 {
		t.Fatalf("HEAD: %d", resp.StatusCode)
	}
	h0 := hits.get()
	if resp, body := rawRequest(t, conn, br, http.MethodGet, "/next"); resp.StatusCode != 200 || string(body) != "GET /next" {
		t.Errorf("%d %q; want 200 \"GET /next\"", resp.StatusCode, body)
	}
	if got := hits.get() - h0; got != 1 {
		t.Errorf("the upstream saw the GET %d times; want 1 (on the other connection)", got)
	}
}

// An upstream whose writes wait for acknowledgements (Nagle's algorithm,
// as Python's http.server has it) holds back a body it writes after its
// answer to a HEAD until the gateway's delayed ACK goes out, by when the
// next request may be on its way on that connection. The gateway
// acknowledges such an answer at once, so the body comes, the look before
// reuse sees it, and the next request is sent once, on a new connection.
func TestHeadBodyHeldByNagleIsSeenBeforeReuse(t *testing.T) {
	var hits hitCounter
	up := rawUpstream(t, func(c net.Conn) {
		c.(*net.TCPConn).SetNoDelay(false)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			hits.inc()
			body := req.Method + " " + req.URL.Path
			io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body)))
			io.WriteString(c, body) // after the head, also for a HEAD
		}
	})
	gw := startGateway(t, oneRoute("http://"+up, ""))
	conn := dialGateway(t, gw.addr)
	br := bufio.NewReader(conn)
	send := func(method, path string) {
		t.Helper()
		if resp, body := rawRequest(t, conn, br, method, path); resp.StatusCode != 200 || method == "GET" && string(body) != "GET "+path {
			t.Fatalf("%s %s: %d %q", method, path, resp.StatusCode, body)
		}
	}
	// Past the connection's first exchanges, where the kernel acknowledges
	// at once anyway.
	for i := range 30 {
		send("GET", fmt.Sprintf("/warm%d", i))
	}
	resent := 0
	for i := range 20 {
		send("HEAD", "/h")
		h0 := hits.get()
		send("GET", fmt.Sprintf("/next%d", i))
		resent += hits.get() - h0 - 1
	}
	// Without the acknowledgement every one is (the body comes a delayed
	// ACK later); with it, one may still be when the upstream's second
	// write comes after the gateway looked.
	if resent >= 10 {
		t.Errorf("%d of 20 GETs after a HEAD were sent twice; want few", resent)
	}
}

// A retry whose backoff would outlast the service's total timeout is not
// made: the client gets the upstream's own answer, or the gateway's answer
// for the attempt's own failure, not a 504 blaming the upstream's timing
// (an outside check: 503s back in under 1 ms, a 2 s backoff and a 300 ms
// total timeout made every request a 504 http_response_timeout).
func TestRetryBackoffBeyondTotalTimeoutIsNotWaited(t *testing.T) {
	var hits hitCounter
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.inc()
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	// Backoffs are drawn from (0, 10 s]: one may fit in the 300 ms (then
	// it is waited and the next attempt's answer relayed the same way).
	retries := `    timeouts: {total: 300ms}
    retries: {attempts: 3, on: ["503", "connect_failure"], backoff: {base: 10s, max: 10s}}`
	gw := startGateway(t, oneRouteService(be.URL, retries))
	start := time.Now()
	resp, body := get(t, newClient(t), gw.url+"/x")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "down") {
		t.Errorf("%d %q; want the upstream's 503 \"down\"", resp.StatusCode, body)
	}
	if ps := resp.Header.Get("Proxy-Status"); ps != "" {
		t.Errorf("Proxy-Status %q on the upstream's own answer", ps)
	}
	if hits.get() == 0 || time.Since(start) > 5*time.Second {
		t.Errorf("%d attempts in %v", hits.get(), time.Since(start))
	}

	// A refused connection: the 502 for it, not a 504.
	gw2 := startGateway(t, oneRouteService(deadAddr(t), retries))
	resp, body = get(t, newClient(t), gw2.url+"/x")
	if ps := resp.Header.Get("Proxy-Status"); resp.StatusCode != http.StatusBadGateway || !strings.Contains(ps, "error=connection_refused") {
		t.Errorf("%d, Proxy-Status %q (%s); want 502 connection_refused", resp.StatusCode, ps, body)
	}
}

// getsAtOnce sends n GETs of url through c at once, each on a goroutine of
// its own (so that the gateway pools as many upstream connections), and
// returns what to wait on for them to end.
func getsAtOnce(t *testing.T, c *http.Client, url string, n int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			get(t, c, url)
		}()
	}
	return &wg
}

// A chunked body whose framing breaks (a size that is not hex, one that
// overflows, a size line past its limit) is the upstream breaking the
// protocol, not a body that ended early: a 502 http_protocol_error when
// nothing has gone out yet, a cut response logged so after.
func TestMalformedChunkedUpstreamBody(t *testing.T) {
	const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	bodies := map[string]string{
		"/not-hex":    "zz\r\nhello\r\n0\r\n\r\n",
		"/overflow":   "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
		"/negative":   "-5\r\nhello\r\n0\r\n\r\n",
		"/long-line":  "5;" + strings.Repeat("a", 200000) + "\r\nhello\r\n0\r\n\r\n",
		"/after-data": "5\r\nhello\r\n5x\r\nworld\r\n0\r\n\r\n",
	}
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, head+bodies[req.URL.Path])
		return false
	})
	for path := range bodies {
		setup, log := withReuseLog()
		gw := startGatewayWith(t, setup, oneRoute("http://"+addr, ""))
		c := dialGateway(t, gw.addr)
		br := bufio.NewReader(c)
		h1Write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, rerr := io.ReadAll(resp.Body)
		if path == "/after-data" {
			// "hello" went out first: the response can only be cut.
			if resp.StatusCode != 200 || rerr == nil {
				t.Errorf("%s: %d, %q, %v; want 200 and a cut body", path, resp.StatusCode, body, rerr)
			}
		} else {
			checkProblem(t, resp, body, http.StatusBadGateway, "http_protocol_error")
		}
		if rec := onlyRecord(t, log); rec["error"] != "http_protocol_error" {
			t.Errorf("%s: logged error %v (%v); want http_protocol_error", path, rec["error"], rec["error_detail"])
		}
	}
}

// An upstream that closes in the middle of its response head sent part of
// a response: http_response_incomplete (RFC 9209), not connection_terminated,
// which says nothing of it came.
func TestResponseHeadCutShortIsIncomplete(t *testing.T) {
	for _, cut := range []string{
		"HTTP/1.1 200 OK\r\nContent-Len",              // in the fields
		"HTTP/1.1 2",                                  // in the status line
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 O", // after an interim answer
	} {
		addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
			io.WriteString(c, cut)
			return false
		})
		gw := startGateway(t, oneRouteService("http://"+addr, "    retries: {attempts: 0}"))
		resp, body := get(t, newClient(t), gw.url+"/x")
		checkProblem(t, resp, body, http.StatusBadGateway, "http_response_incomplete")
	}
}
