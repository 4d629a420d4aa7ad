package edge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A client that sends part of a request body and then nothing is answered
// 408 once a read of its body has waited for the read body timeout, over
// every protocol; the upstream's request is abandoned, and the log blames
// the client (client_body_timeout).
func TestReadBodyTimeoutCutsAStalledBody(t *testing.T) {
	for _, proto := range []string{"h1", "h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			upstreamErr := make(chan error, 1)
			be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				_, err := io.ReadAll(r.Body)
				upstreamErr <- err
			})
			setup, log := withReuseLog()
			setup.opts.ReadBodyTimeout = 300 * time.Millisecond
			tg := startTLSGatewayWith(t, setup, oneRoute(be.URL, ""), true)
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequest("POST", "https://"+tg.addr+"/upload", pr)
			req.ContentLength = 10
			go pw.Write([]byte("abc")) // then nothing
			start := time.Now()
			resp, err := tg.client(t, proto).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("status %d %q, want 408", resp.StatusCode, body)
			}
			if el := time.Since(start); el < 300*time.Millisecond {
				t.Errorf("answered after %v, before the timeout", el)
			}
			var prob map[string]any
			if err := json.Unmarshal(body, &prob); err != nil || prob["status"] != float64(408) {
				t.Errorf("body %q is not a 408 problem (%v)", body, err)
			}
			if err := recv(t, upstreamErr, "the upstream's body read to end"); err == nil {
				t.Error("the upstream read the stalled body as complete")
			}
			rec := onlyRecord(t, log)
			if fmt.Sprint(rec["status"]) != "408" || rec["error"] != "client_body_timeout" {
				t.Errorf("access log status %v error %v; want 408 client_body_timeout", rec["status"], rec["error"])
			}
		})
	}
}

// The timeout counts only the wait for the client: an upstream that takes
// its time before reading a large body (the gateway blocked writing to it,
// not reading from the client) does not trip it, nor does a small body
// that arrived at once and waits in the gateway. Retried requests, whose
// small bodies are read first, behave alike.
func TestReadBodyTimeoutSparesASlowUpstream(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	})
	setup, log := withReuseLog()
	setup.opts.ReadBodyTimeout = 300 * time.Millisecond
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))
	for i, size := range []int{8 << 20, 100} {
		resp, err := http.Post("http://"+gw.addr+"/upload", "application/octet-stream", bytes.NewReader(make([]byte, size)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d <nil>", size); resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("%d bytes: %d %q, want 200 %q", size, resp.StatusCode, b, want)
		}
		waitFor(t, 5*time.Second, "the access log record", func() bool { return log.count() == i+1 })
	}
}

// Once the response has begun, the timeout is off: a client streaming its
// body to an upstream that answered at once (a gRPC bidirectional stream
// through an h2c service) may pause for longer than the timeout between
// messages.
func TestReadBodyTimeoutOffOnceTheResponseBegan(t *testing.T) {
	be := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%q %v", b, err)
	})
	setup, _ := withReuseLog()
	setup.opts.ReadBodyTimeout = 300 * time.Millisecond
	tg := startTLSGatewayWith(t, setup, fmt.Sprintf(`
services: [{name: s, protocol: h2c, targets: [{url: %s}]}]
routes: [{name: r, match: {path_prefix: /}, service: s}]
`, be.URL), true)
	for _, proto := range []string{"h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			pr, pw := io.Pipe()
			req, _ := http.NewRequest("POST", "https://"+tg.addr+"/stream", pr)
			go pw.Write([]byte("a"))
			resp, err := tg.client(t, proto).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			time.Sleep(800 * time.Millisecond) // longer than the timeout, on purpose
			pw.Write([]byte("b"))
			pw.Close()
			b, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(b), `"ab" <nil>`) {
				t.Fatalf("upstream saw %s, want the whole body \"ab\"", b)
			}
		})
	}
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// zeros is an endless body of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Over HTTP/2, one upload whose upstream is slow to take it must not starve
// the connection's other streams into a 408: the connection's window is
// larger than a stream's, so a stream held by its upstream cannot take
// the others' credit (which their clients would be blamed for).
func TestReadBodyTimeoutSparesAStreamStarvedByAnother(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	})
	var once sync.Once
	rel := func() { once.Do(func() { close(release) }) }
	defer rel()
	setup, _ := withReuseLog()
	setup.opts.ReadBodyTimeout = 300 * time.Millisecond
	setup.opts.MaxRequestBody = 1 << 30
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))
	c := newH2CClient(t)

	const big = 64 << 20
	var sent atomic.Int64
	aDone := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("POST", gw.url+"/slow", io.LimitReader(&countingReader{r: zeros{}, n: &sent}, big))
		req.ContentLength = big
		resp, err := c.Do(req)
		if err != nil {
			aDone <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		aDone <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	// A's client is blocked once its stream's window and the socket
	// buffers are full: what it has sent stops growing.
	waitFor(t, 10*time.Second, "the large upload to stall", func() bool {
		before := sent.Load()
		time.Sleep(100 * time.Millisecond)
		return before > 1<<20 && sent.Load() == before
	})

	const small = 256 << 10
	req, _ := http.NewRequest("POST", gw.url+"/echo", strings.NewReader(strings.Repeat("x", small)))
	start := time.Now()
	resp, body := do(t, c, req)
	t.Logf("small upload answered after %v", time.Since(start))
	if resp.ProtoMajor != 2 {
		t.Fatalf("proto %s, want HTTP/2", resp.Proto)
	}
	if want := fmt.Sprintf("%d <nil>", small); resp.StatusCode != 200 || string(body) != want {
		t.Errorf("the small upload on the same connection: %d %q, want 200 %q (its client never stalled)", resp.StatusCode, body, want)
	}
	rel()
	if got := recv(t, aDone, "the large upload's answer"); got != fmt.Sprintf("200 %d <nil>", big) {
		t.Errorf("large upload: %s", got)
	}
}

