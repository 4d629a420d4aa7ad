package edge

import (
	"bufio"
	"context"
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

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// bigBackend answers /big?n=N with N bytes of a known length.
func bigBackend(t *testing.T) string {
	t.Helper()
	chunk := []byte(strings.Repeat("x", 32<<10))
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	return be.URL
}

// sendTimeoutGateway serves one route to a bigBackend with a short send
// timeout, logging to the returned log.
func sendTimeoutGateway(t *testing.T, timeout time.Duration) (*testGateway, *reuseLog) {
	t.Helper()
	setup, log := withReuseLog()
	setup.listener.SendTimeout = timeout
	setup.opts.SendTimeout = timeout
	return startGatewayWith(t, setup, oneRoute(bigBackend(t), "")), log
}

func onlyRecord(t *testing.T, log *reuseLog) map[string]any {
	t.Helper()
	waitFor(t, 10*time.Second, "the request's access log record", func() bool { return log.count() == 1 })
	log.mu.Lock()
	defer log.mu.Unlock()
	return log.recs[0]
}

// A client that asks for a large body and then stops reading is cut off
// once the gateway's writes have made no progress for the send timeout;
// the failure is the client's (client_send_timeout), not the target's.
func TestSendTimeoutCutsOffAClientThatStopsReading(t *testing.T) {
	gw, log := sendTimeoutGateway(t, 300*time.Millisecond)
	c := dialGateway(t, gw.addr)
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	h1Write(t, c, "GET /big?n="+strconv.Itoa(256<<20)+" HTTP/1.1\r\nHost: x\r\n\r\n")
	// Never read: the socket buffers fill and the gateway's write waits.
	rec := onlyRecord(t, log)
	if rec["status"] != int64(200) || rec["error"] != "client_send_timeout" {
		t.Errorf("access log: status %v, error %v; want 200 (what was sent), client_send_timeout", rec["status"], rec["error"])
	}
	if out, _ := rec["bytes_out"].(int64); out <= 0 || out >= 256<<20 {
		t.Errorf("access log bytes_out = %v; want part of the body", rec["bytes_out"])
	}
	// The connection is closed: reading now drains what was buffered and
	// ends, rather than block for the rest of the body.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("after the cut-off, reading ended with %v after %d bytes; want the connection closed", err, n)
	}
	if n >= 256<<20 {
		t.Fatalf("the client got the whole body (%d bytes); want it cut off", n)
	}
	// The target is still healthy: the next request through it works.
	resp, body := get(t, newClient(t), gw.url+"/big?n=5")
	if resp.StatusCode != 200 || len(body) != 5 {
		t.Fatalf("next request: %d with %d bytes; want 200 with 5", resp.StatusCode, len(body))
	}
}

// A client that reads slowly but steadily is not cut off, however long the
// whole response takes: each write has the send timeout to make progress.
func TestSendTimeoutSparesASlowSteadyReader(t *testing.T) {
	// A second of timeout against reads 40 ms apart leaves a loaded
	// machine room; the whole body takes longer than the timeout.
	const timeout = time.Second
	gw, log := sendTimeoutGateway(t, timeout)
	c := dialGateway(t, gw.addr)
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	const size = 16 << 20
	h1Write(t, c, "GET /big?n="+strconv.Itoa(size)+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	buf := make([]byte, 256<<10)
	var got int
	for {
		n, err := io.ReadFull(resp.Body, buf)
		got += n
		if err != nil {
			break
		}
		time.Sleep(40 * time.Millisecond) // well under the timeout between reads
	}
	if got != size {
		t.Fatalf("read %d bytes of %d; want the whole body", got, size)
	}
	if d := time.Since(start); d < timeout {
		t.Errorf("the body took only %v, less than the send timeout: the test shows nothing", d)
	}
	if rec := onlyRecord(t, log); rec["error"] != nil {
		t.Errorf("access log error = %v; want none", rec["error"])
	}
}

// h2Get opens an HTTP/2 connection with prior knowledge on c, with the
// given settings (a stream window above the default also opens the
// connection's window as wide), and sends a GET of path as stream 1.
func h2Get(t *testing.T, c net.Conn, path string, settings ...http2.Setting) *http2.Framer {
	t.Helper()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.WriteSettings(settings...)
	for _, st := range settings {
		if st.ID == http2.SettingInitialWindowSize && st.Val > 65535 {
			fr.WriteWindowUpdate(0, st.Val-65535)
		}
	}
	var hb strings.Builder
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte(hb.String()), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	return fr
}

// watchReset reads every frame of fr's connection (so that it never
// stalls), acknowledges settings, sends no WINDOW_UPDATE, and reports
// stream 1's reset.
func watchReset(fr *http2.Framer) <-chan http2.ErrCode {
	reset := make(chan http2.ErrCode, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.RSTStreamFrame:
				if f.StreamID == 1 {
					reset <- f.ErrCode
				}
			}
		}
	}()
	return reset
}

