package edge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &conns
}

func doH1(t *testing.T, tr *h1Transport, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

func TestH1ClientReusesConnections(t *testing.T) {
	s, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok "+r.URL.RequestURI()) })
	tr := newH1Transport(time.Second, 5*time.Second)
	defer tr.CloseIdleConnections()
	for i := range 5 {
		req, _ := http.NewRequest("GET", s.URL+"/a?b=c", nil)
		resp, body := doH1(t, tr, req)
		if resp.StatusCode != 200 || body != "ok /a?b=c" {
			t.Fatalf("request %d: got %d %q", i, resp.StatusCode, body)
		}
	}
	if got := conns.Load(); got != 1 {
		t.Fatalf("connections opened for 5 sequential requests: got %d; want 1", got)
	}
	tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", s.URL+"/", nil)
	doH1(t, tr, req)
	if got := conns.Load(); got != 2 {
		t.Fatalf("after CloseIdleConnections: got %d connections; want 2", got)
	}
}

// A pooled connection that the upstream closed is detected and the request
// (without a body) goes out again on a new connection.
func TestH1ClientRetriesStaleConnection(t *testing.T) {
	var accepted atomic.Int64
	addr := rawUpstream(t, func(c net.Conn) {
		accepted.Add(1)
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		// Keep-alive promised, then the connection is closed at once, as
		// an upstream with a tiny idle timeout does.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
	})
	tr := newH1Transport(time.Second, 5*time.Second)
	defer tr.CloseIdleConnections()
	for i := range 3 {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		resp, body := doH1(t, tr, req)
		if resp.StatusCode != 200 || body != "hi" {
			t.Fatalf("request %d: got %d %q", i, resp.StatusCode, body)
		}
	}
	if got := accepted.Load(); got < 3 {
		t.Fatalf("accepted %d connections; want at least 3 (one per request)", got)
	}
}

func TestH1ClientChunkedBodyWithTrailers(t *testing.T) {
	type seen struct {
		body    string
		te      []string
		trailer string
	}
	got := make(chan seen, 1)
	s, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{string(b), r.TransferEncoding, r.Trailer.Get("X-Checksum")}
	})
	tr := newH1Transport(time.Second, 5*time.Second)
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", s.URL+"/", pr)
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Checksum": nil}
	go func() {
		pw.Write([]byte("part1-"))
		pw.Write([]byte("part2"))
		req.Trailer.Set("X-Checksum", "abc")
		pw.Close()
	}()
	resp, _ := doH1(t, tr, req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	g := <-got
	if g.body != "part1-part2" || len(g.te) != 1 || g.te[0] != "chunked" || g.trailer != "abc" {
		t.Fatalf("backend saw body %q, transfer-encoding %v, trailer %q; want part1-part2, chunked, abc", g.body, g.te, g.trailer)
	}
}

// An upstream that answers before reading the whole body (413) gets its
// answer relayed, and the connection, whose framing is now unknown, is not
// reused.
func TestH1ClientEarlyResponse(t *testing.T) {
	s, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, "fine")
	})
	tr := newH1Transport(time.Second, 5*time.Second)
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write(make([]byte, 64<<10)) // and never more: the body stays open
	req, _ := http.NewRequest("POST", s.URL+"/", pr)
	req.ContentLength = -1
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d; want 413", resp.StatusCode)
	}
	req2, _ := http.NewRequest("GET", s.URL+"/", nil)
	if _, body := doH1(t, tr, req2); body != "fine" {
		t.Fatalf("next request: body %q", body)
	}
	if got := conns.Load(); got != 2 {
		t.Fatalf("connections: got %d; want 2 (the first must not be reused)", got)
	}
}