// Over HTTP/1.1 chunked, every byte the client sends is progress, the
// chunks' framing included (nginx resets its timer on every read).
func TestReadBodyTimeoutCountsChunkFramingAsProgress(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%q %v", b, err)
	})
	setup, _ := withReuseLog()
	setup.opts.ReadBodyTimeout = 300 * time.Millisecond
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))
	c := dialGateway(t, gw.addr)
	if _, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for _, b := range []byte("3\r\nabc\r\n0\r\n\r\n") {
			time.Sleep(150 * time.Millisecond)
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	resp, body := readResponse(t, bufio.NewReader(c), "POST")
	if resp.StatusCode != 200 || string(body) != `"abc" <nil>` {
		t.Errorf("%d %q; want 200 \"abc\" <nil>: the client sent a byte every 150 ms", resp.StatusCode, body)
	}
}

// A client that leaves mid-body after the response has begun is logged as
// the client's doing, not the target's (which outlier detection would
// count).
func TestClientLeavingMidBodyAfterTheHeadIsNotTheTargetsFault(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		buf := make([]byte, 512)
		for {
			n, err := r.Body.Read(buf)
			w.Write(buf[:n])
			w.(http.Flusher).Flush()
			if err != nil {
				return
			}
		}
	})
	setup, log := withReuseLog()
	setup.opts.ReadBodyTimeout = 300 * time.Millisecond
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))
	c := dialGateway(t, gw.addr)
	if _, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo %q %v", buf, err)
	}
	c.Close() // the client leaves mid-body
	rec := onlyRecord(t, log)
	if rec["error"] != "client_canceled" {
		t.Errorf("access log error %v (%v); want client_canceled: the client left, the target did nothing wrong", rec["error"], rec["error_detail"])
	}
}

// An HTTP/1 upstream gets the request head at once, not with the body's
// first bytes: one that answers from the head alone (a 413, a 401)
// answers a client that has not sent its body yet.
func TestHTTP1UpstreamGetsTheHeadBeforeTheBody(t *testing.T) {
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo long")
		return false
	})
	setup, _ := withReuseLog()
	setup.opts.ReadBodyTimeout = 30 * time.Second
	gw := startGatewayWith(t, setup, oneRoute("http://"+addr, ""))
	for _, head := range []string{
		"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
		"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n",  // a size line, no data yet
		"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc", // a chunk without its CRLF
		"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
	} {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, head) // and no body: the client waits, or is slow
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, body := readResponse(t, br, http.MethodPost)
		if resp.StatusCode == http.StatusContinue {
			// The transport's first read of the body asked for it;
			// the upstream's answer follows.
			resp, body = readResponse(t, br, http.MethodPost)
		}
		if resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != "too long" {
			t.Errorf("%q: %d %q; want the upstream's 413 \"too long\"", head, resp.StatusCode, body)
		}
		c.Close()
	}
}