// Over HTTP/2 a client that stops reading its socket (the flow-control
// window left wide open, so the connection, not the stream, stalls) has
// its connection closed after the send timeout.
func TestSendTimeoutHTTP2(t *testing.T) {
	gw, log := sendTimeoutGateway(t, 300*time.Millisecond)
	c := dialGateway(t, gw.addr)
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	h2Get(t, c, "/big?n="+strconv.Itoa(256<<20), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	// Never read: the request ends (its record comes) only because the
	// connection is closed for the send timeout. The record says so,
	// unless net/http's HTTP/2 server has canceled the handler's context
	// first (about one run in ten): then it says client_canceled.
	rec := onlyRecord(t, log)
	if e := rec["error"]; e != "client_send_timeout" && e != "client_canceled" {
		t.Errorf("access log error = %v; want client_send_timeout (the connection was closed for it)", e)
	}
}

// Over HTTP/2, a stream whose client reads the connection but grants no
// more flow-control credit (the connection flows, the stream does not) is
// reset once a write has waited for the send timeout.
func TestSendTimeoutHTTP2StreamHeldByFlowControl(t *testing.T) {
	gw, log := sendTimeoutGateway(t, 300*time.Millisecond)
	c := dialGateway(t, gw.addr)
	fr := h2Get(t, c, "/big?n="+strconv.Itoa(8<<20)) // the default 64 KiB stream window, never raised
	reset := watchReset(fr)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	recv(t, reset, "the stalled stream to be reset")
	if e := onlyRecord(t, log)["error"]; e != "client_send_timeout" && e != "client_canceled" {
		t.Errorf("access log error = %v; want the client's failure", e)
	}
}

// The same when the write that waits is the flush the gateway makes of a
// response held in its buffer while the upstream pauses (lateFlush): it
// waited without a deadline, holding the stream and its upstream
// connection for as long as the client kept its connection (an outside
// check held 50 for 30 s with a send timeout of 3 s).
func TestSendTimeoutHTTP2LateFlushHeldByFlowControl(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(100+64*32<<10)) // known length: held, not flushed per write
		io.WriteString(w, strings.Repeat("a", 100))
		w.(http.Flusher).Flush()
		time.Sleep(300 * time.Millisecond) // past quietFlush: the gateway flushes what it holds
		chunk := []byte(strings.Repeat("b", 32<<10))
		for range 64 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	setup, log := withReuseLog()
	setup.listener.SendTimeout = 500 * time.Millisecond
	setup.opts.SendTimeout = 500 * time.Millisecond
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))
	c := dialGateway(t, gw.addr)
	fr := h2Get(t, c, "/pause", http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	reset := watchReset(fr)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	recv(t, reset, "the stalled stream to be reset")
	rec := onlyRecord(t, log)
	if e := rec["error"]; e != "client_send_timeout" && e != "client_canceled" {
		t.Errorf("access log error = %v; want the client's failure", e)
	}
}

// Over HTTP/2, a client that takes a stream's body slowly but steadily, a
// frame's worth (16 KiB) every 600 ms with a send timeout of 1 s, is not
// cut: each write waits for flow control, and 32 KiB writes needed two
// grants, past the timeout.
func TestSendTimeoutHTTP2SparesASteadyFlowControlledReader(t *testing.T) {
	gw, log := sendTimeoutGateway(t, time.Second)
	c := dialGateway(t, gw.addr)
	const size = 96 << 10
	fr := h2Get(t, c, "/big?n="+strconv.Itoa(size), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	fr.WriteWindowUpdate(0, 1<<30)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var wmu sync.Mutex // the framer's writes: settings acks here, window updates below
	done := make(chan error, 1)
	go func() {
		got := 0
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				done <- err
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					wmu.Lock()
					fr.WriteSettingsAck()
					wmu.Unlock()
				}
			case *http2.RSTStreamFrame:
				done <- fmt.Errorf("stream reset (%v) after %d bytes", f.ErrCode, got)
				return
			case *http2.DataFrame:
				got += len(f.Data())
				if f.StreamEnded() {
					if got != size {
						done <- fmt.Errorf("%d bytes; want %d", got, size)
					} else {
						done <- nil
					}
					return
				}
			}
		}
	}()
	// A grant at once, then one each 600 ms: a piece waits 600 ms at
	// most, 400 ms within the timeout (a loaded CI machine's scheduling).
	wmu.Lock()
	fr.WriteWindowUpdate(1, 16<<10)
	wmu.Unlock()
	tick := time.NewTicker(600 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if e := onlyRecord(t, log)["error"]; e != nil {
				t.Errorf("access log error = %v; want none", e)
			}
			return
		case <-tick.C:
			wmu.Lock()
			fr.WriteWindowUpdate(1, 16<<10)
			wmu.Unlock()
		}
	}
}

