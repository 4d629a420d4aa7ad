package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/testutil"
)

// blockingBackend answers "name" once release is closed (or the request is
// abandoned); entered receives a value as each request arrives.
func blockingBackend(t *testing.T, name string) (url string, entered chan struct{}, release chan struct{}) {
	t.Helper()
	entered = make(chan struct{}, 10)
	release = make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, name)
	})
	return be.URL, entered, release
}

type result struct {
	status int
	body   string
	err    error
}

func getAsync(c *http.Client, url string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		resp, err := c.Get(url)
		if err != nil {
			ch <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- result{resp.StatusCode, string(b), err}
	}()
	return ch
}

func TestShutdownDrainsInFlightRequest(t *testing.T) {
	url, entered, release := blockingBackend(t, "finished")
	g := New(Options{})
	defer g.Close()
	g.Swap(compileDoc(t, g, oneRoute(url, ""), 1, nil))
	srv, err := g.Listen(ListenerOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	inflight := getAsync(newClient(t), "http://"+addr+"/slow")
	recv(t, entered, "the request to reach the backend")

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- srv.Shutdown(ctx)
	}()
	// New connections are refused once Shutdown has closed the listener.
	waitFor(t, 5*time.Second, "new connections to be refused", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while a request was in flight", err)
	default:
	}

	close(release)
	if r := recv(t, inflight, "the in-flight response"); r.err != nil || r.status != 200 || r.body != "finished" {
		t.Errorf("in-flight request = %d %q %v; want 200 finished", r.status, r.body, r.err)
	}
	if err := recv(t, shutdown, "Shutdown to return"); err != nil {
		t.Errorf("Shutdown = %v; want nil", err)
	}
	if err := recv(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve = %v; want nil", err)
	}
}

func TestShutdownDeadlineCutsHungRequest(t *testing.T) {
	url, entered, release := blockingBackend(t, "never")
	defer close(release)
	var logBuf syncBuffer
	g := New(Options{AccessLog: slog.New(slog.NewJSONHandler(&logBuf, nil))})
	defer g.Close()
	g.Swap(compileDoc(t, g, oneRoute(url, ""), 1, nil))
	srv, err := g.Listen(ListenerOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	inflight := getAsync(newClient(t), "http://"+srv.Addr().String()+"/hung")
	recv(t, entered, "the request to reach the backend")
	// And a head still arriving when the deadline passes.
	half := dialGateway(t, srv.Addr().String())
	io.WriteString(half, "GET /half HTTP/1.1\r\nHost: x\r\n")
	waitFor(t, 5*time.Second, "the half head to be read", func() bool { return h1ActiveConns(srv.srv) == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = srv.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v; want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v; want about the 200ms deadline", d)
	}
	// Logged before Shutdown returned, as the gateway's doing (503
	// drain_timeout), not the client's (499 client_canceled).
	recs := logBuf.records(t)
	if len(recs) != 2 {
		t.Fatalf("access log after Shutdown: %v; want the hung request's and the half head's", recs)
	}
	for _, rec := range recs {
		if rec["status"] != float64(503) || rec["error"] != "drain_timeout" || (rec["path"] != "/hung" && rec["path"] != "/half") {
			t.Errorf("a cut request's record: %v; want status 503, error drain_timeout", rec)
		}
	}
	// The hung request, which had no answer begun, is told (503, and the
	// connection closes) rather than left to find its connection gone.
	if r := recv(t, inflight, "the hung request to be cut off"); r.err != nil || r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "shutting down") {
		t.Errorf("hung request = %d %q %v; want a 503 saying the node is shutting down", r.status, r.body, r.err)
	}
	if err := recv(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve = %v; want nil", err)
	}
}

func TestReloadKeepsInFlightRequestOnOldSnapshot(t *testing.T) {
	oldURL, entered, release := blockingBackend(t, "old")
	newBE := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "new "+r.URL.Path) })
	doc := func(url, extraRoute string) string {
		return fmt.Sprintf(`
services:
  - name: svc
    targets: [{url: %s}]
routes:
  - name: a
    match: {path_prefix: /a}
    service: svc
%s`, url, extraRoute)
	}
	gw := startGateway(t, doc(oldURL, ""))
	c := newClient(t)
	inflight := getAsync(c, gw.url+"/a/slow")
	recv(t, entered, "the request to reach the old backend")

	old := gw.g.Current()
	next := compileDoc(t, gw.g, doc(newBE.URL, "  - name: b\n    match: {path_prefix: /b}\n    service: svc\n"), 2, old)
	if prev := gw.g.Swap(next); prev != old {
		t.Errorf("Swap returned %p; want the old snapshot %p", prev, old)
	}
	if v := gw.g.Current().Version; v != 2 {
		t.Errorf("current version = %d; want 2", v)
	}

	for _, path := range []string{"/a/x", "/b/y"} {
		resp, body := get(t, c, gw.url+path)
		if resp.StatusCode != 200 || string(body) != "new "+path {
			t.Errorf("GET %s after reload = %d %q; want 200 %q", path, resp.StatusCode, body, "new "+path)
		}
	}
	select {
	case r := <-inflight:
		t.Fatalf("in-flight request ended early: %+v", r)
	default:
	}
	close(release)
	if r := recv(t, inflight, "the in-flight response"); r.err != nil || r.status != 200 || r.body != "old" {
		t.Errorf("in-flight request = %d %q %v; want 200 old", r.status, r.body, r.err)
	}
	if got := metricValue(t, gw.g, "meridian_config_version"); got != 2 {
		t.Errorf("config version metric = %v; want 2", got)
	}
}