// The response-header timeout counts from the end of the request body, as
// net/http's ResponseHeaderTimeout does: an upload slower than the timeout
// succeeds, and a client that stalls its body is the client's failure
// (client_body_timeout), not the target's. An upstream that stops taking
// the body for the whole timeout is the target's.
func TestResponseHeaderTimeoutCountsFromTheBodysEnd(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	})
	setup, log := withReuseLog()
	setup.opts.ReadBodyTimeout = 700 * time.Millisecond
	gw := startGatewayWith(t, setup, oneRouteService(be.URL, "    timeouts: {response_header: 300ms}"))

	t.Run("slow upload", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\n\r\n")
		for range 6 { // 100 bytes every 150 ms: 900 ms in all
			time.Sleep(150 * time.Millisecond)
			h1Write(t, c, strings.Repeat("u", 100))
		}
		resp, body := readResponse(t, br, http.MethodPost)
		if resp.StatusCode != 200 || string(body) != "600 <nil>" {
			t.Fatalf("%d %q; want 200 \"600 <nil>\"", resp.StatusCode, body)
		}
		waitFor(t, 5*time.Second, "the access log record", func() bool { return log.count() == 1 })
	})
	t.Run("stalled client", func(t *testing.T) {
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\n\r\nabc")
		resp, _ := readResponse(t, br, http.MethodPost)
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("status %d; want 408 (the client's body stalled), not the upstream's timeout", resp.StatusCode)
		}
		waitFor(t, 5*time.Second, "the access log record", func() bool { return log.count() == 2 })
		log.mu.Lock()
		rec := log.recs[1]
		log.mu.Unlock()
		if rec["error"] != "client_body_timeout" {
			t.Errorf("logged error %v; want client_body_timeout", rec["error"])
		}
	})

	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	deaf := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		if req.Method == http.MethodGet { // warms a pooled connection
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return true
		}
		<-stop // the head is read; the body never is
		return false
	})
	setup2, log2 := withReuseLog()
	setup2.opts.ReadBodyTimeout = time.Minute
	gw2 := startGatewayWith(t, setup2, oneRouteService("http://"+deaf, "    timeouts: {response_header: 10s, send: 500ms}"))
	t.Run("upstream stops taking the body", func(t *testing.T) {
		c, br := h1Raw(t, gw2.addr)
		// First a GET, so that the POST reuses its upstream connection,
		// whose response-header deadline (10s) is still set.
		h1Write(t, c, "GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, _ := readResponse(t, br, http.MethodGet); resp.StatusCode != 200 {
			t.Fatalf("warm-up: %d", resp.StatusCode)
		}
		const n = 9 << 20 // more than the sockets between hold; under the default 10 MiB limit
		h1Write(t, c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n")
		go io.Copy(c, io.LimitReader(zeros{}, n))
		start := time.Now()
		resp, body := readResponse(t, br, http.MethodPost)
		checkProblem(t, resp, body, http.StatusGatewayTimeout, "connection_write_timeout")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("answered after %v; want about the send timeout (500ms), well before the response-header one (10s)", d)
		}
		waitFor(t, 5*time.Second, "the access log records", func() bool { return log2.count() == 2 })
		log2.mu.Lock()
		rec := log2.recs[1]
		log2.mu.Unlock()
		if in, _ := rec["bytes_in"].(int64); in <= 0 || in >= n {
			t.Errorf("logged bytes_in %v; want the part of the body read before the upstream stalled", rec["bytes_in"])
		}
	})
}

// An upstream that pauses before reading a large body, longer than the
// response-header timeout but not the send timeout, is not taken for one
// that stopped: the gateway's write to it blocks meanwhile, and only the
// send timeout bounds that. (The response-header timeout then counts from
// the body's last byte written, as net/http's does.)
func TestUpstreamPausingBeforeTheBodyIsNotTimedOut(t *testing.T) {
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		time.Sleep(900 * time.Millisecond)
		n, _ := io.Copy(io.Discard, req.Body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(strconv.FormatInt(n, 10)), n)
		return true
	})
	gw := startGatewayWith(t, gatewaySetup{}, oneRouteService("http://"+addr, "    timeouts: {response_header: 300ms, send: 5s}"))
	const n = 9 << 20 // more than the sockets between hold; under the default 10 MiB limit
	resp, err := http.Post(gw.url+"/up", "application/octet-stream", io.LimitReader(zeros{}, n))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != strconv.Itoa(n) {
		t.Fatalf("%d %q; want 200 %q", resp.StatusCode, b, strconv.Itoa(n))
	}
}