// Over HTTP/3 the same: a client that stops reading a response body leaves
// the stream without flow-control credit, and the write is cut off after
// the send timeout.
func TestSendTimeoutHTTP3(t *testing.T) {
	setup, log := withReuseLog()
	setup.listener.SendTimeout = 300 * time.Millisecond
	setup.opts.SendTimeout = 300 * time.Millisecond
	tg := startTLSGatewayWith(t, setup, oneRoute(bigBackend(t), ""), true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+tg.addr+"/big?n="+strconv.Itoa(256<<20), nil)
	resp, err := tg.client(t, "h3").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Never read the body.
	if e := onlyRecord(t, log)["error"]; e != "client_send_timeout" && e != "client_canceled" {
		t.Errorf("access log error = %v; want the client's failure", e)
	}
}

// An HTTP/2 client that resets most of its streams before any answer
// (rapid reset) has its connection closed once it has reset
// resetFloodMin of them, and the closing is counted.
func TestHTTP2RapidResetClosesConnection(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers: every stream is reset first
	})
	gw := startGateway(t, oneRoute(be.URL, ""))
	// net/http has guards of its own: when handlers cannot start as fast
	// as streams arrive (a loaded machine, the race detector), it may
	// close the connection (ENHANCE_YOUR_CALM) before our limit is
	// reached, and streams reset before their handler started never
	// reach the gateway to be counted. A flood closed without being
	// counted is tried again, slower.
	counted := func() bool { return metricValue(t, gw.g, "meridian_http2_reset_floods_total") == 1 }
	for _, pace := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond} {
		code := rapidResetFlood(t, gw.addr, pace)
		deadline := time.Now().Add(2 * time.Second)
		for !counted() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if counted() {
			return
		}
		t.Logf("a flood paced %v per 16 streams was closed (GOAWAY %v) without being counted; slower again", pace, code)
	}
	t.Fatal("no reset flood was closed by the gateway's limit and counted")
}

// rapidResetFlood opens an h2c connection to addr and sends HEADERS then
// RST_STREAM, stream after stream (pausing pace every 16 streams), until the
// gateway closes the connection. It returns the error code of the GOAWAY
// the gateway sent first, if any (ErrCodeNo when it just closed).
func rapidResetFlood(t *testing.T, addr string, pace time.Duration) http2.ErrCode {
	t.Helper()
	c := dialGateway(t, addr)
	fr := h2Get(t, c, "/r")
	fr.WriteRSTStream(1, http2.ErrCodeCancel)
	closed := make(chan struct{})
	var goaway atomic.Uint32
	go func() {
		defer close(closed)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				goaway.CompareAndSwap(0, uint32(ga.ErrCode)+1)
			}
		}
	}()
	var hb strings.Builder
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/r"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := []byte(hb.String())
	deadline := time.Now().Add(20 * time.Second)
	for id := uint32(3); time.Now().Before(deadline); id += 2 {
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}) != nil ||
			fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break // closed
		}
		if id%32 == 1 {
			if pace > 0 {
				time.Sleep(pace)
			}
			select {
			case <-closed:
			default:
				continue
			}
			break
		}
	}
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the connection stayed open through the reset flood")
	}
	if g := goaway.Load(); g > 0 {
		return http2.ErrCode(g - 1)
	}
	return http2.ErrCodeNo
}