// A reload keeps the transports (and their warm pools) of the snapshot it
// replaces, so that going back to it reconnects nothing, and forgets those
// of older ones: reload after reload with new timeouts or rotated TLS
// files must not pile up transports. Idle connections of a transport the
// new snapshot does not use are closed.
func TestReloadForgetsTransportsOfOlderSnapshots(t *testing.T) {
	be, open := countedBackend(t, false)
	doc := func(connect string) string {
		return oneRouteService(be.URL, "    timeouts: {connect: "+connect+"}")
	}
	gw := startGateway(t, doc("1s"))
	c := newClient(t)
	version := uint64(1)
	apply := func(connect string) upstreamTransport {
		t.Helper()
		version++
		gw.g.Swap(compileDoc(t, gw.g, doc(connect), version, gw.g.Current()))
		if resp, body := get(t, c, gw.url+"/"); resp.StatusCode != 200 {
			t.Fatalf("after applying connect %s: %d %q", connect, resp.StatusCode, body)
		}
		return gw.g.Current().services["svc"].transport
	}
	cached := func() int {
		gw.g.tmu.Lock()
		defer gw.g.tmu.Unlock()
		return len(gw.g.transports)
	}
	if resp, body := get(t, c, gw.url+"/"); resp.StatusCode != 200 {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	tA := gw.g.Current().services["svc"].transport
	tB := apply("2s")
	if tB == tA {
		t.Fatal("a new connect timeout kept the transport")
	}
	apply("3s")
	if n := cached(); n != 2 {
		t.Errorf("after three documents, %d transports cached; want 2 (the current one and the one it replaced)", n)
	}
	// Each transport's one idle connection (A's, B's) is closed when a
	// document without it is applied; C's stays in its pool.
	waitFor(t, 5*time.Second, "the idle connections of unused transports to close", func() bool { return open.Load() == 1 })
	if back := apply("2s"); back != tB {
		t.Error("going back to the document just replaced did not find its transport")
	}
	if again := apply("1s"); again == tA {
		t.Error("a transport of a snapshot two reloads back was still cached")
	}
	for i := range 20 {
		apply(fmt.Sprintf("%dms", 1000+i))
	}
	if n := cached(); n != 2 {
		t.Errorf("after twenty more documents, %d transports cached; want 2", n)
	}
}

// The concurrency cap is shared across a reload: requests still running
// on the old snapshot count against the new one.
func TestReloadKeepsConcurrencyCap(t *testing.T) {
	url, entered, release := blockingBackend(t, "done")
	doc := fmt.Sprintf(`
services:
  - name: svc
    max_concurrent_requests: 1
    targets: [{url: %s}]
routes:
  - name: r
    match: {}
    service: svc
`, url)
	gw := startGateway(t, doc)
	c := newClient(t)
	inflight := getAsync(c, gw.url+"/")
	recv(t, entered, "the first request to reach the backend")
	gw.g.Swap(compileDoc(t, gw.g, doc, 2, gw.g.Current()))
	resp, body := get(t, c, gw.url+"/")
	checkProblem(t, resp, body, http.StatusServiceUnavailable, "connection_limit_reached")
	close(release)
	if r := recv(t, inflight, "the first response"); r.status != 200 {
		t.Errorf("first request = %+v; want 200", r)
	}
}

func TestRetryBudgetWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newRetryBudget(0.5, 1, func() time.Time { return now })
	for range 10 {
		b.request()
	}
	// 0.5 * 10 requests + 1/s * 10 s = 15 retries in the window.
	allowed := 0
	for range 20 {
		if b.allow() {
			allowed++
		}
	}
	if allowed != 15 {
		t.Errorf("allowed = %d; want 15", allowed)
	}
	// Once the window has passed, the old requests and retries no longer
	// count.
	now = now.Add(budgetWindow * time.Second)
	allowed = 0
	for range 20 {
		if b.allow() {
			allowed++
		}
	}
	if allowed != 10 {
		t.Errorf("allowed after the window = %d; want 10 (min_per_second only)", allowed)
	}
}