// An HTTP/1.1 upstream that answers at once and then takes none of the
// request body (waiting for it to end its answer) is cut at the send
// timeout, as over HTTP/2, where it held the request until the client
// left: the answer is cut and logged connection_write_timeout.
func TestUpstreamAnsweringAndTakingNoBodyIsCut(t *testing.T) {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		<-stop // the body is never read, the answer never ends
		return false
	})
	setup, log := withReuseLog()
	setup.opts.ReadBodyTimeout = time.Minute
	gw := startGatewayWith(t, setup, oneRouteService("http://"+addr, "    timeouts: {response_header: 10s, read: 30s, send: 500ms}"))
	c, br := h1Raw(t, gw.addr)
	const n = 9 << 20 // more than the sockets between hold
	h1Write(t, c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n")
	go io.Copy(c, io.LimitReader(zeros{}, n))
	start := time.Now()
	c.SetReadDeadline(start.Add(20 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("head: %v %v; want the upstream's 200", resp, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err == nil || string(b) != "hello" {
		t.Fatalf("body %q, %v; want \"hello\" and then the answer cut", b, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cut after %v; want about the send timeout (500ms)", d)
	}
	rec := onlyRecord(t, log)
	if rec["error"] != "connection_write_timeout" {
		t.Errorf("logged error %v; want connection_write_timeout", rec["error"])
	}
	waitFor(t, 5*time.Second, "no request in flight", func() bool {
		return metricValue(t, gw.g, "meridian_requests_in_flight") == 0
	})
}

// A service's total timeout that expires while the gateway still waits for
// the client's body is the client's doing: 408 client_body_timeout, and the
// targets are not blamed (with outlier detection, none is ejected), over
// HTTP/1.1 and h2c upstreams alike.
func TestTotalTimeoutWaitingForTheClientIsNotTheTargets(t *testing.T) {
	read := func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			var a, b string
			if proto == "h2c" {
				a, b = newH2CBackend(t, read).URL, newH2CBackend(t, read).URL
			} else {
				a, b = newBackend(t, read).URL, newBackend(t, read).URL
			}
			setup, log := withReuseLog()
			setup.opts.ReadBodyTimeout = 30 * time.Second
			gw := startGatewayWith(t, setup, twoTargets(a, b, `    protocol: `+proto+`
    timeouts: {total: 300ms}
    outlier_detection:
      consecutive_failures: 2
      base_ejection: 1m`))
			for i := range 4 {
				c, br := h1Raw(t, gw.addr)
				h1Write(t, c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc") // and stalls
				resp, _ := readResponse(t, br, http.MethodPost)
				if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
					t.Fatalf("request %d: status %d, close %v; want 408 and Connection: close", i, resp.StatusCode, resp.Close)
				}
				c.Close()
				waitFor(t, 5*time.Second, "the access log record", func() bool { return log.count() == i+1 })
			}
			log.mu.Lock()
			for i, rec := range log.recs {
				if rec["error"] != "client_body_timeout" {
					t.Errorf("record %d: error %v; want client_body_timeout", i, rec["error"])
				}
			}
			log.mu.Unlock()
			for _, u := range []string{a, b} {
				if _, ejected, ok := targetStatus(gw.g, "svc", u); !ok || ejected {
					t.Errorf("target %s: ejected %v (found %v); want it in service", u, ejected, ok)
				}
			}
		})
	}
	// With retries, a small PUT body is read whole first, to be replayed:
	// under the total timeout too.
	t.Run("retried", func(t *testing.T) {
		be := newBackend(t, read)
		gw := startGatewayWith(t, gatewaySetup{opts: Options{ReadBodyTimeout: 30 * time.Second}},
			oneRouteService(be.URL, "    timeouts: {total: 300ms}\n    retries: {attempts: 2}"))
		c, br := h1Raw(t, gw.addr)
		h1Write(t, c, "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc") // and stalls
		start := time.Now()
		resp, _ := readResponse(t, br, http.MethodPut)
		if resp.StatusCode != http.StatusRequestTimeout || time.Since(start) > 5*time.Second {
			t.Fatalf("status %d after %v; want 408 after about the total timeout (300ms)", resp.StatusCode, time.Since(start))
		}
	})
}

// An upstream that reads a large body slowly but steadily is not taken for
// one that took none of it: the kernel wakes the gateway's blocked write
// only once a good part of the socket's buffer has drained, which takes
// longer here than the send timeout, but the socket's send queue shrinks
// meanwhile. (The upstream answers after 1 MiB, before the body's end.)
func TestSlowSteadyReaderIsNotASendTimeout(t *testing.T) {
	addr := rawKeepAlive(t, func(c net.Conn, req *http.Request) bool {
		buf := make([]byte, 16<<10)
		for range 64 { // 1 MiB at about 320 KB/s
			if _, err := io.ReadFull(req.Body, buf); err != nil {
				return false
			}
			time.Sleep(50 * time.Millisecond)
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		return false
	})
	gw := startGatewayWith(t, gatewaySetup{}, oneRouteService("http://"+addr, "    timeouts: {response_header: 10s, send: 1s}"))
	resp, err := http.Post(gw.url+"/up", "application/octet-stream", io.LimitReader(zeros{}, 9<<20))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("%d %q; want the upstream's 200 \"ok\"", resp.StatusCode, b)
	}
}
