//go:build linux

package edge

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A keep-alive client's requests through the gateway to a keep-alive
// upstream make no read that finds nothing: not the one after each answer
// to the client (serveInline), nor the one after each request to the
// upstream (sendThenRead). The plain way made two per request.
func TestKeepAliveProxyMakesNoEmptyReads(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.URL.Path)
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	c, br := h1Raw(t, gw.addr)
	get := func(i int) {
		t.Helper()
		path := fmt.Sprintf("/r%d", i)
		h1Write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != "hello "+path || resp.Close {
			t.Fatalf("%s: got %d %q (close %v); want 200 %q, kept", path, resp.StatusCode, body, resp.Close, "hello "+path)
		}
	}
	for i := range 5 { // connections made and warm
		get(i)
	}
	const n = 300
	before := emptyReads.Load()
	for i := range n {
		get(i)
	}
	// A wake-up that finds nothing to read is possible, but rare.
	if got := emptyReads.Load() - before; got > n/10 {
		t.Errorf("%d requests made %d reads that found nothing; want at most %d", n, got, n/10)
	}
}

// Requests that arrive while the one before is served inline (before and
// after its disconnect watch began) are answered at once: the poller's
// readiness from their arrival is not lost while the connection is served
// inside its read. (A lost readiness often goes unseen here, as the ACK of
// the answer makes the socket ready again; the sequential requests of
// TestKeepAliveProxyMakesNoEmptyReads are what hang then.)
func TestInlineServingSeesRequestsArrivingMeanwhile(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.URL.Query().Get("d")); err == nil {
			time.Sleep(d) // the request's length is the scenario
		}
		io.WriteString(w, "ok "+r.URL.Path)
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	c, br := h1Raw(t, gw.addr)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	expect := func(path string) {
		t.Helper()
		start := time.Now()
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok "+path {
			t.Fatalf("%s: got %d %q", path, resp.StatusCode, body)
		}
		// The idle timeout (the wait if the arrival were missed) is far
		// longer.
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("%s answered after %v", path, d)
		}
	}
	h1Write(t, c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	expect("/first") // the next ones are served inline
	for _, late := range []time.Duration{5 * time.Millisecond, 70 * time.Millisecond} {
		h1Write(t, c, "GET /slow?d=120ms HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(late) // the next request arrives while /slow is served
		next := fmt.Sprintf("/after-%v", late)
		h1Write(t, c, "GET "+next+" HTTP/1.1\r\nHost: x\r\n\r\n")
		expect("/slow")
		expect(next)
	}
	// A request with a body in between is handed back and served the
	// plain way; the connection goes on.
	body := strings.Repeat("b", 5000)
	h1Write(t, c, fmt.Sprintf("POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	expect("/post")
	h1Write(t, c, "GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
	expect("/last")
}

// A client that leaves while its request is served inline is seen (the
// watch peeks through a duplicate of the socket), and the duplicate does
// not keep the connection open once served.
func TestInlineDisconnectWatchClosesItsDuplicate(t *testing.T) {
	entered := make(chan struct{}, 1)
	canceled := make(chan struct{}, 1)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/long":
			if waitForCancel(r, entered, canceled) {
				return
			}
		case "/b":
			time.Sleep(3 * disconnectCheckAfter) // long enough to be watched
			io.WriteString(w, "slow")
			return
		}
		io.WriteString(w, "ok")
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	readResponse(t, br, http.MethodGet)
	h1Write(t, c, "GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	time.Sleep(2 * disconnectCheckAfter) // the watch is on
	c.Close()
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not canceled after the client left")
	}

	// A watched request that completes: the gateway then closes the
	// connection when asked to (Connection: close), and the client sees
	// the end, which a leaked duplicate of the socket would hold off.
	c2, br2 := h1Raw(t, gw.addr)
	h1Write(t, c2, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	readResponse(t, br2, http.MethodGet)
	h1Write(t, c2, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResponse(t, br2, http.MethodGet); string(body) != "slow" {
		t.Fatalf("/b: got %d %q", resp.StatusCode, body)
	}
	h1Write(t, c2, "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	readResponse(t, br2, http.MethodGet)
	expectEOF(t, c2, br2, 5*time.Second)
}

// Closing the server does not wait for a request served inline (whose
// read holds the socket, and net's Close waits for that): the client's
// connection ends at once and the upstream request is canceled.
func TestCloseDoesNotWaitForInlineRequest(t *testing.T) {
	entered := make(chan struct{}, 1)
	canceled := make(chan struct{}, 1)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" && waitForCancel(r, entered, canceled) {
			return
		}
		io.WriteString(w, "ok")
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	c, br := h1Raw(t, gw.addr)
	h1Write(t, c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	readResponse(t, br, http.MethodGet)
	h1Write(t, c, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n") // served inline
	<-entered
	start := time.Now()
	gw.srv.srv.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with a request in flight; want it at once", d)
	}
	expectEOF(t, c, br, 5*time.Second)
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Error("the upstream request was not canceled")
	}
}

// Pipelined requests that fill the read buffer exactly are all answered:
// a read that filled the buffer may have left bytes in the socket whose
// readiness it spent, so the server reads again before it waits.
func TestInlinePipelinedRequestsFillingTheBuffer(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+r.URL.Path)
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	c, br := h1Raw(t, gw.addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	h1Write(t, c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	readResponse(t, br, http.MethodGet)
	// Requests of the server's read buffer's size (4 KiB), and of 64
	// bytes (64 of them fill it), in one write each.
	sized := func(path string, n int) string {
		s := "GET " + path + " HTTP/1.1\r\nHost: x\r\nX-Pad: "
		return s + strings.Repeat("a", n-len(s)-4) + "\r\n\r\n"
	}
	for _, tc := range []struct{ size, count int }{{4096, 2}, {64, 128}, {2048, 5}} {
		var all strings.Builder
		for i := range tc.count {
			all.WriteString(sized(fmt.Sprintf("/s%d-%03d", tc.size, i), tc.size))
		}
		h1Write(t, c, all.String())
		for i := range tc.count {
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
			if err != nil {
				t.Fatalf("%d requests of %d bytes: answer %d: %v", tc.count, tc.size, i, err)
			}
			body, _ := io.ReadAll(resp.Body)
			if want := fmt.Sprintf("ok /s%d-%03d", tc.size, i); string(body) != want {
				t.Fatalf("answer %d: %q; want %q", i, body, want)
			}
		}
	}
}

// A client that half-closes right after a keep-alive request gets its
// answer and then the end of the connection at once, though its FIN may
// have come with the request (one readiness for both): TCP_INQ counts it.
func TestInlineHalfCloseAfterRequestEndsTheConnection(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	for i := range 20 {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
		readResponse(t, br, http.MethodGet)
		time.Sleep(5 * time.Millisecond) // the next request is served inline
		reqs := "GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
		if i%2 == 1 {
			reqs += "GET /third HTTP/1.1\r\nHost: x\r\n\r\n"
		}
		h1Write(t, c, reqs)
		c.(*net.TCPConn).CloseWrite()
		for range 1 + i%2 {
			if resp, body := readResponse(t, br, http.MethodGet); resp.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("round %d: got %d %q", i, resp.StatusCode, body)
			}
		}
		// The idle timeout, when an unseen FIN would end it, is minutes.
		expectEOF(t, c, br, 3*time.Second)
		c.Close()
	}
}

// A pooled upstream connection that the upstream half-closed (FIN, then
// reading on without answering: a lingering close, as Apache does) is not
// used again: the request goes on a new one at once, not after the
// response-header timeout.
func TestHalfClosedPooledUpstreamIsNotReused(t *testing.T) {
	addr := rawUpstream(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
		time.Sleep(20 * time.Millisecond)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c) // reads on, answers nothing
	})
	gw := startGateway(t, oneRouteService("http://"+addr, "    timeouts: {response_header: 5s}"))
	c, br := h1Raw(t, gw.addr)
	wakes := hupWakes.Load()
	defer func() {
		// One wake-up per hang-up: the watch's own shutdown, an event
		// too, must not start another.
		if got := hupWakes.Load() - wakes; got > 10 {
			t.Errorf("5 upstream hang-ups took %d wake-ups; want one each", got)
		}
	}()
	for i := range 5 {
		start := time.Now()
		h1Write(t, c, fmt.Sprintf("GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n", i))
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != "ok\n" {
			t.Fatalf("request %d: got %d %q; want 200", i, resp.StatusCode, body)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("request %d took %v: sent on the half-closed connection", i, d)
		}
		time.Sleep(50 * time.Millisecond) // the upstream half-closes; < aliveCheckAfter
	}
}

// An idle keep-alive connection holds no buffers: it gives its reader and
// writer back while it waits (dropBuffers), served inline (plain TCP) or
// the plain way (TLS), and takes others when its next request comes.
// Connections taking turns then serve with each other's buffers; every
// answer must still be its own request's, on the lane and the general
// path, with a body, and pipelined.
func TestIdleConnectionHoldsNoBuffers(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(b))
	})
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[useTLS], func(t *testing.T) {
			var dial func() (net.Conn, *bufio.Reader)
			if !useTLS {
				gw := startGateway(t, oneRoute(be.URL, ""))
				dial = func() (net.Conn, *bufio.Reader) { return h1Raw(t, gw.addr) }
			} else {
				tg := startTLSGateway(t, oneRoute(be.URL, ""), false)
				dial = func() (net.Conn, *bufio.Reader) {
					c, err := tls.Dial("tcp", tg.addr, &tls.Config{RootCAs: tg.pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { c.Close() })
					return c, bufio.NewReader(c)
				}
			}
			idleConnectionsTakeTurns(t, dial)
		})
	}
}