func TestH1ClientResponseHeaderTimeoutAndCancel(t *testing.T) {
	release := make(chan struct{})
	s, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	tr := newH1Transport(time.Second, 100*time.Millisecond)
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", s.URL+"/", nil)
	_, err := tr.RoundTrip(req)
	if err == nil || !isTimeout(err) {
		t.Fatalf("got %v; want a timeout error", err)
	}

	tr2 := newH1Transport(time.Second, time.Minute)
	defer tr2.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ = http.NewRequestWithContext(ctx, "GET", s.URL+"/", nil)
	done := make(chan error, 1)
	go func() {
		_, err := tr2.RoundTrip(req)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("after cancel: got %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RoundTrip did not return after its context was cancelled")
	}
}

func TestH1ClientRefusesHeaderInjection(t *testing.T) {
	tr := newH1Transport(time.Second, time.Second)
	defer tr.CloseIdleConnections()
	s, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	req, _ := http.NewRequest("GET", s.URL+"/", nil)
	req.Header["X-Evil"] = []string{"a\r\nInjected: yes"}
	if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "X-Evil") {
		t.Fatalf("got %v; want an error naming the header", err)
	}
}

// An upstream that closes idle connections quickly (here 150ms) must not
// cost a request with a body, which cannot be sent again: the pooled
// connection is checked before reuse.
func TestH1ClientDetectsClosedIdleConnection(t *testing.T) {
	closed := make(chan struct{}, 4)
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	s.Config.IdleTimeout = 150 * time.Millisecond
	s.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- struct{}{}
		}
	}
	s.Start()
	defer s.Close()
	tr := newH1Transport(time.Second, 5*time.Second)
	defer tr.CloseIdleConnections()
	for i := range 2 {
		req, _ := http.NewRequest("POST", s.URL+"/", strings.NewReader("payload"))
		resp, body := doH1(t, tr, req)
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("POST %d: got %d %q", i, resp.StatusCode, body)
		}
		select {
		case <-closed: // the upstream closed the idle connection
		case <-time.After(10 * time.Second):
			t.Fatal("upstream did not close the idle connection")
		}
	}
}

// The response-header deadline stays on a connection after the head (see
// h1Conn.Read): a body slower than the header timeout must still arrive
// whole, on a new connection and on a reused one, and a head that is late
// on a reused connection must still time out.
func TestH1ClientHeaderDeadlineSparesSlowBodies(t *testing.T) {
	const timeout = 150 * time.Millisecond
	s, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/late-head":
			time.Sleep(3 * timeout)
		case "/half-late-head":
			time.Sleep(2 * timeout / 3)
		}
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(200)
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		if r.URL.Path == "/slow-body" {
			time.Sleep(3 * timeout) // well past the header deadline
		}
		io.WriteString(w, "-last")
	})
	tr := newH1Transport(time.Second, timeout)
	defer tr.CloseIdleConnections()
	for i := range 3 {
		req, _ := http.NewRequest("GET", s.URL+"/slow-body", nil)
		resp, body := doH1(t, tr, req)
		if resp.StatusCode != 200 || body != "first-last" {
			t.Fatalf("request %d: got %d %q; want 200 %q", i, resp.StatusCode, body, "first-last")
		}
	}
	// A quick exchange leaves its deadline in place. The next head must
	// get a deadline of its own: one that comes soon after but takes
	// most of the timeout, and one after the old deadline has passed
	// while the connection sat in the pool (where it is peeked at).
	for _, step := range []struct {
		path  string
		after time.Duration
	}{{"/fast", timeout / 2}, {"/half-late-head", 2 * timeout}, {"/fast", 0}} {
		req, _ := http.NewRequest("GET", s.URL+step.path, nil)
		if resp, body := doH1(t, tr, req); resp.StatusCode != 200 || body != "first-last" {
			t.Fatalf("%s: got %d %q; want 200 %q", step.path, resp.StatusCode, body, "first-last")
		}
		time.Sleep(step.after)
	}
	if got := conns.Load(); got != 1 {
		t.Fatalf("connections: got %d; want 1 (kept alive across slow bodies)", got)
	}
	req, _ := http.NewRequest("GET", s.URL+"/late-head", nil)
	start := time.Now()
	if _, err := tr.RoundTrip(req); err == nil || !isTimeout(err) {
		t.Fatalf("late head on a reused connection: got %v; want a timeout", err)
	}
	if took := time.Since(start); took > 2*timeout {
		t.Fatalf("the late head took %v to time out; the timeout is %v", took, timeout)
	}
}