func TestRetryBackoffBounds(t *testing.T) {
	p := &retryPolicy{base: 10 * time.Millisecond, max: 40 * time.Millisecond}
	for n := 1; n <= 70; n++ {
		want := min(p.base<<min(n-1, 10), p.max)
		for range 20 {
			if d := p.backoff(n); d <= 0 || d > want {
				t.Fatalf("backoff(%d) = %v; want in (0, %v]", n, d, want)
			}
		}
	}
}

// Streams of h2c clients still running at a drain's deadline are logged by
// the time Shutdown returns, each of them: the node closes its access log
// then, and an outside check saw one in five lines lost (net/http's
// Close does not wait for the streams' handlers).
func TestDrainCutH2StreamsLoggedBeforeShutdownReturns(t *testing.T) {
	setup, log := withReuseLog()
	tg := startGatewayWith(t, setup, oneRoute(tickingBackend(t), ""))
	const n = 20
	openStreams(t, n, newH2CClient(t), tg.url+"/sse")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	tg.srv.Shutdown(ctx)
	if got := log.count(); got != n {
		t.Fatalf("%d log records when Shutdown returned; want %d", got, n)
	}
}

// An h2c stream still waiting for its upstream at the drain's deadline is
// answered 503 (the cut cancels every stream through the HTTP/2 server's
// base context), as an HTTP/1 request is.
func TestDrainCutAnswersH2CStreams(t *testing.T) {
	entered := make(chan struct{}, 4)
	canceled := make(chan struct{}, 4)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { waitForCancel(r, entered, canceled) })
	tg := startGateway(t, oneRoute(be.URL, ""))
	c := newH2CClient(t)
	answers := make(chan string, 1)
	go func() {
		resp, err := c.Get(tg.url + "/waits")
		if err != nil {
			answers <- err.Error()
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		answers <- resp.Status
	}()
	recv(t, entered, "the request to reach the backend")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := tg.srv.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned nil; want the deadline's error (a request was cut)")
	}
	select {
	case a := <-answers:
		if a != "503 Service Unavailable" {
			t.Errorf("the waiting h2c stream got %q; want the drain's 503", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client still waits for its answer")
	}
}

// tickingBackend streams an event every 20 ms until its client leaves.
func tickingBackend(t *testing.T) string {
	t.Helper()
	return newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for {
			if _, err := io.WriteString(w, "data: tick\n\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}).URL
}

// openStreams starts n GETs of url with c, each reading its body until it
// ends, and returns once each has its first byte (or failed).
func openStreams(t *testing.T, n int, c *http.Client, url string) {
	t.Helper()
	started := make(chan struct{}, n)
	for range n {
		go func() {
			resp, err := c.Get(url)
			if err != nil {
				started <- struct{}{}
				return
			}
			b := make([]byte, 1)
			resp.Body.Read(b)
			started <- struct{}{}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	for range n {
		recv(t, started, "a stream's first bytes")
	}
}

// A reload that moves a service to another target closes the idle
// connections to the old one at once, though the transport stays (the
// same timeouts and TLS): they waited for the idle timeout (90 s), where
// the README says a reload closes what its document no longer uses. Over
// HTTP/1.1 only the dropped target's pool goes; over h2c (net/http's
// pools) every idle connection of the transport.
func TestReloadClosesIdleConnectionsToDroppedTargets(t *testing.T) {
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			a, openA := countedBackend(t, proto == "h2c")
			b, _ := countedBackend(t, proto == "h2c")
			doc := func(url string) string { return oneRouteService(url, "    protocol: "+proto) }
			gw := startGateway(t, doc(a.URL))
			c := newClient(t)
			if resp, body := get(t, c, gw.url+"/"); resp.StatusCode != 200 {
				t.Fatalf("first request: %d %q", resp.StatusCode, body)
			}
			if openA.Load() != 1 {
				t.Fatalf("%d connections to A; want 1", openA.Load())
			}
			tr := gw.g.Current().services["svc"].transport
			gw.g.Swap(compileDoc(t, gw.g, doc(b.URL), 2, gw.g.Current()))
			if gw.g.Current().services["svc"].transport != tr {
				t.Fatal("the transport changed: the test wants it kept")
			}
			waitFor(t, 5*time.Second, "the idle connection to the dropped target to close", func() bool { return openA.Load() == 0 })
		})
	}
}

// A connection busy at the reload that dropped its target (or its whole
// transport) is closed when its answer ends, not pooled until the next
// reload or the idle timeout (an outside check saw one held).
func TestReloadClosesBusyConnectionsToDroppedTargetsAfterwards(t *testing.T) {
	for _, dropTransport := range []bool{false, true} {
		t.Run(fmt.Sprintf("transport dropped %v", dropTransport), func(t *testing.T) {
			release := make(chan struct{})
			a, open := countedBackendWith(t, false, func(w http.ResponseWriter, r *http.Request) {
				<-release
				io.WriteString(w, "ok")
			})
			b, _ := countedBackend(t, false)
			gw := startGateway(t, oneRouteService(a.URL, ""))
			done := make(chan int, 1)
			go func() {
				resp, err := http.Get(gw.url + "/")
				if err != nil {
					done <- 0
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				done <- resp.StatusCode
			}()
			waitFor(t, 5*time.Second, "the request to reach A", func() bool { return open.Load() == 1 })
			next := oneRouteService(b.URL, "")
			if dropTransport {
				next = oneRouteService(b.URL, "    timeouts: {connect: 3s}") // another transport
			}
			gw.g.Swap(compileDoc(t, gw.g, next, 2, gw.g.Current()))
			close(release)
			if code := recv(t, done, "the request's answer"); code != 200 {
				t.Fatalf("the request running across the reload: %d", code)
			}
			waitFor(t, 5*time.Second, "the connection to the dropped target to close", func() bool { return open.Load() == 0 })
		})
	}
}

// countedBackend answers "ok", over h2c only if h2c, counting its open
// connections.
func countedBackend(t *testing.T, h2c bool) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	return countedBackendWith(t, h2c, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
}

// countedBackendWith is countedBackend answering with h.
func countedBackendWith(t *testing.T, h2c bool, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	be := httptest.NewUnstartedServer(h)
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		be.Config.Protocols = &p
	}
	open := testutil.CountConns(be)
	be.Start()
	t.Cleanup(be.Close)
	return be, open
}