func idleConnectionsTakeTurns(t *testing.T, dial func() (net.Conn, *bufio.Reader)) {
	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	clients := make([]client, 3)
	for i := range clients {
		c, br := dial()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		clients[i] = client{c, br}
	}
	// waitDrops waits for n more connections to have given their buffers
	// back, as they do once idle.
	waitDrops := func(from uint64, n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for idleDrops.Load()-from < uint64(n) {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections gave their buffers back; want %d", idleDrops.Load()-from, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for round := range idleRounds {
		before := idleDrops.Load()
		for i, cl := range clients {
			idleRound(t, cl.c, cl.br, fmt.Sprintf("/c%d/r%d", i, round), round)
		}
		waitDrops(before, len(clients))
	}
}

// idleRounds is the number of kinds of request idleRound sends.
const idleRounds = 6

// idleRound sends, on a connection back from idle, a request of kind
// round (on the lane, the general path, with a body, pipelined, a large
// head, a head in two writes) to a backend that answers its method, path
// and body length, and checks the answers, the connection kept.
func idleRound(t *testing.T, c net.Conn, br *bufio.Reader, path string, round int) {
	t.Helper()
	expect := func(want string) {
		t.Helper()
		resp, body := readResponse(t, br, http.MethodGet)
		if resp.StatusCode != 200 || string(body) != want || resp.Close {
			t.Fatalf("got %d %q (close %v); want 200 %q, kept", resp.StatusCode, body, resp.Close, want)
		}
	}
	switch round {
	case 0: // the lane
		h1Write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		expect("GET " + path + " 0")
	case 1: // the general path
		h1Write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
		expect("GET " + path + " 0")
	case 2: // a body (served the plain way when inline)
		post := strings.Repeat("p", 5000)
		h1Write(t, c, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, len(post), post))
		expect(fmt.Sprintf("POST %s %d", path, len(post)))
	case 3: // pipelined: the second waits in the buffer
		h1Write(t, c, "GET "+path+"a HTTP/1.1\r\nHost: x\r\n\r\nGET "+path+"b HTTP/1.1\r\nHost: x\r\n\r\n")
		expect("GET " + path + "a 0")
		expect("GET " + path + "b 0")
	case 4: // a head larger than what is read without buffers
		h1Write(t, c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nCookie: "+strings.Repeat("c", 3*leadSize)+"\r\n\r\n")
		expect("GET " + path + " 0")
	case 5: // a head in two writes (under TLS, two records)
		h1Write(t, c, "GET "+path+" HTTP/1.1\r\n")
		h1Write(t, c, "Host: x\r\n\r\n")
		expect("GET " + path + " 0")
	}
}