// An exchange canceled before its wait for the head began stays canceled:
// arming the response-header deadline does not replace the abort's past
// one (a client's HTTP/2 stream reset at that instant left its upstream
// request running to the end).
func TestH1ClientAbortBeforeHeaderDeadlineStands(t *testing.T) {
	addr := rawUpstream(t, func(c net.Conn) { io.Copy(io.Discard, c) }) // never answers
	tr := newH1Transport(time.Second, 30*time.Second)
	defer tr.CloseIdleConnections()
	pc, err := tr.dial(context.Background(), poolKey{"http", addr})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.conn.Close()
	pc.abort()
	pc.armHeaderDeadline(monoNow(), 30*time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := pc.conn.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read after the abort: %v; want the abort's deadline", err)
		}
	case <-time.After(5 * time.Second):
		pc.conn.Close()
		t.Fatal("a read after the abort waited for the header deadline")
	}
}

// idleUpstream is an upstream that answers one keep-alive request per
// connection, then does what after says, and reports how long the
// gateway then took to close its end (or that it did not within 10 s).
func idleUpstream(t *testing.T, after func(c *net.TCPConn)) (addr string, closed <-chan time.Duration) {
	t.Helper()
	ch := make(chan time.Duration, 1)
	addr = rawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		start := time.Now()
		after(c.(*net.TCPConn))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := br.ReadByte()
		if err == io.EOF {
			ch <- time.Since(start)
		} else {
			ch <- -1 // still open (or another failure)
		}
	})
	return addr, ch
}

func getOK(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("got %d %q; want 200 \"ok\"", resp.StatusCode, b)
	}
}

// An upstream that hangs up on a pooled connection has it closed at once,
// not left in CLOSE-WAIT until a request takes it (the pool gives out its
// newest connection first, so an old one may never be taken): whether the
// hang-up comes with the answer, before the connection is pooled, or
// while it sits in the pool.
func TestIdleUpstreamHangUpClosesPooledConnection(t *testing.T) {
	for _, whilePooled := range []bool{false, true} {
		t.Run(fmt.Sprintf("while pooled %v", whilePooled), func(t *testing.T) {
			pooled := make(chan struct{})
			up, closed := idleUpstream(t, func(c *net.TCPConn) {
				if whilePooled {
					<-pooled
				}
				c.CloseWrite() // the upstream's FIN, as an idle timeout of its own sends
			})
			tg := startGateway(t, oneRoute("http://"+up, ""))
			getOK(t, tg.url+"/")
			if whilePooled {
				waitPooled(t, tg.g, 1)
				close(pooled)
			}
			if d := <-closed; d < 0 {
				t.Fatal("the gateway kept the hung-up connection open for 10 s")
			}
			waitNotSweeping(t, tg.g)
		})
	}
}

// An idle pooled connection is closed once it has been idle for the
// transport's idle timeout, whether or not a request comes.
func TestIdleUpstreamConnectionTimesOut(t *testing.T) {
	up, closed := idleUpstream(t, func(*net.TCPConn) {})
	tg := startGateway(t, oneRoute("http://"+up, ""))
	tg.g.tmu.Lock()
	for _, tr := range tg.g.transports {
		if h, ok := tr.(*h1Transport); ok {
			h.idleTimeout = 300 * time.Millisecond
		}
	}
	tg.g.tmu.Unlock()
	getOK(t, tg.url+"/")
	d := <-closed
	if d < 0 {
		t.Fatal("the gateway kept the idle connection open for 10 s; its idle timeout is 300 ms")
	}
	if d < 250*time.Millisecond {
		t.Fatalf("closed after %v; the idle timeout is 300 ms", d)
	}
	waitNotSweeping(t, tg.g)
}