// Over HTTP/2 and HTTP/3, an upstream that goes quiet within its body for
// longer than the send timeout does not get the stream reset while the
// client reads everything: the send timeout bounds writes that make no
// progress, the upstream's silence is the read timeout's. (net/http's
// HTTP/2 server resets a stream whose write deadline passes, a write
// pending or not.)
func TestSendTimeoutSparesAQuietUpstream(t *testing.T) {
	const send = 300 * time.Millisecond
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first;")
		w.(http.Flusher).Flush()
		time.Sleep(3 * send)
		io.WriteString(w, "second")
	})
	for _, proto := range []string{"h2", "h3"} {
		t.Run(proto, func(t *testing.T) {
			setup, log := withReuseLog()
			setup.listener.SendTimeout = send
			setup.opts.SendTimeout = send
			tg := startTLSGatewayWith(t, setup, oneRoute(be.URL, ""), true)
			resp, err := tg.client(t, proto).Get("https://" + tg.addr + "/quiet")
			wantWhole(t, resp, err, "first;second")
			rec := onlyRecord(t, log)
			if e, ok := rec["error"]; ok {
				t.Errorf("access log error = %v; want none", e)
			}
		})
	}
}

// wantWhole checks that a request succeeded and its response's body is
// want, whole.
func wantWhole(t *testing.T, resp *http.Response, err error, want string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != want {
		t.Fatalf("body %q, %v; want %q whole", body, err, want)
	}
}

// The lane's clock reading for an answer it writes at once stands in for
// the clock only until the next request: a pipelined request behind it
// that streams for longer than the send timeout keeps its deadline moving.
func TestSendTimeoutAfterAPipelinedLaneAnswer(t *testing.T) {
	const send = 300 * time.Millisecond
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			io.WriteString(w, "small")
			return
		}
		for i := range 8 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
			time.Sleep(send / 3)
		}
	})
	setup, log := withReuseLog()
	setup.listener.SendTimeout = send
	setup.opts.SendTimeout = send
	gw := startGatewayWith(t, setup, oneRoute(be.URL, ""))
	c := dialGateway(t, gw.addr)
	defer c.Close()
	io.WriteString(c, "GET /small HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, body := readResponse(t, br, http.MethodGet); resp.StatusCode != 200 || string(body) != "small" {
		t.Fatalf("first answer %d %q; want 200 small", resp.StatusCode, body)
	}
	resp, body := readResponse(t, br, http.MethodGet)
	if want := "part0;part1;part2;part3;part4;part5;part6;part7;"; resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("streamed answer %d %q; want 200 %q", resp.StatusCode, body, want)
	}
	waitFor(t, 10*time.Second, "both access log records", func() bool { return log.count() == 2 })
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, rec := range log.recs {
		if e, ok := rec["error"]; ok {
			t.Errorf("access log error = %v for %v; want none", e, rec["path"])
		}
	}
}

// A lane answer whose write to the client waits (a slow reader behind a
// pipeline of answers) is timed to the end of that write, and the
// connection's idle time starts after its last write, not when the
// upstream's answer came: the clock reading the lane saves is not used
// past a write that may wait.
func TestLaneAnswerTimedPastAWaitingWrite(t *testing.T) {
	const idle = 1500 * time.Millisecond
	const pause = time.Second
	setup, log := withReuseLog()
	setup.listener.IdleTimeout = idle
	gw := startGatewayWith(t, setup, oneRoute(bigBackend(t), ""))
	c := dialGateway(t, gw.addr)
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(64 << 10)
	}
	// Far more than the sockets hold: the gateway's writes wait.
	const n = 800
	var reqs strings.Builder
	for i := range n {
		fmt.Fprintf(&reqs, "GET /big?n=12000&i=%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
	}
	go io.WriteString(c, reqs.String())
	time.Sleep(pause) // the client reads nothing for a while
	br := bufio.NewReader(c)
	for range n {
		if resp, _ := readResponse(t, br, http.MethodGet); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	lastRead := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the answers: %v; want the idle close", err)
	}
	if d := time.Since(lastRead); d < idle*9/10 {
		t.Errorf("closed %v after the last answer was read; want the idle timeout, %v", d, idle)
	}
	waitFor(t, 10*time.Second, "every access log record", func() bool { return log.count() == n })
	log.mu.Lock()
	defer log.mu.Unlock()
	var longest float64
	for _, rec := range log.recs {
		if d, _ := rec["duration_ms"].(float64); d > longest {
			longest = d
		}
	}
	if longest < float64(pause/time.Millisecond)/2 {
		t.Errorf("longest duration logged %.1f ms; want the write that waited for the client (about %v)", longest, pause)
	}
}