// waitNotSweeping waits until every HTTP/1 transport's idle sweeper has
// ended (its pool is empty), or fails after 5 s.
func waitNotSweeping(t *testing.T, g *Gateway) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy := false
		g.tmu.Lock()
		for _, tr := range g.transports {
			if h, ok := tr.(*h1Transport); ok {
				h.mu.Lock()
				busy = busy || h.sweeping || len(h.idle) > 0
				h.mu.Unlock()
			}
		}
		g.tmu.Unlock()
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle pool's sweeper still runs with nothing to sweep")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitPooled waits until the gateway's HTTP/1 pools hold n connections,
// or fails after 5 s.
func waitPooled(t *testing.T, g *Gateway, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := 0
		g.tmu.Lock()
		for _, tr := range g.transports {
			if h, ok := tr.(*h1Transport); ok {
				h.mu.Lock()
				for _, l := range h.idle {
					got += len(l.conns)
				}
				h.mu.Unlock()
			}
		}
		g.tmu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pooled connections; want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A pooled upstream connection holds no reader while idle (dropReader):
// its 16 KiB go back to a pool, and it takes one again when it is used.
// Connections taking turns then read with each other's readers; every
// answer must still be its own, whatever its framing: a length, chunked
// (with a trailer), a HEAD's, a 204, a body larger than the reader.
func TestH1ClientIdleConnectionHoldsNoReader(t *testing.T) {
	s, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		switch {
		case strings.HasPrefix(path, "/chunked/"):
			w.Header().Set("Trailer", "X-Path")
			io.WriteString(w, "chunk "+path)
			w.(http.Flusher).Flush()
			io.WriteString(w, " end")
			w.Header().Set("X-Path", path)
		case strings.HasPrefix(path, "/empty/"):
			w.WriteHeader(http.StatusNoContent)
		case strings.HasPrefix(path, "/big/"):
			io.WriteString(w, path+strings.Repeat("b", 40<<10))
		default:
			w.Header().Set("X-Path", path)
			io.WriteString(w, "len "+path)
		}
	})
	tr := newH1Transport(time.Second, 5*time.Second)
	defer tr.CloseIdleConnections()
	const workers, rounds = 4, 25
	// Every connection idle in the pool has given its reader back.
	checkIdle := func() {
		t.Helper()
		tr.mu.Lock()
		defer tr.mu.Unlock()
		n := 0
		for _, list := range tr.idle {
			for _, pc := range list.conns {
				n++
				if pc.br != nil {
					t.Fatalf("an idle connection holds its reader")
				}
			}
		}
		if n == 0 {
			t.Fatalf("no idle connection to look at")
		}
	}
	for round := range rounds {
		errs := make(chan error, workers)
		for w := range workers {
			go func() {
				errs <- func() error {
					kind := []string{"len", "chunked", "empty", "big", "head"}[(round+w)%5]
					path := fmt.Sprintf("/%s/w%d/r%d", kind, w, round)
					method := "GET"
					if kind == "head" {
						method = "HEAD"
					}
					req, _ := http.NewRequest(method, s.URL+path, nil)
					resp, err := tr.RoundTrip(req)
					if err != nil {
						return err
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						return err
					}
					var want string
					switch kind {
					case "len":
						want = "len " + path
					case "chunked":
						want = "chunk " + path + " end"
						if got := resp.Trailer.Get("X-Path"); got != path {
							return fmt.Errorf("%s: trailer %q", path, got)
						}
					case "big":
						want = path + strings.Repeat("b", 40<<10)
					}
					if string(b) != want {
						return fmt.Errorf("%s: got %d bytes %.40q; want %d bytes %.40q", path, len(b), b, len(want), want)
					}
					if kind == "len" || kind == "head" {
						if got := resp.Header.Get("X-Path"); got != path {
							return fmt.Errorf("%s: X-Path %q", path, got)
						}
					}
					return nil
				}()
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		checkIdle()
	}
	if got := conns.Load(); got > workers {
		t.Fatalf("%d upstream connections for %d workers: the pooled ones were not reused", got, workers)
	}
}
